#!/usr/bin/env bash
# The multi-node launch path on one machine: a private Ray cluster of two raylets on loopback
# (`ray start --head`, `ray start --address`), each declaring one logical GPU, and
# `RAY_ADDRESS=… bash model_train.sh rationanomaly_grpo --cpu trainer.nnodes=2` submitted to it, so
# verl places one FSDP rank on each node. Reuses the data and SFT model of a finished e2e run:
#
#   bash scripts/e2e_multinode.sh outputs/e2e     # writes outputs/e2e/multinode/
#
# The cluster uses its own temp dir, ports and auth token, and only its own processes are stopped
# at the end (never `ray stop`, which would stop every Ray instance on the machine).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python}"; fi
E2E="$(cd "${1:?usage: e2e_multinode.sh E2E_DIR}" && pwd)"
OUT="$E2E/multinode"
STEPS="${E2E_MULTINODE_STEPS:-2}"
rm -rf "$OUT"; mkdir -p "$OUT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

# The CPU platform's environment in the raylets too (their workers inherit it).
CPU_ENV_TEXT="$("$PY" -m verl_recipes.cpu env)"
while IFS= read -r line; do [[ -n "$line" ]] && export "$line"; done <<< "$CPU_ENV_TEXT"

# A private cluster: short temp dir (Ray's socket paths are length-limited), free port, own token.
RAY_TMP="$(mktemp -d /tmp/lrlXXXXXX)"
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PORT="$(free_port)"
DASHBOARD_PORT="$(free_port)"  # Ray's state API (where verl's workers ran) goes through the dashboard
export RAY_AUTH_MODE=token
RAY_AUTH_TOKEN="$("$PY" -c 'import secrets; print(secrets.token_hex(32))')"
export RAY_AUTH_TOKEN
RAY="$(dirname "$PY")/ray"

# shellcheck source=scripts/stage.sh
source "$ROOT/scripts/stage.sh"
# shellcheck source=scripts/e2e_settings.sh
source "$ROOT/scripts/e2e_settings.sh"
stop_cluster() { kill_ray_processes "$RAY_TMP"; rm -rf "$RAY_TMP"; }
trap stop_cluster EXIT

NODE_ARGS=(--num-cpus=8 --num-gpus=1 --disable-usage-stats)
"$RAY" start --head --node-ip-address=127.0.0.1 --port="$PORT" --temp-dir="$RAY_TMP" \
  --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" \
  "${NODE_ARGS[@]}" > "$OUT/ray_head.log" 2>&1
"$RAY" start --address="127.0.0.1:$PORT" --node-ip-address=127.0.0.1 "${NODE_ARGS[@]}" \
  > "$OUT/ray_worker.log" 2>&1
echo "[multinode] Ray cluster of 2 raylets at 127.0.0.1:$PORT" >&2

RAY_ADDRESS="127.0.0.1:$PORT" VERL_FILE_LOGGER_PATH="$OUT/grpo_metrics.jsonl" \
  bash "$ROOT/model_train.sh" rationanomaly_grpo --cpu trainer.nnodes=2 \
  actor_rollout_ref.model.path="$E2E/sft_model" \
  data.train_files="$E2E/data/train.parquet" data.val_files="$E2E/data/val.parquet" \
  trainer.default_local_dir="$OUT/grpo_ckpt" trainer.experiment_name=e2e_multinode \
  "++ray_kwargs.ray_init.runtime_env.env_vars.VERL_FILE_LOGGER_PATH='$OUT/grpo_metrics.jsonl'" \
  "${E2E_GRPO_SHAPE[@]}" \
  trainer.total_training_steps="$STEPS" trainer.save_freq="$STEPS" trainer.test_freq=-1 \
  > "$OUT/grpo.log" 2>&1
# Where Ray placed verl's training workers (the actor/ref FSDP ranks): one per raylet expected.
"$PY" - "http://127.0.0.1:$DASHBOARD_PORT" > "$OUT/placement.json" <<'PYEOF'
import json, sys
from collections import defaultdict
from ray.util.state import list_actors, list_nodes

address = sys.argv[1]
by_class = defaultdict(set)
for actor in list_actors(address=address, detail=True, limit=1000, raise_on_missing_output=False):
    by_class[actor.class_name].add(actor.node_id)
print(json.dumps({"nodes": len(list_nodes(address=address)),
                  "actor_nodes": {name: sorted(nodes) for name, nodes in sorted(by_class.items())}}))
PYEOF
echo "[multinode] done: $OUT" >&2
