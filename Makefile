# The two commands of the README:
#   make demo   the flagship example's quick run, from a fresh machine
#   make test   the test suite
# Both create .venv and install what they need on first use (tools/setup_env.sh).

VENV   ?= .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck coverage docs clean

$(STAMP): pyproject.toml tools/setup_env.sh
	VENV=$(VENV) bash tools/setup_env.sh
	touch $@

demo: $(STAMP)
	$(PYTHON) -m examples.asr_se demo

test: $(STAMP)
	$(PYTHON) -m pytest -q

docs: $(STAMP)
	$(PYTHON) -m sphinx -W --keep-going -b html docs docs/_build/html

lint: $(STAMP)
	$(PYTHON) -m ruff check gradsurgery tests examples benchmarks

typecheck: $(STAMP)
	$(PYTHON) -m mypy
	$(PYTHON) -m mypy examples benchmarks

coverage: $(STAMP)
	$(PYTHON) -m coverage erase
	$(PYTHON) -m coverage run -m pytest -q tests --ignore=tests/examples --ignore=tests/benchmarks
	$(PYTHON) -m coverage combine -q
	$(PYTHON) -m coverage report

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
