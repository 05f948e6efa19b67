#!/usr/bin/env bash
# The GPU measurements the training and speed issues ask for, in one go (~15 min on an H100).
#
#   bash benchmarks/gpu_session.sh [RESULTS_DIR]     (default: $OUT, else ./gpu_results)
#
# Needs a CUDA GPU and gentool installed with the bench extra (pip install -e '.[bench]'). On a
# machine without a package index, run benchmarks/fetch_wheels.sh beforehand where pip works
# and bring .whl/ along: this script then installs gentool and its missing packages from it.
# Writes device.txt, cuda_tests.log, train_eager.jsonl / train_compiled.jsonl (the engine's
# metrics.jsonl of 300 steps of the CIFAR-10 recipe's network, eager and compiled), and
# bench_*.json (gentool bench with --compare diffusers). docs/performance.md says what to
# record from them. The CIFAR-10 network trains on CIFAR-sized synthetic data (toy "blobs",
# 50,000 images of 3x32x32, 10 classes), so nothing is downloaded: throughput does not
# depend on the pixels.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_results}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 GENTOOL_NO_PROGRESS=1
py=${PYTHON:-python3}

if [ -d .whl ] && ! "$py" -c 'import gentool, torch_fidelity, diffusers' 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps .whl/*.whl \
    && "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
    || { echo "could not install gentool from .whl/"; exit 1; }
fi

{ nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,memory.total --format=csv
  "$py" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])'
} 2>&1 | tee "$out/device.txt"

# 1. the correctness checks that need CUDA: inductor kernels, CUDA graphs, no sync in the step
"$py" -m pytest -q -rs tests/test_fast_path.py tests/engine/test_engine_sync.py tests/test_bench.py 2>&1 \
    | tee "$out/cuda_tests.log"

# 2. the training engine (gentool run): eager vs compiled, bf16, channels-last, data on the GPU
recipe=$(mktemp --suffix=.toml)
"$py" - recipes/cifar_cfg.toml "$recipe" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
toy = '[data]\nname = "toy"\nn = 50000\nimage_size = 32\nchannels = 3\nnum_classes = 10\n\n'
text = re.sub(r"\[data\]\n.*?\n\n", toy, text, count=1, flags=re.S)
open(sys.argv[2], "w").write(text)
PY
runs=$(mktemp -d)
for compile in false true; do
  name=$([ "$compile" = true ] && echo compiled || echo eager)
  timeout 420 "$py" -m gentool run "$recipe" --no-tasks --set run.compile=$compile \
      --set "run.output_dir=\"$runs\"" --set "run.name=\"$name\"" --set train.steps=300 --set train.log_every=25 \
      --set train.checkpoint_every=300 --set train.sample_every=0 --set train.warmup_steps=100 2>&1 \
      | tee "$out/train_$name.log"
  cp "$runs/$name/metrics.jsonl" "$out/train_$name.jsonl" 2>/dev/null
done

# 3. gentool bench against diffusers' UNet2DModel in the same process
common=(--json --batch 128 --peak-tflops 800)
timeout 420 "$py" -m gentool bench recipes/cifar_cfg.toml "${common[@]}" --steps 50 --warmup 10 --sample-batch 256 \
    --compare diffusers > "$out/bench_compiled.json" 2> "$out/bench_compiled.log"
timeout 300 "$py" -m gentool bench recipes/cifar_cfg.toml "${common[@]}" --no-compile --no-channels-last \
    --compare diffusers > "$out/bench_eager.json" 2> "$out/bench_eager.log"
tail -n 3 "$out"/bench_*.log
echo "results in $out"
