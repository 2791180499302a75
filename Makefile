# The two commands: `make demo` (the benchmark of every env) and `make test`.
# Each creates .venv on first use: torch 2.13.0 (CPU) first, then the package.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test install clean

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/edgellm-gym bench --env all --episodes 5 --seed 0

test: $(VENV)/.installed
	$(PY) -m pytest -n 2 tests

clean:
	rm -rf $(VENV) results
