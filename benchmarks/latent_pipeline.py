"""The butterflies latent pipeline on an image folder, timed (docs/latent.md): autoencoder, cache, diffusion, tasks.

    python benchmarks/latent_pipeline.py OUT_DIR [--recipe recipes/butterflies_latent_dit.toml]
        [--ae-steps 300] [--steps 300] [--threads 1] [--fashion-steps 1000]

The Smithsonian butterflies cannot be downloaded offline, so the recipe runs
as shipped with its [data] swapped for a folder of 256 + 64 smooth 64x64
colour images (the tests' generator, tests/_latent.py) and, for the CPU, a
DiT of depth 4 and width 128 (the shipped DiT-S/2 is timed for one step, on
latents and on pixels). Then, on real data: a kl autoencoder of the same
levels on Fashion-MNIST (28x28, 4x7x7 latents) and its reconstruction error
on the test split (needs the data in ./data or Debian's dataset-fashion-mnist).
Writes OUT_DIR/report.json and the runs under OUT_DIR.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path

import torch

import gentool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from _latent import smooth_images  # noqa: E402

from gentool_autoencoders.train import train_autoencoder  # noqa: E402


def step_time(net, x, repeats: int = 2) -> float:
    """Seconds of one forward and backward pass of ``net`` on ``x`` (the mean of ``repeats`` after a warm-up)."""
    t = torch.zeros(x.shape[0], dtype=torch.long)
    for k in range(repeats + 1):
        if k == 1:
            start = time.perf_counter()
        net(x, t, None).square().mean().backward()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "butterflies_latent_dit.toml"))
    ap.add_argument("--ae-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--fashion-steps", type=int, default=1000)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out: dict = {"torch": torch.__version__, "threads": a.threads, "cpu": _cpu()}
    images = smooth_images(a.out / "images", n_train=256, n_test=64, size=64)
    data = tomllib.loads(Path(a.recipe).read_text(encoding="utf-8"))
    data["run"].update(output_dir=str(a.out / "runs"), device="cpu", threads=a.threads)
    data["data"] = {"name": "image_folder", "root": str(images), "image_size": 64, "random_flip": True}
    data["autoencoder"].update(path=str(a.out / "kl"), steps=a.ae_steps, batch_size=16, lr=1e-3,
                               checkpoint_every=a.ae_steps, log_every=100)
    shipped = dict(data["denoiser"])
    data["train"].update(steps=a.steps, batch_size=32, checkpoint_every=a.steps, sample_every=0, log_every=100)
    data["sampler"]["steps"] = 50
    data["tasks"] = [{"name": "sample", "n": 16}, {"name": "inpaint", "indices": [0, 1, 2, 3], "steps": 50}]
    if shipped["name"] == "dit":
        data["denoiser"].update(size="S", depth=4, hidden_size=128, num_heads=4)
    recipe_file = a.out / "recipe.toml"
    import tomli_w

    recipe_file.write_text(tomli_w.dumps(data), encoding="utf-8")

    t0 = time.perf_counter()
    report = train_autoencoder(gentool.load_recipe(recipe_file), log=print, progress=False)
    out["autoencoder"] = {"steps": a.ae_steps, "seconds": time.perf_counter() - t0,
                          **{k: report[k] for k in ("mse", "l1", "psnr", "images", "latent_shape")}}
    run = gentool.build(gentool.load_recipe(recipe_file), device="cpu")
    t0 = time.perf_counter()
    latents = run.latent_dataset("train")
    out["cache"] = {"latents": len(latents), "seconds": time.perf_counter() - t0, "scale_factor": run.scale_factor}
    t0 = time.perf_counter()
    result = gentool.run_recipe(recipe_file, progress=False, log=print)
    out["diffusion"] = {"denoiser": data["denoiser"], "steps": a.steps, "batch": 32,
                        "parameters": sum(p.numel() for p in result.run.model.parameters()),
                        "seconds_with_tasks": time.perf_counter() - t0,
                        "tasks": {n: r.metrics for n, r in result.tasks}}
    rows = [json.loads(line) for line in (result.run.run_dir / "metrics.jsonl").read_text().splitlines()]
    out["diffusion"]["loss"] = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    out["diffusion"]["img_per_s"] = [r["img_per_s"] for r in rows if "img_per_s" in r][-1]

    # the shipped denoiser, one training step of batch 4: on the 4x16x16 latents, and on 3x64x64 pixels
    from gentool_dit.dit import dit
    from gentool_unet.unet import unet

    make = dit if shipped["name"] == "dit" else unet
    options = {k: v for k, v in shipped.items() if k != "name"}
    torch.manual_seed(0)
    latent_net = make(**options)
    pixel_net = make(**{**options, "in_channels": 3, "image_size": 64})
    out["one_step_batch4_s"] = {"latent 4x16x16": step_time(latent_net, torch.randn(4, 4, 16, 16)),
                                "pixel 3x64x64": step_time(pixel_net, torch.randn(4, 3, 64, 64), repeats=1)}
    print(json.dumps(out["one_step_batch4_s"]))
    if a.fashion_steps:
        out["fashion_mnist"] = fashion(a, data)
    (a.out / "report.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "diffusion"}, indent=2))


def fashion(a, data: dict) -> dict:
    """A kl autoencoder of the recipe's levels (1 channel, width 32, one block a level) trained on Fashion-MNIST;
    its reconstruction of the first 2,000 test images."""
    import tomli_w

    fm = {"run": data["run"], "data": {"name": "fashion_mnist", "root": "data"},
          "autoencoder": {**data["autoencoder"], "path": str(a.out / "kl_fashion"), "in_channels": 1,
                          "channels": 32, "num_res_blocks": 1, "steps": a.fashion_steps, "batch_size": 32,
                          "lr": 2e-3, "checkpoint_every": a.fashion_steps},
          "denoiser": {"name": "unet", "in_channels": 4, "image_size": 7}, "train": {"steps": 0}}
    path = a.out / "fashion.toml"
    path.write_text(tomli_w.dumps(fm), encoding="utf-8")
    t0 = time.perf_counter()
    report = train_autoencoder(gentool.load_recipe(path), log=print, progress=False, test_images=2000)
    seconds = time.perf_counter() - t0
    return {"steps": a.fashion_steps, "seconds_with_test": seconds,
            **{k: report[k] for k in ("mse", "l1", "psnr", "images", "latent_shape")}}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
