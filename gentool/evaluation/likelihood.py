"""Metrics on the test split: bits/dim (Ho et al. eq. 5) and the loss at fixed timesteps."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader

from gentool.evaluation.bpd import bits_per_dim
from gentool.sampling import make_denoise_fn


def test_split_batches(run, batch_size: int, max_batches: int):
    """``(x0, labels)`` batches of the test split on the run's device, at most ``max_batches`` (0: all)."""
    loader = DataLoader(run.dataset("test"), batch_size=batch_size, shuffle=False, num_workers=0)
    total = len(loader) if not max_batches else min(max_batches, len(loader))
    return total, ((x.to(run.device), y.to(run.device)) for _, (x, y) in zip(range(total), loader))


def bpd_metric(run, *, batch_size: int, max_batches: int = 0, timesteps: int = 0, seed: int = 0,
               bar=None) -> tuple[dict[str, float], int]:
    """Mean bits/dim over the test split with the sampling (EMA) model: metrics and image count.

    The reverse variance and x0 clipping are those of the recipe's sampler
    (ancestral's ``variance`` and ``clip_denoised``) where it has them, else
    sigma^2 = beta and clipping, as improved-diffusion's NLL script does. A
    model with a learned variance (the ``hybrid`` objective) uses its own
    sigma_t^2 (Nichol and Dhariwal 2021, eq. 15) in every term instead.
    A conditional model is scored on the true labels: log p(x | y).
    """
    space = getattr(run, "space", None)
    if space is not None and not space.identity:
        from gentool.errors import UsageError  # the one error of a latent run

        raise UsageError(f"bpd (bits/dim, Ho et al. eq. 5) scores 8-bit pixels through the chain's discretised "
                         f"decoder; this run diffuses the latents of autoencoder {run.space.name!r}, which have no "
                         "such decoder: leave bpd out of its metrics")
    options = run.recipe.sampler.options
    variance, clip = options.get("variance", "beta"), bool(options.get("clip_denoised", True))
    model = run.sampling_model.eval()
    generator = torch.Generator(device=run.device).manual_seed(seed)
    T = run.diffusion.num_timesteps
    per_batch = T if not timesteps or timesteps >= T - 1 else timesteps + 1
    total, batches = test_split_batches(run, batch_size, max_batches)
    task = bar.add_task("bits/dim (test split)", total=total * per_batch) if bar is not None else None
    advance = (lambda: bar.advance(task)) if bar is not None else None
    sums: dict[str, float] = {}
    count = 0
    for x0, labels in batches:
        denoise = make_denoise_fn(model, run.process, labels if model.conditioner is not None else None, 0.0)
        out = bits_per_dim(denoise, run.process, x0, timesteps=timesteps, variance=variance,
                           clip_denoised=clip, generator=generator, callback=advance)
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value.double().sum())
        count += x0.shape[0]
    names = {"bpd": "bpd", "prior": "bpd_prior", "decoder": "bpd_decoder", "vb": "bpd_vb"}
    return {names[k]: v / count for k, v in sums.items()}, count


def loss_t_metric(run, *, batch_size: int = 256, max_batches: int = 0) -> dict[str, float]:
    """The test-split L_simple at ``[train] test_loss_timesteps``: ``{"loss_t/<t>": value}``.

    Computed by :func:`gentool.engine.test_loss.test_losses` (fixed noise, the
    EMA model); timesteps at or above T are clipped to T - 1 there.
    """
    from gentool.engine.test_loss import test_losses

    losses = test_losses(run, run.recipe.train.test_loss_timesteps, max_batches=max_batches or None,
                         batch_size=batch_size)
    return {f"loss_t/{t}": float(v) for t, v in losses.items()}
