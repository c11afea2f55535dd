# Two commands do all set-up: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[test]"
	$(PY) -c "import deepinv, liftinv, operators"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m liftinv demo

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m liftinv.bench all --quick

clean:
	rm -rf $(VENV) out
