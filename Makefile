# Two commands matter: `make demo` and `make test`. Both create .venv on first use (CPU path).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck test-slow bench install clean docs

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

# to_kjt's TorchRec on the CPU path, then its tests. TorchRec requires fbgemm-gpu, PyPI's CUDA build (~500 MB),
# so the CPU build of the same release goes in first and TorchRec without its requirements. The release must be
# the one built for the installed torch: 1.8.0 for torch 2.13 (1.9's .so does not load beside it).
.PHONY: test-torchrec
test-torchrec: $(STAMP)
	$(BIN)/python -m pip install -q torch==2.13.0 fbgemm-gpu-cpu==1.8.0 tensordict==0.15.3 torchmetrics==1.0.3 \
		pyre-extensions tqdm
	$(BIN)/python -m pip install -q --no-deps torchrec==1.8.0
	$(BIN)/python -m pytest -q tests/test_kjt.py

bench: $(STAMP)
	$(BIN)/uih bench

# the docs' generated tables checked against bench/results, then the API reference from the docstrings
# (pdoc) into build/docs; any pdoc warning fails it
docs: $(STAMP)
	$(BIN)/python docs/gen_tables.py --check
	$(BIN)/python docs/build_api.py build/docs

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache
