#!/usr/bin/env bash
# Trains one config for a fixed wall-clock budget and reports its start-up time, steady-state
# training throughput and peak device memory: the numbers docs/perf.md records.
#
#   scripts/throughput.sh NAME CONFIG [ramba-train arguments ...]
#
# Environment:
#   BIN       folder holding ramba-train (default: target/release)
#   SECONDS_  training budget; the run is then stopped like Ctrl-C (default 300)
#   OUT_DIR   where the run folder, its log and the memory trace go (default: /tmp/throughput)
#   GPU       CUDA device to use and to poll with nvidia-smi (default 0)
#
# Prints one line: name, seconds to the first finished step, steps, median tokens/s over the
# steps after the first 10% (at least 1), and peak device memory in MiB (nvidia-smi, 250 ms).
set -uo pipefail

if [ $# -lt 2 ]; then
  sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
name=$1 config=$2
shift 2
bin=${BIN:-target/release}
budget=${SECONDS_:-300}
out=${OUT_DIR:-/tmp/throughput}
gpu=${GPU:-0}
mkdir -p "$out"

mem="$out/$name.mem"
nvidia-smi -i "$gpu" --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 >"$mem" 2>/dev/null &
poll=$!
CUDA_VISIBLE_DEVICES=$gpu timeout --foreground -s INT -k 20 "$budget" "$bin/ramba-train" --config "$config" \
  --set run.dir="$out" --set run.name="$name" --set train.log_every=1 --set train.eval_every=0 \
  --set eval.passkey_after_training=false "$@" >"$out/$name.log" 2>&1
kill "$poll" 2>/dev/null

# One training record per step: pull step, elapsed_s and tokens_per_s.
records=$(grep '"tokens_per_s"' "$out/$name/metrics.jsonl" 2>/dev/null |
  sed -E 's/.*"step":([0-9]+).*"tokens_per_s":([0-9.e+-]+).*"elapsed_s":([0-9.e+-]+).*/\1 \2 \3/')
steps=$(wc -l <<<"${records:-}" | tr -d ' ')
[ -n "${records:-}" ] || steps=0
first=$(head -n 1 <<<"${records:-}" | cut -d' ' -f3)
skip=$(((steps + 9) / 10))
median=$(tail -n +"$((skip + 1))" <<<"${records:-}" | cut -d' ' -f2 | sort -g |
  awk '{v[NR]=$1} END {if (NR) print v[int((NR+1)/2)]; else print "-"}')
peak=$(sort -n "$mem" 2>/dev/null | tail -n 1)
printf '%-28s first step %8ss  steps %6s  median tok/s %10s  peak %8s MiB\n' \
  "$name" "${first:--}" "$steps" "${median:--}" "${peak:--}"
