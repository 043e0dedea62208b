#!/usr/bin/env bash
# The long-context passkey on one GPU (issue 13): train the recipe(s), then ask for the key at
# millions of tokens through the streaming path with the chunk memory offloaded to the host.
# Runs on the device with the stripped, gzipped release binaries in .carry/bin (ramba-train,
# ramba-eval); run folders to resume or evaluate travel in .carry/runs.
#
#   STAGES="train" OUT=$OUT bash scripts/gpu-passkey.sh         # trainings at once, then copied to $OUT
#   STAGES="eval" EVAL_RUNS="passkey-4k" OUT=$OUT bash scripts/gpu-passkey.sh
#
# train: every "NAME CONFIG [--set ...]" line of TRAININGS runs concurrently (the models are
#   tiny and launch-bound, so processes overlap on one GPU), for at most TRAIN_LIMIT seconds;
#   an interrupted run saves a checkpoint (SIGTERM) and resumes next call from .carry/runs.
# smoke: passkey on SMOKE_RUN at SMOKE_LENGTHS, one depth, to time the streaming path.
# eval: passkey --offload on each of EVAL_RUNS at EVAL_LENGTHS, 5 depths × EVAL_TRIALS.
set -uo pipefail
OUT=${OUT:-out}; RUNS=${RUNS:-/tmp/runs}
STAGES=${STAGES:-"train eval"}
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }
TRAIN_LIMIT=${TRAIN_LIMIT:-480}
mkdir -p "$OUT" "$RUNS"
for b in ramba-train ramba-eval; do
  gunzip -c ".carry/bin/$b.gz" > "/tmp/$b" && chmod +x "/tmp/$b"
done
# Runs from earlier calls (to resume or evaluate).
if [ -d .carry/runs ]; then cp -r .carry/runs/. "$RUNS/"; fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
start=$(date +%s)
elapsed() { echo $(( $(date +%s) - start )); }

# Host memory of a process tree, sampled: the offloaded store's keys and values live there.
peak_rss_watch() { # PID FILE
  local pid=$1 file=$2 peak=0 cur
  while kill -0 "$pid" 2>/dev/null; do
    cur=$(ps -o rss= -p "$pid" 2>/dev/null | tr -d ' ')
    [ -n "$cur" ] && [ "$cur" -gt "$peak" ] && peak=$cur && echo "$peak" > "$file"
    sleep 1
  done
}

passkey() { # RUN LENGTHS DEPTHS TRIALS TAG [extra]
  local run=$1 lengths=$2 depths=$3 trials=$4 tag=$5; shift 5
  local log="$OUT/passkey-$tag.log"
  echo "[$(elapsed) s] passkey $run $lengths depths $depths × $trials $*"
  /tmp/ramba-eval passkey --run "$RUNS/$run" --backend cuda --offload --lengths "$lengths" \
    --depths "$depths" --trials "$trials" --out "$OUT/eval-$tag" "$@" > "$log" 2>&1 &
  local pid=$!
  peak_rss_watch "$pid" "$OUT/host-rss-$tag.txt" &
  local watcher=$!
  (while kill -0 "$pid" 2>/dev/null; do
     nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits; sleep 2
   done) > "$OUT/gpu-mem-$tag.txt" &
  wait "$pid"; local rc=$?
  wait "$watcher" 2>/dev/null
  echo "rc=$rc, peak host RSS $(cat "$OUT/host-rss-$tag.txt" 2>/dev/null) KiB, peak nvidia-smi" \
    "$(sort -n "$OUT/gpu-mem-$tag.txt" | tail -1) MiB"
  grep -v "^\s*$" "$log" | grep -v "eta\|ETA\|█" | tail -n 25
}

if has train; then
  TRAININGS=${TRAININGS:-"passkey-4k configs/passkey-4k.toml
passkey-4k-swa configs/passkey-4k.toml --set model.arch=\"swa_hsa\"
quickstart-s0 configs/quickstart.toml
quickstart-s1 configs/quickstart.toml --set run.seed=1 --set data.seed=1
quickstart-s2 configs/quickstart.toml --set run.seed=2 --set data.seed=2"}
  pids=()
  while IFS= read -r line; do
    [ -z "$line" ] && continue
    name=${line%% *}; rest=${line#* }; config=${rest%% *}; sets=${rest#"$config"}
    if [ -f "$RUNS/$name/config.toml" ]; then
      cmd=(/tmp/ramba-train --resume "$RUNS/$name" --backend cuda)
    else
      # shellcheck disable=SC2206 # the --set words are split on purpose
      cmd=(/tmp/ramba-train --config "$config" --backend cuda --set "run.name=\"$name\""
        --set "run.dir=\"$RUNS\"" --set train.checkpoint_every=250
        --set eval.passkey_after_training=false $sets)
    fi
    echo "[$(elapsed) s] ${cmd[*]}"
    eval "timeout -s TERM -k 30 $TRAIN_LIMIT ${cmd[*]@Q}" > "$OUT/train-$name.log" 2>&1 &
    pids+=($!); declare -g "pid_${name//-/_}=$!"
  done <<< "$TRAININGS"
  # The smoke test runs as soon as its run is trained, beside the longer trainings.
  if has smoke; then
    smoke_pid_var="pid_${SMOKE_RUN:-quickstart-s0}"; smoke_pid_var=${smoke_pid_var//-/_}
    # In the background, so the trainings' archive is written however long the smoke takes.
    (wait "${!smoke_pid_var}" 2>/dev/null
     while kill -0 "${!smoke_pid_var}" 2>/dev/null; do sleep 2; done
     passkey "${SMOKE_RUN:-quickstart-s0}" "${SMOKE_LENGTHS:-64k,1M}" 0.5 1 smoke ${SMOKE_ARGS:-}
    ) > "$OUT/smoke-summary.txt" 2>&1 &
    smoke_bg=$!
    STAGES=${STAGES/smoke/}
  fi
  wait "${pids[@]}"
  echo "[$(elapsed) s] trainings done"
  for log in "$OUT"/train-*.log; do
    echo "== $(basename "$log"): $(grep -E "tokens/s" "$log" | tail -1)"
    grep -E "answers exact|interrupted|error|Error" "$log" | tail -2
  done
  # One archive per run (the device tool returns a bounded number of files, 16 MiB each, and
  # folder depth); unpack them all into .carry/runs to resume or evaluate next call.
  for d in "$RUNS"/*/; do
    n=$(basename "$d")
    tar -czf "$OUT/runs-$n.tar.gz" -C "$RUNS" --exclude='.stale-*' --exclude='.partial-*' "$n"
  done
  du -sh "$OUT"/runs-*.tar.gz
  if [ -n "${smoke_bg:-}" ]; then wait "$smoke_bg"; cat "$OUT/smoke-summary.txt"; fi
fi

if has smoke; then
  passkey "${SMOKE_RUN:-quickstart-s0}" "${SMOKE_LENGTHS:-64k,1M}" 0.5 1 smoke ${SMOKE_ARGS:-}
fi
if has eval; then
  for run in ${EVAL_RUNS:-passkey-4k}; do
    passkey "$run" "${EVAL_LENGTHS:-1M,4M,16M}" "${EVAL_DEPTHS:-0:1:0.25}" "${EVAL_TRIALS:-1}" \
      "$run" ${EVAL_ARGS:-}
  done
fi
echo "[$(elapsed) s] done"
