"""1000-step ancestral sampling of 256 CIFAR-sized images through Run.eps_fn (compiled, CUDA graphs), guided (w = 2) and not.

    python benchmarks/ancestral1000.py OUT.json      (CUDA only; the recipe is recipes/cifar_cfg.toml, untrained weights)
"""
import json, sys, time, torch, gentool
recipe = gentool.load_recipe("recipes/cifar_cfg.toml", overrides=["train.steps=0"])
run = gentool.build(recipe)
out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
fn = run.sampler("ancestral")
for w in (2.0, 0.0):
    labels = torch.arange(256) % 10
    eps_fn = run.eps_fn(labels, w)  # compiled once, CUDA graphs; the sampler calls it 1000 times
    g = run.generator(0)
    fn(eps_fn, run.diffusion, run.noise(256, g), steps=4, generator=g)  # compile and record the graphs
    torch.cuda.synchronize(); t0 = time.perf_counter()
    x = fn(eps_fn, run.diffusion, run.noise(256, g), steps=1000, generator=g)
    torch.cuda.synchronize(); s = time.perf_counter() - t0
    out[f"w={w}"] = {"seconds": s, "img_per_s": 256 / s, "evals_per_s": 256 * 1000 * (2 if w else 1) / s,
                     "finite": bool(torch.isfinite(x).all())}
    print(f"ancestral 1000 steps, 256 images, w={w}: {s:.2f} s = {256 / s:.1f} img/s", flush=True)
json.dump(out, open(sys.argv[1], "w"), indent=2)
