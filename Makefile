# A newcomer's two commands: `make demo` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench setup system-deps clean

demo: setup
	$(VENV)/bin/tinygrad-rnn demo
	@echo
	$(VENV)/bin/tinygrad-rnn render --example hello --view unrolled -o out/hello-unrolled.pdf
	$(VENV)/bin/tinygrad-rnn render --example hello --view rolled -o out/hello-rolled.pdf
	@echo
	$(VENV)/bin/tinygrad-rnn analyze --init-scale 0.5 -o out/vanishing
	@echo
	$(VENV)/bin/tinygrad-rnn analyze --init-scale 3.0 -o out/exploding
	@echo; echo "Figures: out/hello-unrolled.pdf, out/hello-rolled.pdf, out/vanishing/, out/exploding/"

test: setup
	$(PY) -m pytest

bench: setup
	# BLAS reads these at load time and they can force an older, slower kernel: benchmarks run without them
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(VENV)/bin/tinygrad-rnn bench

setup: system-deps $(STAMP)

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

# torch is pinned first: its CPU wheel is on these machines' disk, any other version downloads GBs.
$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) out build *.egg-info
