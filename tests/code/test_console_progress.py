"""Progress on long work (keel.cli.console): counts and an ETA from the mean time per item, a
counted line per expected (sub)flow run or task run from Prefect's own records, and the
watcher that counts work finishing in other processes. No Prefect run is started: the
handlers are fed records in the shape Prefect's loggers give them."""

import io
import logging
import time

import pytest

from keel import progress
from keel.cli import console


@pytest.fixture
def con():
    return console.Console(io.StringIO(), io.StringIO())


def _record(logger: str, message: str, **extra) -> logging.LogRecord:
    record = logging.LogRecord(logger, logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_eta_is_the_mean_time_per_item_times_the_items_left(monkeypatch):
    monkeypatch.setattr(console.time, "monotonic", lambda: 130.0)
    assert console.eta(100.0, 1, 5) == "ETA 2m 00s"  # 30 s per item, 4 left
    assert console.eta(100.0, 3, 4) == "ETA 10s"
    assert console.eta(100.0, 0, 4) == "ETA -"  # nothing done: no estimate yet
    assert console.eta(100.0, 4, 4) == "done"


def test_an_expected_subflow_gets_a_counted_line_others_none(con):
    con.expect("keel-simulate-month", 3, "months")
    handler = console._FlowCountHandler(con)
    done = "Finished in state Completed()"
    handler.emit(_record("prefect.flow_runs", done, flow_name="keel-simulate-month"))
    handler.emit(_record("prefect.flow_runs", done, flow_name="keel-retrain"))  # not expected
    handler.emit(_record("prefect.flow_runs", "Beginning flow run", flow_name="keel-simulate-month"))
    handler.emit(_record("prefect.flow_runs", done, flow_name="keel-simulate-month"))
    lines = con.out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("  ok     keel-simulate-month (") and lines[0].endswith("1/3 months, ETA 0s")
    assert lines[1].endswith("2/3 months, ETA 0s")


def test_task_lines_are_counted_when_expected_and_say_why_they_failed_otherwise(con):
    con.expect("build-batch", 2, "batches")
    handler = console._StepHandler(con)
    handler.emit(_record("prefect.task_runs", "Finished in state Completed()", task_name="build-batch"))
    handler.emit(_record("prefect.task_runs", "Finished in state Failed('boom')", task_name="validate"))
    raised = "Finished in state Failed('Task run encountered an exception DataValidationError: 2 rules')"
    handler.emit(_record("prefect.task_runs", raised, task_name="require-valid"))
    first, second, third = con.out.getvalue().splitlines()
    assert first.endswith("1/2 batches, ETA 0s")
    assert second.startswith("  FAILED validate (") and second.endswith("Failed('boom')")
    assert third.startswith("  FAILED require-valid (") and third.endswith(")  DataValidationError")


def test_the_engines_warnings_and_errors_reach_the_console_but_not_their_run_failures(tmp_path):
    import os

    con = console.Console(io.StringIO(), io.StringIO())
    read, write = os.pipe()
    lines = [
        "06:28:54.982 | ERROR   | Task run 'require-valid-79c' - Task run failed with exception: X",
        "06:28:55.270 | ERROR   | Flow run 'hopping-sambar' - Encountered exception during execution: X",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "06:28:56.000 | WARNING | py.warnings - a deprecation",
        "ValueError: the exception's last line",
        "06:28:57.000 | INFO    | prefect - Starting temporary server",
    ]
    os.write(write, ("\n".join(lines) + "\n").encode())
    os.close(write)
    log = (tmp_path / "x.log").open("wb")
    console._pump(read, log, con)
    log.close()
    assert con.err.getvalue().splitlines() == [lines[4], lines[5]]
    assert (tmp_path / "x.log").read_text().splitlines() == lines  # all of it in the file


def test_watch_counts_work_done_elsewhere_until_the_total(con):
    # the first answer is the baseline (2 trials of a resumed study); then a count that jumps
    # and overshoots: capped at the total
    finished = iter([2, 3, 3, 5, 7])

    console.watch(con, "trials", 4, "trials", lambda: next(finished), every=0.01)
    deadline = time.monotonic() + 10
    while "4/4" not in con.out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    lines = con.out.getvalue().splitlines()
    assert [line.split("trials  ")[1].split(" trials")[0] for line in lines] == ["1/4", "3/4", "4/4"]
    assert lines[-1].endswith("4/4 trials, done")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_step_of_many_items_counts_them_one_of_few_stays_quiet(con):
    handler = console._ItemHandler(con)
    logger = logging.getLogger(console.PROGRESS_LOGGER)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)  # as follow_prefect sets it
    try:
        for done in range(5):  # what validate_frames reports for 4 batches: 0 (start) .. 4
            progress.items("validate-batches", done, 4, "batches")
        for done in range(4):
            progress.items("validate-data", done, 3, "partitions")  # 3: below MANY
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    lines = con.out.getvalue().splitlines()
    # off a terminal a line per item but the last (the step's own "ok" line follows it)
    assert [line.split("  ")[-1].split(",")[0] for line in lines] == [
        "1/4 batches",
        "2/4 batches",
        "3/4 batches",
    ]
    assert all(line.strip().startswith("validate-batches") and "ETA" in line for line in lines)


def test_on_a_terminal_counts_and_steps_are_one_line_redrawn_and_a_failure_keeps_its_line():
    tty = console.Console(_Tty(), _Tty())
    tty.step("build-batches")
    for done in range(5):
        tty.item("validate-batches", done, 4, "batches")
    assert tty.out.getvalue().endswith("\r\x1b[K         validate-batches  4/4 batches, done")
    tty.step("validate-batches")
    tty.step("require-valid", ok=False, detail="DataValidationError")
    tty.loud("error: data validation failed")
    tty.step("commit-batches")
    tty.line("ingested b01")
    shown = tty.out.getvalue().replace("\r\x1b[K", "\r").split("\n")
    # what stays on the screen: each line's text after its last carriage return
    on_screen = [line.rsplit("\r", 1)[-1] for line in shown]
    assert [line.split(" (")[0] for line in on_screen] == [
        "  ok     validate-batches",  # build-batches and the counts were drawn over
        "  FAILED require-valid",
        "  ok     commit-batches",
        "ingested b01",
        "",
    ]
    assert tty.err.getvalue() == "error: data validation failed\n"
    assert tty.out.getvalue().count("\r\x1b[K") == 7  # 1 + 4 counts + 2 ok steps
