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

.PHONY: demo test test-here lint lint-here test-slow bench install clean

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
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/uih demo

# lint first: a wrong import arrow or a lint error fails fast, before the long suite
lint: $(STAMP)
	$(MAKE) lint-here PYTHON=$(BIN)/python

test: lint
	$(BIN)/python -m pytest -q

lint-here:
	$(PYTHON) -m ruff check .
	$(PYTHON) -c "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"

test-here: lint-here
	$(PYTHON) -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# writes ./uih_bench_out; `uih bench --update-repo` rewrites the tracked bench/REPORT.md and bench/results
bench: $(STAMP)
	$(BIN)/uih bench

clean:
	rm -rf $(VENV) build *.egg-info
