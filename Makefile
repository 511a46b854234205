# Two commands matter: `make demo` and `make test`. Both create .venv on first use (CPU path).
# With an interpreter that already has the dependencies (a conda env from environment.yml):
#   make test-here [PYTHON=/path/to/python]   lint and tests with it; builds and installs nothing
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTHON ?= python
TORCH := torch==2.13.0
# PyTorch's CPU-only index: torch from the default index is the CUDA build plus ~16 nvidia-* packages
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

.PHONY: demo test test-here lint lint-here typecheck test-slow bench install clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch's CPU build first, from the CPU index; where that index cannot be reached, the pin from the
	# configured indexes, only after a dry run showed it is not a CUDA build
	$(BIN)/python -m pip install -q --timeout 15 --retries 1 $(TORCH) --index-url $(TORCH_CPU_INDEX) || { \
		echo "$(TORCH_CPU_INDEX) unreachable: trying $(TORCH) from the configured indexes"; \
		$(BIN)/python tools/check_torch_cpu.py $(TORCH) && $(BIN)/python -m pip install -q $(TORCH); }
	# stops here, with what to do, if anything below would pull a CUDA torch or nvidia-* packages
	$(BIN)/python tools/check_torch_cpu.py -e '.[test,ray]'
	$(BIN)/python -m pip install -q -e '.[test,ray]'
	# the kernels compile once, here, visibly: `make demo` then starts warm (Numba caches them on disk)
	$(BIN)/python -m uih.warmup
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/uih demo

# lint first: a wrong import arrow or a lint error fails fast, before the long suite
lint: $(STAMP)
	$(MAKE) lint-here PYTHON=$(BIN)/python

# the public API's annotations (pyproject.toml [tool.mypy]); a warm cache makes it take seconds
typecheck: $(STAMP)
	$(BIN)/python -m mypy

test: lint typecheck
	$(BIN)/python -m pytest -q

lint-here:
	$(PYTHON) -m ruff check .
	$(PYTHON) -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"

test-here: lint-here
	$(PYTHON) -m mypy
	$(PYTHON) -m pytest -q

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

# writes ./uih_bench_out; `uih bench --update-repo` rewrites the tracked bench/REPORT.md and bench/results
bench: $(STAMP)
	$(BIN)/uih bench

# the docs' generated tables checked against bench/results, then the API reference from the docstrings
# (pdoc) into build/docs; any pdoc warning fails it
docs: $(STAMP)
	$(BIN)/python docs/gen_tables.py --check
	$(BIN)/python docs/build_api.py build/docs

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache
