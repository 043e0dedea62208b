#!/usr/bin/env bash
# The architecture comparison of the quickstart recipe on one GPU: each architecture trained
# (concurrently, one process each: the models are tiny and launch-bound), then
# `ramba-train --compare` evaluates the finished runs the same way and writes one table.
# Run on the device with the stripped, gzipped release binaries in .carry/bin:
#   OUT=$OUT bash scripts/gpu-compare.sh
set -uo pipefail
OUT=${OUT:-out}; RUNS=${RUNS:-/tmp/runs}; CONFIG=${CONFIG:-configs/quickstart.toml}
ARCHS=${ARCHS:-"ramba mamba2 transformer swa_hsa mamba_nsa"}
TASKS=${TASKS:-niah,niah_multi_query,variable_tracking}
TRAIN_LIMIT=${TRAIN_LIMIT:-400}; EVAL_LIMIT=${EVAL_LIMIT:-150}
mkdir -p "$OUT" "$RUNS"
for b in ramba-train ramba-eval; do
  gunzip -c ".carry/bin/$b.gz" > "/tmp/$b" && chmod +x "/tmp/$b"
done
name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$CONFIG" | head -1); name=${name:-quickstart}
start=$(date +%s)
for arch in $ARCHS; do
  timeout "$TRAIN_LIMIT" /tmp/ramba-train --config "$CONFIG" --backend cuda \
    --set "model.arch=\"$arch\"" --set "run.name=\"$name-$arch\"" --set "run.dir=\"$RUNS\"" \
    --set eval.passkey_after_training=false > "$OUT/train-$arch.log" 2>&1 &
done
wait
echo "training: $(( $(date +%s) - start )) s for $(echo $ARCHS | wc -w) architectures at once"
for arch in $ARCHS; do echo "$arch: $(grep -E "answers exact|error" "$OUT/train-$arch.log" | tail -1)"; done
archs=$(echo $ARCHS | tr ' ' ',')
timeout "$EVAL_LIMIT" /tmp/ramba-train --config "$CONFIG" --backend cuda --set "run.dir=\"$RUNS\"" \
  --compare "$archs" --compare-tasks "$TASKS" > "$OUT/compare.log" 2>&1
echo "compare rc=$?"
tail -n 5 "$OUT/compare.log"
cp "$RUNS/$name-compare"/compare.md "$RUNS/$name-compare"/compare.csv "$OUT/" 2>/dev/null
cp "$RUNS/$name-compare"/compare_passkey.png "$OUT/" 2>/dev/null
cat "$OUT/compare.md" 2>/dev/null
