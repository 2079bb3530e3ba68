# The two commands of the README: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0

.PHONY: setup demo test test-fast bench eval

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	PY=$(PY) VENV=$(VENV) TORCH_VERSION=$(TORCH_VERSION) bash scripts/setup.sh
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/invar demo

test: setup
	$(VENV)/bin/python -m pytest -q

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m unit

bench: setup
	$(VENV)/bin/invar bench

eval: setup
	$(VENV)/bin/invar eval corpus --jobs 2
