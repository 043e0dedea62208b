#!/usr/bin/env bash
# Data-parallel scaling on a multi-GPU machine: tokens/s of configs/ramba-small.toml (and its
# mamba2 variant) on 1 GPU and on N GPUs with the same rows per GPU, from the runs' own
# metrics (median of the steps after warm-up). Run on the device with the stripped, gzipped
# release binary in .carry/bin:
#   OUT=$OUT GPUS=2 STEPS=14 PER_GPU=2 bash scripts/gpu-ddp.sh
set -uo pipefail
OUT=${OUT:-out}; GPUS=${GPUS:-2}; STEPS=${STEPS:-14}; PER_GPU=${PER_GPU:-2}
ARCHS=${ARCHS:-"ramba mamba2"}
mkdir -p "$OUT/runs" bin
[ -x bin/ramba-train ] || gunzip -c .carry/bin/ramba-train.gz > bin/ramba-train && chmod +x bin/ramba-train
export NCCL_NVLS_ENABLE=0
nvidia-smi --query-gpu=index,name,memory.total --format=csv | tee "$OUT/gpus.csv"
devices=$(seq -s, 0 $((GPUS - 1)))
train() { # name arch gpus
  local name=$1 arch=$2 n=$3 list
  list=$(seq -s, 0 $((n - 1)))
  bin/ramba-train --config configs/ramba-small.toml --backend cuda \
    --set model.arch="\"$arch\"" --set data.batch_size=$((PER_GPU * n)) \
    --set "train.devices=[$list]" --set train.steps="$STEPS" --set train.log_every=1 \
    --set train.eval_every=0 --set train.val_batches=1 --set train.checkpoint_every=0 \
    --set eval.passkey_after_training=false \
    --set run.name="$name" --set run.dir="\"$OUT/runs\"" > "$OUT/$name.log" 2>&1 &
  local pid=$!
  # Peak device memory while it runs.
  local peak=0
  while kill -0 $pid 2>/dev/null; do
    m=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | sort -n | tail -1)
    [ "${m:-0}" -gt "$peak" ] && peak=$m
    sleep 1
  done
  wait $pid; local rc=$?
  echo "$name rc=$rc peak_mib_per_gpu=$peak" | tee -a "$OUT/summary.txt"
  tail -3 "$OUT/$name.log"
}
for arch in $ARCHS; do
  train "$arch-1gpu" "$arch" 1
  train "$arch-${GPUS}gpu" "$arch" "$GPUS"
done
# Median tokens/s over steps 4.. (step 1 compiles the kernels).
python3 - "$OUT" "$GPUS" "$PER_GPU" $ARCHS <<'PY' | tee -a "$OUT/summary.txt"
import json, sys, statistics, pathlib
out, gpus, per, archs = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
print(f"| arch | GPUs | tokens/s (median, steps 4+) | step s | scaling efficiency |")
print("|---|---|---|---|---|")
for arch in archs:
    tps = {}
    for n in (1, gpus):
        f = out / "runs" / f"{arch}-{n}gpu" / "metrics.jsonl"
        if not f.exists():
            print(f"| {arch} | {n} | (no metrics) | | |"); continue
        recs = [json.loads(l) for l in f.read_text().splitlines() if '"tokens_per_s"' in l]
        vals = [r["tokens_per_s"] for r in recs if r["step"] >= 4]
        tps[n] = statistics.median(vals) if vals else float("nan")
    for n in sorted(tps):
        eff = tps[n] / (n * tps[1]) if 1 in tps else float("nan")
        print(f"| {arch} | {n} | {tps[n]:.0f} | {4096*per*n/tps[n]:.3f} | {eff*100:.1f}% |")
PY
