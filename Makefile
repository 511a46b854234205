# Two commands matter: `make demo` and `make test`. Both create .venv on first use (CPU path).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck test-slow bench install clean

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

# the public API's annotations (pyproject.toml [tool.mypy]); a warm cache makes it take seconds
typecheck: $(STAMP)
	$(BIN)/python -m mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/uih bench

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache
