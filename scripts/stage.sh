# Sourced by scripts/demo.sh and scripts/e2e.sh: run pipeline stages quietly, timed, with a timeout.
#
#   STAGE_PREFIX=demo STAGE_LOGS=DIR STAGE_TIMES=FILE [STAGE_TIMEOUT=SECONDS]; source scripts/stage.sh
#   stage NAME COMMAND...    # log in $STAGE_LOGS/NAME.log, "NAME<TAB>seconds" appended to $STAGE_TIMES
#
# A failing stage prints the end of its log and exits 1; with STAGE_TIMEOUT set, a stage running
# longer is killed (a crashed vLLM worker can leave verl waiting forever). With STAGE_STOP_AFTER
# set to a stage's name, the script exits 0 once that stage is done (e.g. the data stages only).

stage() {
  local name="$1"; shift
  local start end rc=0 secs
  start=$(date +%s.%N)
  printf '[%s] %-10s ' "$STAGE_PREFIX" "$name"
  if [[ -n "${STAGE_TIMEOUT:-}" ]]; then
    timeout --kill-after=30 "$STAGE_TIMEOUT" "$@" >"$STAGE_LOGS/$name.log" 2>&1 || rc=$?
  else
    "$@" >"$STAGE_LOGS/$name.log" 2>&1 || rc=$?
  fi
  if [[ $rc -ne 0 ]]; then
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then echo "TIMED OUT after ${STAGE_TIMEOUT}s"; else echo "FAILED (exit $rc)"; fi
    echo "last lines of $STAGE_LOGS/$name.log:"; tail -n 30 "$STAGE_LOGS/$name.log"; exit 1
  fi
  end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
  printf '%s\t%s\n' "$name" "$secs" >> "$STAGE_TIMES"
  echo "done in ${secs}s"
  if [[ -n "${STAGE_STOP_AFTER:-}" && "$name" == "$STAGE_STOP_AFTER" ]]; then
    echo "[$STAGE_PREFIX] stopped after $name (STAGE_STOP_AFTER)"; exit 0
  fi
}

# kill_ray_processes DIR: kill -9 every process whose command line names DIR (a private Ray temp
# dir: GCS, raylets, monitor) and all their descendants (Ray workers, vLLM engine processes). For
# runs that start Ray with their own temp dir; never touches another Ray instance on the machine.
kill_ray_processes() {
  local dir="$1" i=0
  local -a pids=()
  mapfile -t pids < <(pgrep -f -- "$dir" || true)
  while (( i < ${#pids[@]} )); do  # breadth-first over the process tree
    mapfile -t -O "${#pids[@]}" pids < <(pgrep -P "${pids[i]}" || true)
    i=$((i + 1))
  done
  if (( ${#pids[@]} )); then kill -9 "${pids[@]}" 2>/dev/null || true; fi
}
