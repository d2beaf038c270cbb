#!/usr/bin/env bash
# Export a training checkpoint to one Hugging Face folder (weights + tokenizer + chat template).
#
#   bash model_export.sh CHECKPOINT OUT_DIR [--base BASE_MODEL] [--overwrite]
#
#   CHECKPOINT  a verl run, RL or SFT (checkpoints/<project>/<experiment>, a global_step_N folder
#               or its actor/ folder): merged by `python -m verl.model_merger merge --backend fsdp`;
#               a LoRA adapter left by the merger is merged into the base weights;
#               or a local-backend output (outputs/local_grpo, its final/ or checkpoint-N/):
#               re-saved as safetensors, a LoRA adapter merged into its base (--base to override).
#   OUT_DIR     the Hugging Face folder to write; checked by loading it with AutoModelForCausalLM.
#               Never the checkpoint itself, a folder inside it or one holding it; a non-empty
#               OUT_DIR is refused unless --overwrite, which replaces it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY="python"; fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0
fi
if [[ $# -lt 2 ]]; then echo "error: need CHECKPOINT and OUT_DIR (try --help)" >&2; exit 2; fi
SRC="$1"; OUT="$2"; shift 2
BASE=()
OVERWRITE=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --base) [[ $# -ge 2 ]] || { echo "error: --base needs a folder" >&2; exit 2; }
            BASE=(--base "$2"); shift 2 ;;
    --overwrite) OVERWRITE=(--overwrite); shift ;;
    *) echo "error: unexpected argument '$1'" >&2; exit 2 ;;
  esac
done
if [[ ! -e "$SRC" ]]; then echo "error: checkpoint not found: $SRC" >&2; exit 2; fi

if ACTOR="$("$PY" -m verl_recipes.local.export find-verl "$SRC" 2>/dev/null)"; then
  echo "[model_export] verl FSDP checkpoint: $ACTOR" >&2
  # OUT_DIR is not CHECKPOINT, inside it or holding it; not empty only with --overwrite (emptied)
  "$PY" -m verl_recipes.local.export prepare-target "$SRC" "$OUT" ${OVERWRITE[@]+"${OVERWRITE[@]}"}
  "$PY" -m verl.model_merger merge --backend fsdp --local_dir "$ACTOR" --target_dir "$OUT"
  "$PY" -m verl_recipes.local.export merge-lora "$OUT"
  "$PY" -m verl_recipes.local.export verify "$OUT"
else
  echo "[model_export] local-backend checkpoint: $SRC" >&2
  "$PY" -m verl_recipes.local.export local "$SRC" "$OUT" ${BASE[@]+"${BASE[@]}"} \
    ${OVERWRITE[@]+"${OVERWRITE[@]}"}
fi
echo "[model_export] wrote $OUT" >&2
