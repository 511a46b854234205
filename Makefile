# Two commands matter: `make demo` and `make test`. Both create .venv on first use (CPU path).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint test-slow bench install clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned to the CPU build first, so nothing below pulls a multi-GB CUDA wheel
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/uih demo

# lint first: a wrong import arrow or a lint error fails fast, before the long suite
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/uih bench

# the docs' generated tables checked against bench/results, then the API reference from the docstrings
# (pdoc) into build/docs; any pdoc warning fails it
docs: $(STAMP)
	$(BIN)/python docs/gen_tables.py --check
	$(BIN)/python docs/build_api.py build/docs

clean:
	rm -rf $(VENV) build *.egg-info
