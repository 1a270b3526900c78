"""Great Expectations 1.x validation of dataset partitions against a JSON suite."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from keel.errors import InputError, KeelError


class DataValidationError(KeelError, RuntimeError):
    """The data broke the suite: the message names file, column and rule."""

    def __init__(self, message: str, report_paths: tuple[Path, ...] = ()):
        super().__init__(message)
        self.report_paths = report_paths


@dataclass(frozen=True)
class Failure:
    file: str
    column: str | None
    rule: str
    expectation: str
    detail: str

    def describe(self) -> str:
        where = f"column '{self.column}'" if self.column else "table"
        return f"{self.file}: {where}: {self.rule} ({self.expectation}) failed: {self.detail}"


@dataclass(frozen=True)
class ValidationReport:
    suite: str
    success: bool
    partitions: dict[str, int]  # file -> rows
    evaluated: int  # expectations evaluated, all partitions
    failures: list[Failure] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)  # file -> GX result JSON
    paths: tuple[Path, ...] = ()  # where the JSON + markdown were written

    @property
    def status(self) -> str:
        return "passed" if self.success else "failed"

    def error_message(self) -> str:
        lines = [f"data validation failed: {len(self.failures)} rule(s) broken (suite '{self.suite}')"]
        lines += [f"  - {f.describe()}" for f in self.failures]
        return "\n".join(lines)

    def summary_markdown(self) -> str:
        head = [
            f"# Data validation: {self.status.upper()}",
            "",
            f"Suite `{self.suite}`; {self.evaluated} expectations evaluated on "
            f"{len(self.partitions)} partition(s), {sum(self.partitions.values())} rows.",
            "",
        ]
        if self.success:
            return "\n".join([*head, "All expectations met."]) + "\n"
        rows = ["| file | column | rule | expectation | detail |", "|---|---|---|---|---|"]
        rows += [
            f"| {f.file} | {f.column or '(table)'} | {f.rule} | {f.expectation} | "
            f"{f.detail.replace('|', '/')} |"
            for f in self.failures
        ]
        return "\n".join(head + rows) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            "suite": self.suite,
            "success": self.success,
            "partitions": self.partitions,
            "evaluated": self.evaluated,
            "failures": [asdict(f) for f in self.failures],
            "results": self.results,
        }


def load_suite(path: Path) -> dict[str, Any]:
    try:
        suite = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"expectation suite {path}: {exc}") from exc
    if not isinstance(suite, dict) or not suite.get("expectations"):
        raise InputError(f"expectation suite {path}: no 'expectations' list")
    return suite


def _detail(result: Mapping[str, Any], exception: Mapping[str, Any]) -> str:
    if exception.get("raised_exception"):
        msg = str(exception.get("exception_message") or "").strip().splitlines()
        return f"could not evaluate: {msg[0] if msg else 'error'}"
    if "unexpected_count" in result:
        sample = list(dict.fromkeys(map(str, result.get("partial_unexpected_list") or [])))[:5]
        pct = result.get("unexpected_percent")
        pct_s = f" ({pct:.2f}%)" if isinstance(pct, (int, float)) else ""
        return f"{result['unexpected_count']} unexpected value(s){pct_s}, e.g. {sample}"
    if "observed_value" in result:
        return f"observed {result['observed_value']!r}"
    return "expectation not met"


def _schema_detail(expected: list[str], observed: list[str]) -> str:
    missing = [c for c in expected if c not in observed]
    extra = [c for c in observed if c not in expected]
    if missing or extra:
        return f"missing columns {missing}, unexpected columns {extra}"
    return f"columns out of order: expected {expected}"


def validate_frames(frames: Mapping[str, pd.DataFrame], suite: Mapping[str, Any]) -> ValidationReport:
    """Run the suite on each named frame (name = file shown in errors)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_def = (
        context.data_sources.add_pandas("keel")
        .add_dataframe_asset("partition")
        .add_batch_definition_whole_dataframe("whole")
    )
    gx_suite = context.suites.add(
        gx.ExpectationSuite(
            name=suite.get("name", "suite"),
            expectations=[
                {"type": e["type"], "kwargs": e.get("kwargs", {}), "meta": e.get("meta", {})}
                for e in suite["expectations"]
            ],
        )
    )
    definition = gx.ValidationDefinition(name="keel", data=batch_def, suite=gx_suite)

    failures: list[Failure] = []
    results: dict[str, Any] = {}
    evaluated = 0
    for name, frame in frames.items():
        run = definition.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
        results[name] = run.to_json_dict()
        for res in run.results:
            evaluated += 1
            if res.success:
                continue
            cfg = res.expectation_config
            assert cfg is not None, "GX returns each result with its expectation's configuration"
            column = cfg.kwargs.get("column")
            expected_cols = cfg.kwargs.get("column_list") or cfg.kwargs.get("column_set")
            if column is not None and column not in frame.columns:
                detail = "column is missing"
            elif expected_cols is not None:
                detail = _schema_detail(list(expected_cols), list(frame.columns))
            else:
                detail = _detail(res.result or {}, res.exception_info or {})
            failures.append(
                Failure(
                    file=name,
                    column=column,
                    rule=(cfg.meta or {}).get("rule") or cfg.type,
                    expectation=cfg.type,
                    detail=detail,
                )
            )
    return ValidationReport(
        suite=suite.get("name", "suite"),
        success=not failures,
        partitions={n: len(f) for n, f in frames.items()},
        evaluated=evaluated,
        failures=failures,
        results=results,
    )


def write_report(report: ValidationReport, directory: Path, stem: str) -> tuple[Path, Path]:
    """Keep the result where the user finds it: ``<dir>/<stem>.json`` and ``.md``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    md_path.write_text(report.summary_markdown())
    return json_path, md_path
