"""Training the ``kl`` autoencoder (``gentool autoencoder train``) and measuring it (``gentool autoencoder test``).

The loss of one image (Rombach et al. 2022, sec. 3.1; the LDM code's
``LPIPSWithDiscriminator`` without its perceptual and adversarial terms):

    L = sum |x - D(z)| + kl_weight * KL(q(z | x) || N(0, I)),   z ~ q(z | x) = N(mean, exp(logvar))

with both sums over the image's (or the latent's) values, averaged over the
batch, and Adam with betas (0.5, 0.9). The LPIPS term of the LDM autoencoders
needs a pretrained VGG (a download) and their patch discriminator doubles the
cost of a step; neither is cheap, so neither is here: the decoder's images
are blurrier than theirs at the same compression.

Training is a function of ``[run] seed`` and the step alone: the batch of step
k is the k-th slice of epoch ``k // (N // batch)``'s permutation (seeded
``seed + epoch``), and the posterior noise and the data set's own randomness
(random flips) are seeded by ``(seed, k)``, so a run resumed from a checkpoint
continues exactly as one that was not stopped.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

import gentool
from gentool import RecipeError, UsageError

from gentool_autoencoders.files import (CHECKPOINTS, FORMAT, WEIGHTS, checkpoint_files, load_tensors, save_tensors,
                                        state_fingerprint)
from gentool_autoencoders.kl import KLAutoencoder

KEEP = 2  # checkpoints kept


def kl_table(recipe) -> dict[str, Any]:
    """The options of the recipe's ``[autoencoder]``, which must be ``kl`` (the one gentool trains)."""
    spec = recipe.autoencoder
    if spec is None or spec.name != "kl":
        name = spec.name if spec is not None else "none"
        raise UsageError(f"{recipe.source}: [autoencoder] is {name!r}; gentool trains the \"kl\" autoencoder "
                         "(name = \"kl\" with a path to write it to); diffusers_kl comes trained")
    if recipe.data is None:
        raise RecipeError(recipe.source, "data", "training the autoencoder needs a [data] table to learn from")
    return dict(spec.options)


def architecture(options: dict[str, Any]) -> dict[str, Any]:
    keys = ("in_channels", "latent_channels", "channels", "channel_mult", "num_res_blocks")
    return {k: options[k] for k in keys}


def data_split(recipe, split: str):
    factory = gentool.registry().get("data_source", recipe.data.name).factory
    try:
        return factory(split, **recipe.data.options)
    except ValueError as exc:
        if isinstance(exc, gentool.GentoolError):
            raise
        raise RecipeError(recipe.source, f"data ({recipe.data.name})", str(exc)) from exc


def build_autoencoder(recipe):
    """The recipe's ``[autoencoder]`` from the registry (any of them: ``test`` measures every kind)."""
    spec = recipe.autoencoder
    factory = gentool.registry().get("autoencoder", spec.name).factory
    try:
        return factory(**spec.options)
    except ValueError as exc:
        if isinstance(exc, gentool.GentoolError):
            raise
        raise RecipeError(recipe.source, f"autoencoder ({spec.name})", str(exc)) from exc


def batch_indices(n: int, batch: int, seed: int, step: int) -> list[int]:
    """The images of step ``step``: a slice of the permutation of its epoch (seeded ``seed + epoch``)."""
    per_epoch = n // batch
    epoch, b = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
    return perm[b * batch:(b + 1) * batch].tolist()


def kl_loss(model: KLAutoencoder, x: Tensor, kl_weight: float, generator: torch.Generator) -> dict[str, Tensor]:
    """The loss of a batch (see the module's docstring) and its parts (L1 per value, KL per image)."""
    mean, logvar = model.moments(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=generator, device=x.device)
    rec = (x - model.decode(z)).abs().flatten(1).sum(1).mean()
    kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
    return {"loss": rec + kl_weight * kl, "l1": rec / x[0].numel(), "kl": kl}


def save_checkpoint(folder: Path, model: KLAutoencoder, opt: torch.optim.Optimizer, step: int) -> Path:
    """Weights and Adam's state at ``step`` (safetensors, atomic); keeps the newest :data:`KEEP`."""
    st = opt.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for i, moments in st["state"].items():
        tensors.update({f"optim.{i}.{k}": torch.as_tensor(v) for k, v in moments.items()})
    path = save_tensors(folder / CHECKPOINTS / f"step_{step:08d}.safetensors", tensors,
                        {"format": FORMAT, "config": model.config(), "step": str(step),
                         "param_groups": st["param_groups"]})
    for old in checkpoint_files(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def resume(folder: Path, model: KLAutoencoder, opt: torch.optim.Optimizer, log: Callable[[str], None]) -> int:
    """Load the newest checkpoint that loads into ``model`` and ``opt``; its step (0: none)."""
    for path in reversed(checkpoint_files(folder)):
        try:
            tensors, meta = load_tensors(path)
            if json.loads(meta.get("config", "{}")) != model.config():
                raise ValueError(f"{path}: written for other architecture options than the recipe's")
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            state: dict[int, dict[str, Tensor]] = {}
            for k, v in tensors.items():
                if k.startswith("optim."):
                    _, i, name = k.split(".", 2)
                    state.setdefault(int(i), {})[name] = v
            opt.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
            step = int(meta["step"])
            log(f"resuming from {path} (step {step})")
            return step
        except (ValueError, KeyError, RuntimeError) as exc:
            log(f"warning: cannot resume from {path}: {str(exc)[:200]}")
    return 0


def train_autoencoder(recipe, *, device: str | None = None, log: Callable[[str], None] = print,
                      progress: bool = True, test_images: int = 0) -> dict[str, Any]:
    """Train the recipe's ``kl`` autoencoder on its ``[data]`` train split into its ``path``; measure it.

    Resumes from the newest checkpoint in ``path/checkpoints``; writes
    ``path/autoencoder.safetensors`` at the end, then the test split's
    reconstruction error (:func:`test_autoencoder`, over ``test_images``
    images; 0: all). Returns that report.
    """
    o = kl_table(recipe)
    folder, seed = Path(o["path"]), recipe.run.seed
    dev = gentool.resolve_device(device or recipe.run.device)
    data = data_split(recipe, "train")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = KLAutoencoder(**architecture(o), path=folder)
    try:
        model.latent_shape(tuple(data[0][0].shape))
    except ValueError as exc:
        raise RecipeError(recipe.source, "autoencoder", f"cannot encode the data set's images: {exc}") from None
    if len(data) < o["batch_size"]:
        raise RecipeError(recipe.source, "autoencoder.batch_size", f"{o['batch_size']} is more than the "
                          f"{len(data)} training images")
    model.to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=o["lr"], betas=(0.5, 0.9))
    step = resume(folder, model, opt, log)
    log(f"training autoencoder kl into {folder}: {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{len(data)} images, step {step} of {o['steps']} on {dev}")
    metrics = folder / "metrics.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    start, sums = time.perf_counter(), {"loss": 0.0, "l1": 0.0, "kl": 0.0}
    with gentool.make_progress(transient=True) as bar:
        task = bar.add_task("autoencoder", total=o["steps"], completed=step, visible=progress)
        while step < o["steps"]:
            torch.manual_seed(seed * 1_000_003 + step)  # the data set's own randomness (flips) is the step's
            x = torch.stack([data[i][0] for i in batch_indices(len(data), o["batch_size"], seed, step)]).to(dev)
            generator = torch.Generator(device=dev).manual_seed(seed * 1_000_003 + step)
            parts = kl_loss(model, x, o["kl_weight"], generator)
            opt.zero_grad(set_to_none=True)
            parts["loss"].backward()
            opt.step()
            step += 1
            for k in sums:
                sums[k] += float(parts[k].detach())
            if step % o["log_every"] == 0 or step == o["steps"]:
                n = o["log_every"] if step % o["log_every"] == 0 else step % o["log_every"]
                record = {"step": step, **{k: v / n for k, v in sums.items()},
                          "s_per_step": (time.perf_counter() - start) / n}
                with open(metrics, "a", encoding="utf-8") as f:
                    f.write(json.dumps(record) + "\n")
                log(f"step {step}: L1 {record['l1']:.4f} per value, KL {record['kl']:.1f} per image")
                start, sums = time.perf_counter(), {k: 0.0 for k in sums}
            if step % o["checkpoint_every"] == 0 or step == o["steps"]:
                save_checkpoint(folder, model, opt, step)
            bar.advance(task)
    model.eval()
    save_tensors(folder / WEIGHTS, model.state_dict(), {"format": FORMAT, "config": model.config(),
                                                        "step": str(step), "data": recipe.data.to_dict()})
    log(f"wrote {folder / WEIGHTS} (step {step}, weights {state_fingerprint(model)[:12]})")
    return test_autoencoder(recipe, device=device, images=test_images, log=log)


@torch.no_grad()
def reconstruction_error(autoencoder, data, device: torch.device, *, images: int = 0,
                         batch: int = 64) -> tuple[dict[str, float], Tensor, Tensor]:
    """MSE, L1 and PSNR of D(E(x)) against x (on the [-1, 1] scale; PSNR with the peak-to-peak 2) over
    ``images`` images of ``data`` (0: all); and the first 8 inputs and their reconstructions."""
    n = len(data) if not images else min(images, len(data))
    sq, ab, count, shown = 0.0, 0.0, 0, None
    for lo in range(0, n, batch):
        x = torch.stack([torch.as_tensor(data[i][0]) for i in range(lo, min(lo + batch, n))]).to(device)
        r = autoencoder.decode(autoencoder.encode(x)).clamp(-1, 1)
        sq += float((r - x).double().square().sum())
        ab += float((r - x).double().abs().sum())
        count += x.numel()
        if shown is None:
            shown = (x[:8].cpu(), r[:8].cpu())
    mse = sq / count
    return {"mse": mse, "l1": ab / count, "psnr": 10 * math.log10(4.0 / mse) if mse > 0 else math.inf,
            "images": n}, shown[0], shown[1]


def test_autoencoder(recipe, *, device: str | None = None, images: int = 0,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """The recipe's ``[autoencoder]`` on its test split: ``reconstruction.json`` and ``reconstruction.png``.

    Written into the ``kl`` autoencoder's folder, or for another autoencoder
    into the run directory. Returns the report.
    """
    dev = gentool.resolve_device(device or recipe.run.device)
    autoencoder = build_autoencoder(recipe).to(dev).eval()
    missing = getattr(autoencoder, "missing_weights", lambda: None)()
    if missing:
        raise UsageError(f"{recipe.source}: autoencoder {recipe.autoencoder.name!r}: {missing}")
    data = data_split(recipe, "test")
    metrics, x, r = reconstruction_error(autoencoder, data, dev, images=images)
    folder = Path(recipe.autoencoder.options["path"]) if recipe.autoencoder.name == "kl" else recipe.run_dir
    report = {"autoencoder": recipe.autoencoder.to_dict(), "fingerprint": getattr(autoencoder, "fingerprint", ""),
              "data": recipe.data.to_dict(), "split": "test", **metrics,
              "latent_shape": list(autoencoder.latent_shape(tuple(x.shape[1:])))}
    folder.mkdir(parents=True, exist_ok=True)
    gentool.atomic_write_text(folder / "reconstruction.json", json.dumps(report, indent=2) + "\n")
    gentool.save_grid(torch.cat([x, r]), folder / "reconstruction.png", nrow=x.shape[0])
    log(f"reconstruction of {metrics['images']} test images: MSE {metrics['mse']:.4g}, L1 {metrics['l1']:.4g} "
        f"(on [-1, 1]), PSNR {metrics['psnr']:.2f} dB; wrote {folder / 'reconstruction.json'} and "
        f"{folder / 'reconstruction.png'}")
    return report
