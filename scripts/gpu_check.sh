#!/usr/bin/env bash
# GPU checks that the CPU suite cannot make (about 5 minutes on one GPU). Needs CUDA torch and the
# project installed (GPU stack: requirements.txt; offline machines: carry the wheels). Writes
# figures to ${GPU_CHECK_OUT:-outputs/gpu_check}/ and prints them:
#
#   1. perplexity-scorer benchmark on the GPU: 512 responses with a DistilGPT-2-sized scorer
#      (benchmarks/bench_reward.py --device cuda; target: ours <= 2 s)
#   2. verl's SFT trainer (sft_lora recipe, torchrun, FSDP2, sdpa) for 5 steps on CUDA with torch
#      only (no vLLM), on a tiny model and synthetic rationales built offline; step time and loss
#      from verl's own console log.
#
#   bash scripts/gpu_check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="${PYTHON:-python}"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
OUT="${GPU_CHECK_OUT:-$ROOT/outputs/gpu_check}"
rm -rf "$OUT"; mkdir -p "$OUT"

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "error: no CUDA device visible to torch; this script checks the GPU paths" >&2
  exit 3
fi
"$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0), '| torch', torch.__version__)" \
  | tee "$OUT/device.txt"

echo "[gpu_check] 1/2 perplexity scorer, 512 responses, cuda"
timeout 300 "$PY" "$ROOT/benchmarks/bench_reward.py" --device cuda --n 512 --ref-n 16 \
  --json "$OUT/bench_reward.json" | tee "$OUT/bench_reward.log"

echo "[gpu_check] 2/2 verl SFT trainer, 5 steps on CUDA"
DATA="$OUT/data"
"$PY" -m logdata synthetic --out "$OUT/raw.log" --lines 3000 --seed 0 --no-progress >/dev/null
"$PY" -m logdata prepare --dataset synthetic --input "$OUT/raw.log" --out "$DATA" --seed 0 \
  --no-progress >/dev/null
"$PY" "$ROOT/scripts/build_tiny_model.py" --out "$OUT/tiny" --corpus "$DATA/train.parquet" \
  --hidden 128 --heads 2 --layers 2 --seed 0 >/dev/null
"$PY" -m logdata rationales --teacher template --input "$DATA/train.parquet" \
  --out "$DATA/sft_train.parquet" --no-progress >/dev/null
timeout 300 bash "$ROOT/model_train.sh" sft_lora model.path="$OUT/tiny" \
  data.train_files="$DATA/sft_train.parquet" trainer.default_local_dir="$OUT/sft_ckpt" \
  trainer.n_gpus_per_node=1 trainer.total_training_steps=5 trainer.save_freq=-1 \
  trainer.test_freq=-1 trainer.logger=[console] data.train_batch_size=16 \
  data.micro_batch_size_per_gpu=8 data.max_length=512 model.lora_rank=0 \
  2>&1 | tee "$OUT/sft.log" | grep -E "step:[0-9]+ " | sed 's/ - /\n    /g' \
  | grep -E "^step|train/loss|timing|perf/max_memory_allocated" || true
grep -q "step:5 " "$OUT/sft.log" || { echo "error: SFT did not reach step 5 (see $OUT/sft.log)" >&2; exit 1; }
echo "[gpu_check] done; figures in $OUT"
