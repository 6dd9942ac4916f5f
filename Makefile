# AiKore — `make run` sets everything up and runs the panel; `make test` runs every check.
VENV    := .venv
PYTHON  := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
# Selkies (the persistent desktop's streamer) in a venv of its own: its dependencies stay out of the panel's.
SELKIES_VENV  := .venv-selkies
SELKIES_STAMP := $(SELKIES_VENV)/.installed

.PHONY: setup run test test-deps lint typecheck pytest bench clean

setup: $(STAMP) $(SELKIES_STAMP)

$(STAMP): pyproject.toml container/install-deps.sh
	bash container/install-deps.sh
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(SELKIES_STAMP): container/selkies.txt
	test -x $(SELKIES_VENV)/bin/python || python3 -m venv $(SELKIES_VENV)
	$(SELKIES_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r container/selkies.txt
	touch $(SELKIES_STAMP)

run: setup
	$(VENV)/bin/aikore

test: setup test-deps lint typecheck pytest

test-deps:
	bash container/install-deps.sh --test

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck:
	$(VENV)/bin/mypy

pytest:
	$(VENV)/bin/pytest -q

bench: setup
	$(PYTHON) -m bench

clean:
	rm -rf $(VENV) $(SELKIES_VENV) .mypy_cache .ruff_cache .pytest_cache
