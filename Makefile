# Two commands for a fresh machine: `make run` (the worker on the embedded defaults) and `make test`.
# Both create .venv and install everything through constraints.txt (torch pinned to the CPU wheel) the
# first time, and skip the install while pyproject.toml and constraints.txt are unchanged.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test chat migrate lint

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m bot

test: $(STAMP)
	$(PY) -m pytest

chat: $(STAMP)
	$(PY) -m bot chat

migrate: $(STAMP)
	$(PY) -m bot migrate

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy core bot storage adapters
