# Two commands do all the set-up: `make demo` and `make test` (see README.md).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast lint format clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)  ## set up, then run the paper's experiments on the offline default
	$(PY) evaluate.py $(ARGS)

test: $(STAMP)  ## set up, then run the whole test suite
	$(PY) -m pytest $(ARGS)

test-fast: $(STAMP)  ## the suite without the slow end-to-end runs
	$(PY) -m pytest -m "not slow" $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

clean:
	rm -rf $(VENV) runs lightning_logs wandb .pytest_cache
