#!/usr/bin/env bash
# Runs the variants of one experiment side by side, each for a fixed wall-clock budget, then
# scores each with the passkey evaluation and prints one summary line per variant.
#
#   scripts/sweep.sh CONFIG VARIANTS OUT_DIR
#
# VARIANTS has one variant per line: a name, then `ramba-train` arguments (`--set k=v ...`,
# `--backend cpu|cuda`); `#` starts a comment. Every variant trains `CONFIG` for at most
# TRAIN_SECONDS (it is then stopped like Ctrl-C, which checkpoints), then `ramba-eval passkey`
# runs on its last checkpoint at 1x, 4x and 16x its `data.seq_len`.
#
# Environment:
#   BIN            folder holding ramba-train and ramba-eval (default: target/release)
#   TRAIN_SECONDS  training budget per variant (default 480)
#   DEVICES        CUDA device ids to spread `--backend cuda` variants over, e.g. "1 2 3"
#                  (default: every GPU nvidia-smi lists); variant i gets the (i mod n)-th
#   TRIALS         passkey trials per (length, depth) cell (default 4)
#   EVAL_BACKEND   backend of the passkey evaluation (default cpu: a small model evaluates in
#                  seconds there, while a fresh CUDA process first compiles its kernels)
set -uo pipefail
set -f  # variant arguments hold TOML like [{kind="passkey"}], not file patterns

if [ $# -ne 3 ]; then
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
config=$1 variants=$2 out=$3
bin=${BIN:-target/release}
budget=${TRAIN_SECONDS:-480}
trials=${TRIALS:-4}
eval_backend=${EVAL_BACKEND:-cpu}
read -r -a devices <<<"${DEVICES:-$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr '\n' ' ')}"
for f in "$config" "$variants" "$bin/ramba-train" "$bin/ramba-eval"; do
  [ -e "$f" ] || { echo "sweep: $f not found" >&2; exit 2; }
done
mkdir -p "$out"

# `--set data.seq_len=N` in a variant's arguments, else the config's value.
seq_len_of() {
  local args=$1 n
  n=$(grep -o 'data\.seq_len=[0-9]*' <<<"$args" | tail -n 1 | cut -d= -f2)
  [ -n "$n" ] || n=$(awk '/^\[data\]/{d=1;next} /^\[/{d=0} d && /^seq_len/{print $3}' "$config")
  echo "${n:-4096}"
}

run_variant() {
  local i=$1 name=$2 args=$3 dev=""
  if grep -q -- '--backend cuda' <<<"$args" && [ ${#devices[@]} -gt 0 ]; then
    dev=${devices[$((i % ${#devices[@]}))]}
  fi
  local l
  l=$(seq_len_of "$args")
  # shellcheck disable=SC2086  # the variant's arguments are meant to split
  CUDA_VISIBLE_DEVICES=$dev timeout --foreground -s INT -k 20 "$budget" "$bin/ramba-train" --config "$config" \
    --set run.dir="$out" --set run.name="$name" --set eval.passkey_after_training=false \
    $args >"$out/$name.train.log" 2>&1
  CUDA_VISIBLE_DEVICES=$dev "$bin/ramba-eval" passkey --run "$out/$name" --backend "$eval_backend" \
    --lengths "$l,$((4 * l)),$((16 * l))" --depths 0:1:0.25 --trials "$trials" \
    >"$out/$name.eval.log" 2>&1
}

i=0
names=()
while read -r name args; do
  case "$name" in '' | '#'*) continue ;; esac
  run_variant "$i" "$name" "$args" &
  names+=("$name")
  i=$((i + 1))
done <"$variants"
wait

# Summary: steps reached, the last logged training answer accuracy, passkey mean by length.
printf '%-22s %6s %8s %8s  %s\n' variant steps ans_acc tok_acc "passkey mean (1x 4x 16x)"
for name in "${names[@]}"; do
  m="$out/$name/metrics.jsonl"
  last=$(grep '"loss"' "$m" 2>/dev/null | tail -n 1)
  field() { grep -o "\"$1\":[0-9.e-]*" <<<"$last" | cut -d: -f2 | head -c 6; }
  mean=$(grep -E '^ +mean' "$out/$name.eval.log" 2>/dev/null | sed 's/^ *mean *//')
  printf '%-22s %6s %8s %8s  %s\n' "$name" "$(field step)" "$(field answer_acc)" \
    "$(field answer_token_acc)" "${mean:-no eval (see $name.eval.log)}"
done
