#!/usr/bin/env bash
# `make demo`: the whole LogRL pipeline end to end on a CPU, at smoke scale (minutes, not hours).
#
#   bash scripts/demo.sh            # writes everything under outputs/demo/ (DEMO_DIR to change)
#
# synthetic BGL-style logs → parse/label/datasets (logdata prepare) → tiny Qwen2 model built
# offline (tokenizer trained on the data) → rationales from the rule-based template teacher →
# CoT-SFT then GRPO with the LogRL reward through the local (TRL) backend → export → predict
# (hf backend) → evaluate. The model is ~0.1M parameters and trains for a few dozen steps: the
# metrics prove the plumbing, not the method. Real runs: bash model_train.sh (GPU cluster).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

DEMO="${DEMO_DIR:-$ROOT/outputs/demo}"
SEED="${DEMO_SEED:-0}"
LINES="${DEMO_LINES:-5000}"
SFT_STEPS="${DEMO_SFT_STEPS:-80}"
GRPO_STEPS="${DEMO_GRPO_STEPS:-8}"
rm -rf "$DEMO"
mkdir -p "$DEMO"
TIMES="$DEMO/timings.tsv"
: > "$TIMES"
QUIET="$DEMO/logs"
mkdir -p "$QUIET"

stage() {  # stage NAME COMMAND... : run quietly (log kept), time it, stop with the log on failure
  local name="$1"; shift
  local start end
  start=$(date +%s.%N)
  printf '[demo] %-10s ' "$name"
  if ! "$@" >"$QUIET/$name.log" 2>&1; then
    echo "FAILED — last lines of $QUIET/$name.log:"; tail -n 20 "$QUIET/$name.log"; exit 1
  fi
  end=$(date +%s.%N)
  local secs; secs=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
  printf '%s\t%s\n' "$name" "$secs" >> "$TIMES"
  echo "done in ${secs}s"
}

DATA="$DEMO/data"
stage logs      "$PY" -m logdata synthetic --out "$DEMO/raw.log" --lines "$LINES" --seed "$SEED" --no-progress
stage prepare   "$PY" -m logdata prepare --dataset synthetic --input "$DEMO/raw.log" --out "$DATA" \
                  --seed "$SEED" --no-progress
stage model     "$PY" "$ROOT/scripts/build_tiny_model.py" --out "$DEMO/tiny-qwen2" \
                  --corpus "$DATA/train.parquet" --seed "$SEED"
stage rationale "$PY" -m logdata rationales --teacher template --in "$DATA/train.parquet" \
                  --out "$DATA/sft_train.parquet" --merge-into "$DATA/train.parquet" --no-progress
stage sft       "$PY" -m verl_recipes.local sft model="$DEMO/tiny-qwen2" \
                  data.train_files="$DATA/sft_train.parquet" trainer.output_dir="$DEMO/sft" \
                  trainer.max_steps="$SFT_STEPS" trainer.learning_rate=3.0e-3 \
                  trainer.per_device_train_batch_size=8 trainer.logging_steps=10 \
                  trainer.save_steps=1000 trainer.seed="$SEED"
stage grpo      "$PY" -m verl_recipes.local grpo model="$DEMO/sft/final" \
                  data.train_files="$DATA/train.parquet" trainer.output_dir="$DEMO/grpo" \
                  trainer.max_steps="$GRPO_STEPS" trainer.learning_rate=1.0e-4 \
                  trainer.per_device_train_batch_size=8 grpo.num_generations=4 \
                  grpo.max_completion_length=128 trainer.save_steps=1000 trainer.seed="$SEED"
stage export    bash "$ROOT/model_export.sh" "$DEMO/grpo" "$DEMO/model"
stage predict   "$PY" "$ROOT/validation/model_predict.py" --backend hf --model "$DEMO/model" \
                  --data "$DATA/test.parquet" --out "$DEMO/predictions.parquet" \
                  --max-tokens 160 --temperature 0 --seed "$SEED" --overwrite
stage evaluate  "$PY" "$ROOT/validation/model_evaluate.py" \
                  --predictions "$DEMO/predictions.parquet" --sessions "$DATA/sessions_test.parquet" \
                  --missing-template-rule ignore --out "$DEMO/eval"

echo
echo "== Metrics (smoke scale: a 0.1M-parameter model after ${SFT_STEPS} SFT + ${GRPO_STEPS} GRPO steps) =="
cat "$DEMO/eval/metrics.md"
echo
"$PY" - "$DEMO" <<'PYEOF'
import json, sys
from pathlib import Path
demo = Path(sys.argv[1])
rows = [json.loads(l) for l in (demo / "grpo" / "metrics.jsonl").read_text().splitlines() if l]
steps = [r for r in rows if "reward" in r]
if steps:
    keys = sorted(k for k in steps[0] if k.startswith("logrl/"))
    print("GRPO reward by step:", ", ".join(f"{r['step']}:{r['reward']:.2f}" for r in steps))
    print("last step components:", ", ".join(f"{k[6:]}={steps[-1][k]:.2f}" for k in keys))
PYEOF
echo
echo "== Stage timings (s) =="
awk -F'\t' '{printf "  %-10s %7.1f\n", $1, $2; t+=$2} END {printf "  %-10s %7.1f\n", "total", t}' "$TIMES"
echo
echo "plots and tables: $DEMO/eval/ ($(cd "$DEMO/eval" && ls *.png 2>/dev/null | tr '\n' ' '))"
echo "model: $DEMO/model   predictions: $DEMO/predictions.parquet   logs: $QUIET/"
