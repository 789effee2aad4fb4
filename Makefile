# tunecost — two commands for a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned first: this exact version is the CPU build on the dev machines (and the CUDA
# build on GPU machines); any looser spec pulls a multi-GB CUDA build where none is needed.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed
# The lock: every package pinned to the version tested (scripts/lock.py; CONTRIBUTING.md).
LOCK := requirements/main.txt requirements/dev.txt

# focus-validator pins old numpy/pandas: it lives in its own venv, never in the project's.
FOCUS_VENV ?= .venv-focus
FOCUS_VALIDATOR ?= focus-validator==1.0.0
# It reads Parquet through pandas and pyarrow; it pins numpy<2, which pyarrow 26 refuses at import
# ("pyarrow requires NumPy 2.0 or newer") and pyarrow 20 accepts.
FOCUS_PYARROW ?= pyarrow<21
FOCUS_EXPORT ?= var/focus-check/focus.csv
FOCUS_DELIVERY ?= var/focus-check/focus.parquet

.PHONY: install lock run test lint format fuzz demo bench clean focus-check

# The lock's pins and pyproject's ranges go to pip in one resolve: a dependency added to
# pyproject.toml but not yet locked still installs (and `make lock` then pins it).
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -r requirements/dev.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make lock: rewrite requirements/*.txt from the versions installed in the venv.
lock: $(STAMP)
	$(PY) scripts/lock.py

## make run: migrate, print an admin key on first start, serve the API on :8000 and one worker.
run: $(STAMP)
	scripts/run.sh

## make test: the whole suite against the machine's PostgreSQL and Redis (started if down).
test: $(STAMP)
	scripts/test.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy app worker devtools tests scripts bench

## make format: rewrite the tree in the project's style (what `lint` checks).
format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## make focus-check: real jobs (CPU self-hosted, cloud-billed worker) exported (the API's CSV) and
## delivered (the scheduled Parquet) and both checked by the FinOps Foundation's validator;
## anything beyond its documented limitations fails.
focus-check: $(STAMP)
	test -x $(FOCUS_VENV)/bin/focus-validator || { python3 -m venv $(FOCUS_VENV) && \
		$(FOCUS_VENV)/bin/pip install -q "$(FOCUS_VALIDATOR)" "multimethod<2" "$(FOCUS_PYARROW)"; }
	$(FOCUS_VENV)/bin/python -c "import pyarrow" 2>/dev/null || \
		$(FOCUS_VENV)/bin/pip install -q "$(FOCUS_PYARROW)"
	mkdir -p $(dir $(FOCUS_EXPORT)) && rm -f $(FOCUS_EXPORT) $(FOCUS_DELIVERY)
	TUNECOST_FOCUS_EXPORT=$(abspath $(FOCUS_EXPORT)) \
		TUNECOST_FOCUS_DELIVERY_EXPORT=$(abspath $(FOCUS_DELIVERY)) scripts/test.sh \
		tests/reports/test_provenance.py -k real_jobs
	$(PY) scripts/focus_check.py --validator $(FOCUS_VENV)/bin/focus-validator \
		--data-file $(FOCUS_EXPORT)
	$(PY) scripts/focus_check.py --validator $(FOCUS_VENV)/bin/focus-validator \
		--data-file $(FOCUS_DELIVERY)

fuzz: $(STAMP)
	TUNECOST_FUZZ_EXAMPLES=2000 scripts/test.sh tests/hardening/test_fuzz.py

demo: $(STAMP)
	$(PY) -m devtools.demo

## make bench: the estimator against published measurements (time, then memory); prints figures.
## The heavier benchmarks in bench/ (API throughput, report scale, worker overhead, GPU) run alone.
bench: $(STAMP)
	$(PY) bench/time_accuracy.py
	$(PY) bench/estimator_accuracy.py

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
