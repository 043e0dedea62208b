#!/usr/bin/env bash
# One GPU call: the peers (ceilings, the authors' HSA kernels, mamba_ssm's SSD) from
# shared/anchors-bench, the CUDA kernel tests, then `ramba-bench hsa` and `ramba-bench scan` on
# CUDA (B = 8 rows, the long B = 1 rows with a tail check) and on wgpu/Vulkan, so every ratio is
# measured in one run. STAGES picks the parts (default: all but ncu).
#
# Here (CPU machine), once per change:
#   cargo test --release --workspace --no-run          # builds ramba-bench too
#   cargo test --release --workspace --features ramba-core/cuda-tests --test kernels --no-run
#   TEST_BIN=target/release/deps/kernels-<hash> scripts/gpu-bench.sh --pack
# (workspace-wide builds share one feature resolution, so the dependencies compile once).
# On the device machine (carry .carry, .bench, .gl):
#   OUT=$OUT bash scripts/gpu-bench.sh
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

if [ "${1:-}" = --pack ]; then
  mkdir -p .carry/bin
  target=${CARGO_TARGET_DIR:-target}
  cp "$target/release/ramba-bench" .carry/bin/ramba-bench
  test=${TEST_BIN:-$(ls -t "$target"/release/deps/kernels-* | grep -v "\.d$" | head -1)}
  cp "$test" .carry/bin/kernels-test
  strip .carry/bin/ramba-bench .carry/bin/kernels-test
  gzip -f .carry/bin/ramba-bench .carry/bin/kernels-test
  ls -la .carry/bin
  exit 0
fi

OUT=${OUT:-$ROOT/.carry/out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" / 2>/dev/null; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
for b in ramba-bench kernels-test; do
  gunzip -c ".carry/bin/$b.gz" > "/tmp/$b" && chmod +x "/tmp/$b"
done
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

STAGES=${STAGES:-"anchors tests cuda long scalar wgpu scan scanlong launches"}
has() { case " $STAGES " in *" $1 "*) return 0 ;; esac; return 1; }

if has anchors; then
  # SSD with the autotuner choices pinned (no tuning pass): SSD_TUNE=pin:FILE.
  SECTIONS=${ANCHOR_SECTIONS:-"ceil hsa ssd"} BS=${ANCHOR_BS:-8} DEADLINE=${ANCHOR_DEADLINE:-200} \
    SSD_TUNE=${SSD_TUNE:-pin:.bench/anchors/ssd_pins_h200.json} \
    SSD_SHAPES=${SSD_SHAPES:-8x4K,8x16K,8x64K,1x64K} \
    OUT="$OUT/anchors" bash .bench/anchors/run_all.sh > "$OUT/anchors.txt" 2>&1
  tail -n 40 "$OUT/anchors.txt"
fi
if has tests; then
  # TEST_FILTER: a test-name filter (e.g. `scan`); all of them by default.
  timeout 300 /tmp/kernels-test ${TEST_FILTER:-} --test-threads 1 --nocapture > "$OUT/tests_cuda.txt" 2>&1
  grep -E "^test |test result|relative error|panicked| d[A-Za-z]+: |vs scalar" "$OUT/tests_cuda.txt" | tail -n 60
fi
if has cuda; then
  timeout 300 /tmp/ramba-bench hsa --backend cuda --batch 8 --lengths ${LENGTHS:-4k,16k,64k} \
    --json "$OUT/bench.jsonl" 2>&1 | tee -a "$OUT/bench.txt"
fi
if has scalar; then
  RAMBA_HSA_KERNEL=scalar timeout 200 /tmp/ramba-bench hsa --backend cuda --batch 8 --lengths 16k \
    --reference-max-tokens 0 --json "$OUT/bench.jsonl" 2>&1 | tee -a "$OUT/bench.txt"
fi
if has long; then
  timeout 400 /tmp/ramba-bench hsa --backend cuda --batch 1 --lengths ${LONG:-256k,1m,4m} \
    --reference-max-tokens 0 --check 2048 --budget-ms 200 --json "$OUT/bench.jsonl" 2>&1 \
    | tee -a "$OUT/bench.txt"
fi
if has wgpu; then
  # WGSL has no bf16: the wgpu rows run f32 (the scalar kernels; cooperative matrices are not
  # reached through the WGSL compiler).
  timeout 200 /tmp/ramba-bench hsa --backend wgpu --dtype f32 --batch 8 --lengths 16k --reference-max-tokens 0 \
    --json "$OUT/bench.jsonl" 2>&1 | tee -a "$OUT/bench.txt"
fi
if has ncu; then
  # Hardware counters of one launch of each tensor-core kernel (Firecracker machines only).
  for k in hsa_forward_cmma hsa_backward_dq_cmma hsa_backward_dkdv_cmma select_kernel scatter_kernel; do
    timeout 120 ncu --clock-control none -k "regex:$k" -c 1 --section SpeedOfLight \
      --section LaunchStats --section Occupancy --section WarpStateStats \
      /tmp/ramba-bench hsa --backend cuda --batch 8 --lengths 16k --budget-ms 1 \
      --reference-max-tokens 0 > "/tmp/ncu_$k.txt" 2>&1; cat "/tmp/ncu_$k.txt" >> "$OUT/ncu.txt"
    grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Compute \(SM\) Throughput|Memory Throughput|Shared Memory Config|Dynamic Shared|Static Shared|Warp Cycles Per Issued|Block Limit" "/tmp/ncu_$k.txt" | sed "s/^/$k: /"
  done
fi
if has scan; then
  timeout 300 /tmp/ramba-bench scan --backend cuda --batch 8 --lengths ${SCAN_LENGTHS:-4k,16k,64k} \
    --block 8x4k --json "$OUT/scan.jsonl" 2>&1 | tee -a "$OUT/scan.txt"
fi
if has scanlong; then
  # B = 1: 64K, and 1M with the tail checked against the reference (the stored chunk states
  # pass 2^32 elements at 1M + 8K).
  timeout 400 /tmp/ramba-bench scan --backend cuda --batch 1 --lengths ${SCAN_LONG:-64k,1m} \
    --reference-max-tokens 0 --budget-ms 200 --json "$OUT/scan.jsonl" 2>&1 | tee -a "$OUT/scan.txt"
  timeout 300 /tmp/ramba-bench scan --backend cuda --batch 1 --lengths 1032k \
    --reference-max-tokens 0 --check 4096 --budget-ms 1 --json "$OUT/scan.jsonl" 2>&1 | tee -a "$OUT/scan.txt"
fi
if has launches; then
  # Kernel launches of one Mamba-2 block training step: two steps minus one step, counted by
  # ncu (at a tiny shape, so profiling is quick).
  for n in 1 2; do
    timeout 200 ncu --clock-control none --metrics gpu__time_duration.sum --csv \
      /tmp/ramba-bench scan --backend cuda --lengths "" --block 1x512 --block-steps $n \
      > "/tmp/launches_$n.csv" 2>/dev/null
    echo "launches with $n block steps: $(grep -c gpu__time_duration /tmp/launches_$n.csv)" | tee -a "$OUT/scan.txt"
  done
  cp /tmp/launches_1.csv "$OUT/launches_1.csv"
fi
if has ncubwd; then
  # The backward's own kernels at 8 × 16K, one launch each: the state passing backward, the
  # tensor-core backward and the split sums.
  timeout 200 ncu --clock-control none -k "regex:chunk_scan_backward|state_passing_backward|sum_splits" -c 3 \
    --section SpeedOfLight --section LaunchStats --section Occupancy \
    /tmp/ramba-bench scan --backend cuda --batch 8 --lengths 16k --budget-ms 1 \
    --reference-max-tokens 0 > /tmp/ncu_bwd.txt 2>&1; cp /tmp/ncu_bwd.txt "$OUT/ncu_bwd.txt"
  grep -E "^  [a-z_]+kernel|Duration|Registers Per|Achieved Occupancy|Compute \(SM\) Throughput|Memory Throughput|Dynamic Shared" /tmp/ncu_bwd.txt | head -120
fi
if has ncuscan; then
  # Duration, throughput and stall reasons of the first launch of each scan kernel (8 × 4K).
  timeout 200 ncu --clock-control none -k "regex:chunk_|state_passing" -c 6 --section SpeedOfLight \
    --section LaunchStats --section Occupancy --section WarpStateStats \
    /tmp/ramba-bench scan --backend cuda --batch 8 --lengths 4k --budget-ms 1 \
    --reference-max-tokens 0 > /tmp/ncu_scan.txt 2>&1; cp /tmp/ncu_scan.txt "$OUT/ncu_scan.txt"
  grep -E "^  [a-z_]+kernel|Duration|Registers Per|Achieved Occupancy|Compute \(SM\) Throughput|Memory Throughput|Warp Cycles Per Issued|Stall" /tmp/ncu_scan.txt | head -80
fi
