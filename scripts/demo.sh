#!/usr/bin/env bash
# `make demo`: the whole LogRL pipeline end to end on a CPU, at smoke scale (minutes, not hours).
#
#   bash scripts/demo.sh            # writes everything under outputs/demo/ (DEMO_DIR to change)
#
# synthetic BGL-style logs → parse/label/datasets (logdata prepare) → tiny Qwen2 model built
# offline (tokenizer trained on the data) → rationales from the rule-based template teacher →
# CoT-SFT then GRPO with the LogRL reward through the local (TRL) backend → export → predict
# (hf backend) on the test templates and on every template of the test sessions → evaluate at
# template and session level, sessions twice: the paper's protocol (test-split predictions only,
# sessions with another template skipped; eval/) and the opt-in full coverage (every template of
# the test sessions, also those first seen in training; eval_full/, not paper-comparable) →
# training-curve PNGs (SFT, GRPO). The synthetic logs have a few hundred
# templates whose alert wording generalises, so a ~0.4M-parameter model trained for a few
# minutes on CPU learns something; it is still a smoke-scale run, not the method at scale.
# Knobs: DEMO_DIR, DEMO_SEED, DEMO_LINES, DEMO_ANOMALY_RATE, DEMO_WINDOW, DEMO_HIDDEN, DEMO_LAYERS,
# DEMO_SFT_STEPS, DEMO_SFT_LR, DEMO_GRPO_STEPS, DEMO_GRPO_LR; DEMO_STOP_AFTER=STAGE ends the run
# after that stage (e.g. prepare: the data only). Real runs: bash model_train.sh.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
export TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

DEMO="${DEMO_DIR:-$ROOT/outputs/demo}"
SEED="${DEMO_SEED:-0}"
LINES="${DEMO_LINES:-8000}"            # synthetic log lines (~400 templates, a quarter abnormal)
ANOMALY_RATE="${DEMO_ANOMALY_RATE:-0.3}"  # share of abnormal workflows
# Lines per test session. With 100-line windows every demo session holds an abnormal workflow, so
# session F1 could not show a false alarm; 10-line windows give about half normal sessions.
WINDOW="${DEMO_WINDOW:-10}"
HIDDEN="${DEMO_HIDDEN:-128}"           # tiny Qwen2: hidden size, layers (about 0.4M parameters)
LAYERS="${DEMO_LAYERS:-2}"
SFT_STEPS="${DEMO_SFT_STEPS:-300}"
SFT_LR="${DEMO_SFT_LR:-3.0e-3}"
GRPO_STEPS="${DEMO_GRPO_STEPS:-16}"
GRPO_LR="${DEMO_GRPO_LR:-1.0e-4}"
rm -rf "$DEMO"
mkdir -p "$DEMO"
TIMES="$DEMO/timings.tsv"
: > "$TIMES"
QUIET="$DEMO/logs"
mkdir -p "$QUIET"

STAGE_PREFIX=demo STAGE_LOGS="$QUIET" STAGE_TIMES="$TIMES" STAGE_STOP_AFTER="${DEMO_STOP_AFTER:-}"
# shellcheck source=scripts/stage.sh
source "$ROOT/scripts/stage.sh"

DATA="$DEMO/data"
stage logs      "$PY" -m logdata synthetic --out "$DEMO/raw.log" --lines "$LINES" --seed "$SEED" \
                  --anomaly-rate "$ANOMALY_RATE" --no-progress
stage prepare   "$PY" -m logdata prepare --dataset synthetic --input "$DEMO/raw.log" --out "$DATA" \
                  --window-size "$WINDOW" --seed "$SEED" --no-progress
stage model     "$PY" "$ROOT/scripts/build_tiny_model.py" --out "$DEMO/tiny-qwen2" \
                  --corpus "$DATA/train.parquet" --hidden "$HIDDEN" --layers "$LAYERS" --seed "$SEED"
stage rationale "$PY" -m logdata rationales --teacher template --input "$DATA/train.parquet" \
                  --out "$DATA/sft_train.parquet" --merge-into "$DATA/train.parquet" --no-progress
stage sft       "$PY" -m verl_recipes.local sft model="$DEMO/tiny-qwen2" \
                  data.train_files="$DATA/sft_train.parquet" trainer.output_dir="$DEMO/sft" \
                  trainer.max_steps="$SFT_STEPS" trainer.learning_rate="$SFT_LR" \
                  trainer.per_device_train_batch_size=8 trainer.logging_steps=10 \
                  trainer.save_steps=100000 trainer.seed="$SEED"
stage grpo      "$PY" -m verl_recipes.local grpo model="$DEMO/sft/final" \
                  data.train_files="$DATA/train.parquet" trainer.output_dir="$DEMO/grpo" \
                  trainer.max_steps="$GRPO_STEPS" trainer.learning_rate="$GRPO_LR" \
                  trainer.per_device_train_batch_size=8 grpo.num_generations=4 \
                  grpo.max_completion_length=96 trainer.save_steps=100000 trainer.seed="$SEED"
stage export    bash "$ROOT/model_export.sh" "$DEMO/grpo" "$DEMO/model"
stage predict   "$PY" "$ROOT/validation/model_predict.py" --backend hf --model "$DEMO/model" \
                  --input "$DATA/test.parquet" --out "$DEMO/predictions.parquet" \
                  --max-tokens 96 --temperature 0 --batch-size 32 --seed "$SEED" --overwrite
stage predict_s "$PY" "$ROOT/validation/model_predict.py" --backend hf --model "$DEMO/model" \
                  --input "$DATA/sessions_templates.parquet" --out "$DEMO/session_predictions.parquet" \
                  --max-tokens 96 --temperature 0 --batch-size 32 --seed "$SEED" --overwrite
# session coverage mode test_templates (the paper's protocol, the default) ...
stage evaluate  "$PY" "$ROOT/validation/model_evaluate.py" \
                  --predictions "$DEMO/predictions.parquet" --sessions "$DATA/sessions_test.parquet" \
                  --out "$DEMO/eval"
# ... and the opt-in coverage mode full (not paper-comparable)
stage eval_full "$PY" "$ROOT/validation/model_evaluate.py" \
                  --predictions "$DEMO/predictions.parquet" --sessions "$DATA/sessions_test.parquet" \
                  --session-predictions "$DEMO/session_predictions.parquet" --out "$DEMO/eval_full"
stage curves    "$PY" "$ROOT/scripts/watch_training.py" "$DEMO/grpo/metrics.jsonl" \
                  --out "$DEMO/eval/grpo_curves.png" --total-steps "$GRPO_STEPS" --sigma 1
# the SFT console log: the monitor reads the metrics.jsonl it names (steps 10, 20, ... of 300)
stage curves_sft "$PY" "$ROOT/scripts/watch_training.py" "$QUIET/sft.log" \
                  --out "$DEMO/eval/sft_curves.png" --sigma 1

PARAMS=$("$PY" -c "import sys; from safetensors.torch import load_file
print(f'{sum(t.numel() for t in load_file(sys.argv[1]).values()) / 1e6:.2f}M')" \
  "$DEMO/model/model.safetensors" 2>/dev/null || echo "?")
echo
echo "== Metrics (smoke scale: a ${PARAMS}-parameter model after ${SFT_STEPS} SFT + ${GRPO_STEPS} GRPO steps) =="
"$PY" - "$DEMO" "$DATA" <<'PYEOF'
import json, sys
from validation.metrics import format_metric
from pathlib import Path
demo, data = Path(sys.argv[1]), Path(sys.argv[2])
meta = json.loads((data / "meta.json").read_text())
print(f"data: {meta['templates']['total']} templates ({meta['templates']['abnormal']} abnormal); "
      f"rows train/val/test {meta['rows']['train']}/{meta['rows']['val']}/{meta['rows']['test']}; "
      f"test templates never seen in training")
paper = json.loads((demo / "eval" / "metrics.json").read_text())
full = json.loads((demo / "eval_full" / "metrics.json").read_text())
keys = ("precision", "recall", "f1", "accuracy", "unknown_rate", "n")
labels = {"test_templates": "session, paper (test templates)",
          "full": "session, full coverage (opt-in)"}
width = max(len(v) for v in labels.values())
print(f"  {'level':<{width}}" + "".join(f"{k:>13}" for k in keys) + "  judged/skipped")
rows = [("template", paper["template"]["overall"], "")]
for sess in (paper["session"], full["session"]):
    rows.append((labels[sess["coverage_mode"]], sess["overall"],
                 f"  {sess['sessions_judged']}/{sess['sessions_skipped']}"))
for name, row, counts in rows:
    if not row["n"]:
        print(f"  {name:<{width}}  no session judged (each holds a template outside the test "
              f"split){counts}")
        continue
    print(f"  {name:<{width}}" + "".join(
        f"{row[k]:>13d}" if k == "n" else f"{format_metric(row[k], 3):>13}" for k in keys) + counts)
rows = [json.loads(l) for l in (demo / "grpo" / "metrics.jsonl").read_text().splitlines() if l]
steps = [r for r in rows if "reward" in r]
if steps:
    comps = sorted(k for k in steps[0] if k.startswith("logrl/"))
    print("\nGRPO reward by step (batch means; components unweighted):")
    print(f"  {'step':>4} {'reward':>7}" + "".join(f"{k[6:]:>13}" for k in comps))
    for r in steps:
        print(f"  {r['step']:>4} {r['reward']:>7.3f}" + "".join(f"{r[k]:>13.3f}" for k in comps))
PYEOF
echo
echo "full tables: $DEMO/eval/metrics.md (paper protocol), $DEMO/eval_full/metrics.md (full coverage)"
echo
echo "== Stage timings (s) =="
awk -F'\t' '{printf "  %-10s %7.1f\n", $1, $2; t+=$2} END {printf "  %-10s %7.1f\n", "total", t}' "$TIMES"
echo
echo "plots: $(ls "$DEMO"/eval/*.png "$DEMO"/eval_full/*.png 2>/dev/null | tr '\n' ' ')"
echo "model: $DEMO/model   predictions: $DEMO/predictions.parquet, $DEMO/session_predictions.parquet"
echo "logs: $QUIET/"
