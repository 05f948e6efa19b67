#!/usr/bin/env bash
# Issue 15's measurements on a GPU machine without a package index (see benchmarks/fetch_wheels.sh):
# the classifier, the benchmark on the GPU (diffusers + the gentool recipe), recipe variants in parallel,
# and CPU seconds per training step of both systems.
#   bash benchmarks/quality_session.sh [RESULTS_DIR]   (carry .whl and data/fmnist, the gzipped IDX files)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-quality_results}}; mkdir -p "$out"
export PYTHONUNBUFFERED=1 GENTOOL_NO_PROGRESS=1
py=${PYTHON:-python3}
if ! "$py" -c 'import gentool, torch_fidelity, diffusers' 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps .whl/*.whl && "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || { echo "could not install gentool from .whl/"; exit 1; }
fi
if [ -d data/fmnist ]; then mkdir -p /usr/share/datasets/fashion-mnist && cp data/fmnist/*.gz /usr/share/datasets/fashion-mnist/; fi
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$out/device.txt"; nproc | tee -a "$out/device.txt"
# 1. the classifier (GPU: seconds)
"$py" -c 'from gentool_metrics.features_cmd import train_features as t; r = t("fashion_mnist", device="cuda"); print(r)' 2>&1 | tee "$out/classifier.log"
# 2. diffusers and the recipe on the GPU (alone: its times are the GPU times)
"$py" benchmarks/quality.py --device cuda --set run.compile=false --out "$out/gpu_main.json" 2>&1 | tee "$out/gpu_main.log"
# 3. recipe variants, gentool only, in parallel (quality only: their times share the GPU)
i=0
while IFS= read -r line; do
  [ -z "$line" ] && continue
  i=$((i+1)); sets=(); for kv in $line; do sets+=(--set "$kv"); done
  OMP_NUM_THREADS=2 "$py" benchmarks/quality.py --device cuda --skip-diffusers --set run.compile=false "${sets[@]}" \
     --out "$out/v$i.json" > "$out/v$i.log" 2>&1 &
done < "${VARIANTS:-benchmarks/quality_variants.txt}"
wait
tail -n 12 "$out"/v*.log
# 4. CPU seconds per training step (2 threads), both systems alternately
OMP_NUM_THREADS=2 "$py" benchmarks/quality.py --device cpu --time-steps ${TIME_STEPS:-20} 2>&1 | tee "$out/cpu_steps.log"
