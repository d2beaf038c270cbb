#!/usr/bin/env bash
# Real-time detection on the embedded default (`make stream-demo`): a synthetic HDFS-like log is
# parsed, cut into block sessions and used to train a LogGPT-size next-key model; then a real
# redis-server, one `detect` worker and a `replay` at STREAM_DEMO_RATE lines/s run, and the
# service's status and first alerts are printed. Everything lands in STREAM_DEMO_OUT.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
OUT=${STREAM_DEMO_OUT:-outputs/stream_demo}
LINES=${STREAM_DEMO_LINES:-20000}
RATE=${STREAM_DEMO_RATE:-5000}
# K=2: the synthetic log has about a dozen keys, so LogGPT's HDFS K (7) would hide its anomalies
K=${STREAM_DEMO_K:-2}

mkdir -p "$OUT"
if [[ ! -f "$OUT/model/config.json" ]]; then
    echo "== building the demo data and model in $OUT"
    "$PY" -m logdata synthetic --format hdfs --lines "$LINES" --out "$OUT/hdfs.log" \
        --anomaly-rate 0.05 --seed 0 --no-progress
    "$PY" -m logdata parse --dataset hdfs --input "$OUT/hdfs.log" --labels "$OUT/anomaly_label.csv" \
        --out "$OUT/parsed" --overwrite --no-progress
    "$PY" -m logdata sequences --input "$OUT/parsed/structured.parquet" --out "$OUT/seq" \
        --window block --n-train 1000 --context 64 --overwrite
    "$PY" -m verl_recipes.local.keyseq.pretrain --input "$OUT/seq" --out "$OUT/model" --arch loggpt \
        --epochs 3 --lr 3e-3 --batch-size 16 --seed 0 --threads 1 --no-progress
fi

echo "== starting redis-server"
URL=$("$PY" -m serving redis start --dir "$OUT/redis")
WORKER=""
cleanup() {
    [[ -n "$WORKER" ]] && kill "$WORKER" 2>/dev/null || true
    "$PY" -m serving redis stop --dir "$OUT/redis" >/dev/null || true
}
trap cleanup EXIT

echo "== starting a detect worker (log: $OUT/worker.log)"
"$PY" -m serving detect --redis "$URL" --parsed "$OUT/parsed" --model "$OUT/model" \
    --sequences "$OUT/seq" --k "$K" --threads 1 --exit-when-idle 5 >"$OUT/worker.log" 2>&1 &
WORKER=$!

echo "== replaying $OUT/hdfs.log at $RATE lines/s"
"$PY" -m serving replay --redis "$URL" --input "$OUT/hdfs.log" --rate "$RATE" --no-progress
wait "$WORKER"
WORKER=""

echo "== status"
"$PY" -m serving status --redis "$URL" --interval 0
echo "== first alerts (python -m serving alerts --redis $URL)"
"$PY" -m serving alerts --redis "$URL" --limit 5
