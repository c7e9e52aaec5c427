# The two front doors: `make experiment LEN=10` and `make test`. Each sets up its own virtualenv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

MODEL  ?= checkpoints/minigpt-gutenberg
LEN    ?= 10

.PHONY: setup test experiment pretrain clean-venv

$(VENV)/.runtime: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	@touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.txt
	$(PY) -m pip install -q -r requirements-test.txt
	@touch $@

setup: $(VENV)/.test

test: $(VENV)/.test
	$(PY) -m pytest -q $(PYTEST_ARGS)

pretrain: $(VENV)/.runtime
	$(PY) -m minigpt.pretrain $(ARGS)

clean-venv:
	rm -rf $(VENV)
