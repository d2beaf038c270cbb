# LogRL developer commands. `make test` and `make demo` work from a fresh clone with nothing
# pre-installed: they create .venv and install the CPU stack pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test demo lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: anything that lets pip choose torch pulls CUDA wheels (several GB).
	$(PY) -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,local,verl]"
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

test: install
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest $(PYTEST_ARGS)

demo: install
	HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHON=$(PY) bash scripts/demo.sh

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/bench_reward.py
	$(PY) benchmarks/bench_keyseq.py
	$(PY) benchmarks/bench_parse.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
