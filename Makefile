# keel: the two commands a newcomer needs are `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
KEEL   := $(VENV)/bin/keel
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench lock clean-demo

# torch first, by pip: `torch==2.13.0` takes the CPU wheel on disk; any other spec
# would pull GBs of CUDA. Everything else is pinned by constraints.txt and installed by
# uv (pinned too: parallel downloads, ~25 s where pip took 100-200 s); torch, already
# there, satisfies its pin. pip check judges the result. Bytecode is compiled at install
# (uv --compile-bytecode, and keel's own sources): where PYTHONDONTWRITEBYTECODE is set,
# every keel process would otherwise compile ~3,900 modules from source (+3.7 s a command).
$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 uv==0.13.9
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -c constraints.txt -e ".[dev]"
	$(PY) -m compileall -q -j 0 keel tasks flows >/dev/null
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

## Ingest the demo months (2013-01..03), then validate, train, evaluate and register.
demo: $(STAMP)
	$(KEEL) ingest --demo
	$(KEEL) train

## The whole test-suite (unit, data, model, integration, scaled backends), one pytest-xdist worker
## per core, each test file on one worker (module fixtures stay shared), the longest files first
## (tests/durations.json; re-record it by adding --record-durations tests/durations.json).
test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile --no-loadscope-reorder --durations=15

## Linters, formatter check, type checker and the import contract (the same as .pre-commit-config.yaml and CI).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## Skip the tests marked slow (no training, no Prefect flow runs).
test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

## Benchmarks (not run in CI), each a ratio against a baseline in the same run.
bench: $(STAMP)
	$(PY) bench/train_overhead.py
	$(PY) bench/train_overhead.py --profile debug
	$(PY) bench/command_overhead.py
	$(PY) bench/train_throughput.py
	$(PY) bench/dvc_add_throughput.py
	$(PY) bench/data_commit_overhead.py
	$(PY) bench/serve_latency.py
	$(PY) bench/workloads.py
	$(PY) bench/text_finetune.py
	$(PY) bench/compress.py
	$(PY) bench/prune.py
	$(PY) bench/compress.py --methods onnx-int8,prune:0.5:0,prune:0.5:1,prune-int8:0.5:1,prune:0.25:1,prune-int8:0.25:1 --out bench/results/prune_text.json
	$(PY) bench/lora.py
	$(PY) bench/ddp_speed.py
	$(PY) bench/scaled_backends.py
	$(PY) bench/large_artifacts.py
	$(PY) bench/tune.py

## Re-lock the environment after changing a pin in pyproject.toml.
lock: $(STAMP)
	{ sed -n '1,2p' constraints.txt; $(PY) -m pip freeze --exclude-editable | sed 's/^torch==\(.*\)+cpu$$/torch==\1/'; } > constraints.tmp
	mv constraints.tmp constraints.txt
