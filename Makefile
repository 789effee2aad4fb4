# tunecost — two commands for a fresh clone: `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned first: this exact version is the CPU build on the dev machines (and the CUDA
# build on GPU machines); any looser spec pulls a multi-GB CUDA build where none is needed.
TORCH_PIN ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install run test lint fuzz demo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## make run: migrate, print an admin key on first start, serve the API on :8000 and one worker.
run: $(STAMP)
	scripts/run.sh

## make test: the whole suite against the machine's PostgreSQL and Redis (started if down).
test: $(STAMP)
	scripts/test.sh

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy app worker

fuzz: $(STAMP)
	TUNECOST_FUZZ_EXAMPLES=2000 scripts/test.sh tests/hardening/test_fuzz.py

demo: $(STAMP)
	$(PY) -m app.demo

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
