# A newcomer's two commands: `make demo` and `make test`. Each installs what it needs into .venv.
#   make demo                 the package and its core dependencies only (numpy, graphviz, matplotlib, tqdm,
#                             threadpoolctl), then the lecture demo and its figures in out/
#   make test                 adds the `test` and `bench` extras (pytest, hypothesis, nbclient, ipykernel,
#                             nbformat, ruff, torch 2.13.0), lints with ruff and runs the suite, the lecture
#                             notebook included
#   make bench ARGS=--quick   adds the `peers` extra (jax, autograd, mygrad: optional comparison rows) and runs
#                             the benchmark harness from this checkout; ARGS go to `python -m benchmarks`
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install -q
CLI    := $(VENV)/bin/tinygrad-rnn
ARGS   ?=
# one stamp per set of extras: `make test` after `make demo` installs only what is missing
CORE   := $(VENV)/.installed-core
TESTS  := $(VENV)/.installed-test
BENCH  := $(VENV)/.installed-bench

.PHONY: demo test bench system-deps clean

demo: system-deps $(CORE)
	$(CLI) demo
	@echo
	$(CLI) render --example hello --view unrolled -o out/hello-unrolled.pdf
	$(CLI) render --example hello --view rolled -o out/hello-rolled.pdf
	@echo
	$(CLI) analyze --init-scale 0.5 -o out/vanishing
	@echo
	$(CLI) analyze --init-scale 3.0 -o out/exploding
	@echo
	$(CLI) analyze --example deep --hidden 3 -o out/deep
	@echo
	@echo "Figures: out/hello-unrolled.pdf, out/hello-rolled.pdf, out/vanishing/, out/exploding/, out/deep/"
	@echo "The command is installed in .venv/bin: run 'source .venv/bin/activate' (then 'tinygrad-rnn --help'),"
	@echo "or call it as .venv/bin/tinygrad-rnn. The lecture notebook: notebooks/bptt.ipynb."

test: system-deps $(TESTS)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

bench: system-deps $(BENCH)
	@# BLAS reads these at load time and they can force an older, slower kernel: benchmarks run without them
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) -m benchmarks $(ARGS)

# Graphviz's `dot` renders the graph PDFs; pdfinfo (poppler) checks them in the tests.
system-deps:
	@if command -v dot >/dev/null 2>&1 && command -v pdfinfo >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Graphviz and poppler-utils with apt-get ..."; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz poppler-utils >/dev/null; \
	else \
		echo "NOTE: Graphviz's 'dot' program is missing: install it (Debian/Ubuntu: sudo apt-get install graphviz;"; \
		echo "      macOS: brew install graphviz; conda: conda install graphviz). Rendering needs it; the rest works."; \
	fi

$(CORE): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -e .
	touch $@

# torch is pinned first: its CPU wheel is on these machines' disk, any other version downloads GBs.
$(TESTS): $(CORE)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[test,bench]'
	touch $@

$(BENCH): $(TESTS)
	$(PIP) -e '.[bench,peers]'
	touch $@

clean:
	rm -rf $(VENV) out build *.egg-info
