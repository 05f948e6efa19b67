#!/usr/bin/env bash
# One prepared GPU session for the speed goals (issue 17), sized for a short lease (~12 minutes).
#
#   bash benchmarks/gpu_session.sh [RESULTS_DIR]     (default: $OUT, else ./gpu_results)
#
# Phases run in order of importance, each under a deadline, so a short lease still brings back
# the key numbers: (1) gentool bench vs diffusers, compiled, bf16, batch 128 / 256 sample rows;
# (2) end-to-end 1000-step ancestral sampling of 256 images through Run.sample, guided and not;
# (3) a torch.profiler table of compiled training steps; (4) the eager bench; (5) a short
# `gentool run` of the CIFAR-10 network, compiled bf16 vs eager fp32 (loss curves);
# (6) the CUDA-only tests. At most 8 files come back (the lease's limit). Measured with it (and by
# hand, phase by phase, when the first call ran out of time): docs/performance.md, "Measured on a GPU".
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu_results}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 GENTOOL_NO_PROGRESS=1
py=${PYTHON:-python3}
budget=${GPU_BUDGET_S:-720}
start=$SECONDS
left() { echo $(( budget - (SECONDS - start) )); }
log="$out/session.log"

if [ -d .whl ] && ! "$py" -c 'import gentool, torch_fidelity, diffusers' 2>/dev/null; then
  "$py" -m pip install -q --no-index --no-deps .whl/*.whl >>"$log" 2>&1 \
    && "$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . >>"$log" 2>&1 \
    || { echo "could not install gentool from .whl/"; tail -20 "$log"; exit 1; }
fi
{ nvidia-smi --query-gpu=name,clocks.max.sm,power.limit,memory.total --format=csv
  "$py" -c 'import torch, sys; print("torch", torch.__version__, "cuda", torch.version.cuda, "python", sys.version.split()[0])'
} 2>&1 | tee -a "$log"

# 1. gentool bench against diffusers' UNet2DModel in the same process, compiled, bf16
echo "== bench compiled ($(left) s left)" | tee -a "$log"
# gentool alone first, then with diffusers (inductor's cache makes gentool's second compile quick); a cold
# compile of all four graphs (gentool and diffusers, training and sampling) took over 250 s on an H200
timeout $(( $(left) - 300 )) "$py" -m gentool bench recipes/cifar_cfg.toml --json --batch 128 --steps 30 --warmup 5 \
    --sample-batch 256 --peak-tflops 800 > "$out/bench_compiled.json" 2>>"$log"
echo "rc $?" >>"$log"
timeout $(( $(left) - 200 )) "$py" -m gentool bench recipes/cifar_cfg.toml --json --batch 128 --steps 30 --warmup 5 \
    --sample-batch 256 --peak-tflops 800 --compare diffusers > "$out/bench_compiled_vs_diffusers.json" 2>>"$log"
echo "rc $?" >>"$log"

# 2. 1000-step ancestral sampling of 256 images, end to end through Run.sample (the recipe's network)
echo "== ancestral 1000 steps ($(left) s left)" | tee -a "$log"
timeout $(( $(left) - 150 )) "$py" benchmarks/ancestral1000.py "$out/sample_1000.json" 2>>"$log"
echo "rc $?" >>"$log"

# 3. where the compiled training step spends its time
echo "== profile ($(left) s left)" | tee -a "$log"
timeout $(( $(left) - 130 )) "$py" - "$out/profile.txt" <<'PY' 2>>"$log"
import sys, torch, gentool
from torch.profiler import ProfilerActivity, profile
from gentool.engine.step import diffusion_loss
from gentool.fast import prepare_for_speed
recipe = gentool.load_recipe("recipes/cifar_cfg.toml", overrides=["train.steps=0", "train.ema_decay=0"])
run = gentool.build(recipe)
fast = prepare_for_speed(run.model, "cuda", channels_last=True, compile=True)
opt = torch.optim.AdamW(run.model.parameters(), lr=2e-4, fused=True)
g = torch.Generator("cuda").manual_seed(0)
x0 = torch.rand(128, 3, 32, 32, device="cuda") * 2 - 1
labels = torch.arange(128, device="cuda") % 10
def step():
    loss = diffusion_loss(fast, run.diffusion, x0, labels, g, autocast=True)
    opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
for _ in range(8): step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(10): step()
    torch.cuda.synchronize()
table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40)
open(sys.argv[1], "w").write(table)
print(table[:3000])
PY
echo "rc $?" >>"$log"

# 4. the eager bench (no compile, no channels-last), the same comparison
echo "== bench eager ($(left) s left)" | tee -a "$log"
timeout $(( $(left) - 100 )) "$py" -m gentool bench recipes/cifar_cfg.toml --json --batch 128 --steps 20 --warmup 5 \
    --sample-batch 256 --peak-tflops 800 --no-compile --no-channels-last --compare diffusers \
    > "$out/bench_eager.json" 2>>"$log"
echo "rc $?" >>"$log"

# 5. the training engine: compiled bf16 vs eager fp32 on CIFAR-sized synthetic data
recipe=$(mktemp --suffix=.toml)
"$py" - recipes/cifar_cfg.toml "$recipe" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
toy = '[data]\nname = "toy"\nn = 20000\nimage_size = 32\nchannels = 3\nnum_classes = 10\n\n'
text = re.sub(r"\[data\]\n.*?\n\n", toy, text, count=1, flags=re.S)
open(sys.argv[2], "w").write(text)
PY
runs=$(mktemp -d)
for name in compiled fp32; do
  echo "== gentool run $name ($(left) s left)" | tee -a "$log"
  extra=(--set run.compile=true)
  [ "$name" = fp32 ] && extra=(--set run.compile=false --set train.precision=fp32)
  timeout $(( $(left) - 45 )) "$py" -m gentool run "$recipe" --no-tasks "${extra[@]}" \
      --set "run.output_dir=\"$runs\"" --set "run.name=\"$name\"" --set train.steps=200 --set train.log_every=20 \
      --set train.checkpoint_every=200 --set train.sample_every=0 --set train.warmup_steps=50 >>"$log" 2>&1
  echo "rc $?" >>"$log"
  { echo "# $name"; cat "$runs/$name/metrics.jsonl" 2>/dev/null; } >> "$out/train_runs.jsonl"
done

# 6. the CUDA-only correctness tests, with what time is left
echo "== cuda tests ($(left) s left)" | tee -a "$log"
timeout $(( $(left) > 20 ? $(left) : 20 )) "$py" -m pytest -q -x -rs -p no:cacheprovider \
    tests/test_fast_path.py tests/engine/test_engine_sync.py -k "cuda or sync" > "$out/cuda_tests.log" 2>&1
echo "rc $?" >>"$log"
tail -n 5 "$out/cuda_tests.log"
"$py" - "$out" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("bench_compiled.json", "bench_compiled_vs_diffusers.json", "bench_eager.json"):
    try:
        r = json.loads((out / name).read_text())
    except Exception as exc:
        print(name, "missing:", exc); continue
    d = r.get("compare", {}).get("diffusers", {})
    print(f"{name}: train {r['train_img_per_s']:.0f} img/s (diffusers {d.get('train_img_per_s', 0):.0f}), "
          f"sample {r['sample_evals_per_s']:.0f} evals/s (diffusers {d.get('sample_evals_per_s', 0):.0f})")
PY
echo "total $((SECONDS - start)) s"
