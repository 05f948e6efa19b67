"""The test-split loss at fixed timesteps, with fixed noise: comparable from step to step.

The recipe's objective (``ddpm``: L_simple, Ho et al. eq. 14) evaluated at
each chosen ``t`` instead of a drawn one: ``objective.loss`` of
``q_sample(x0, t, eps)`` averaged over the first images of the test split,
with ``eps`` drawn from a generator seeded with ``seed`` in a fixed order. Two calls with the same weights give the same
numbers; a change between calls is a change of the model.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Iterable, Iterator

import torch
from torch.utils.data import DataLoader

from gentool.engine.step import float_net
from gentool.errors import DataError
from gentool.parameterisation import parameterisation_of
from gentool.process import as_batch


def test_times(process, timesteps: Iterable[int]) -> tuple[list[int], list[float], str | None]:
    """The test loss's keys and times: the 0-based steps themselves on the discrete chain (clipped to T - 1),
    elsewhere the time k / 1000 of the way from the data to ``t_max`` (:meth:`Process.time_at`) for each k."""
    T = getattr(process, "num_timesteps", None)
    if getattr(process, "discrete", False) and T is not None:
        ts, note = resolve_timesteps(timesteps, T)
        return ts, ts, note
    ks, note = resolve_timesteps(timesteps, 1000)
    return ks, [process.time_at(k / 1000) for k in ks], note


def resolve_timesteps(timesteps: Iterable[int], num_timesteps: int) -> tuple[list[int], str | None]:
    """The distinct timesteps, ascending, with those ``>= T`` clipped to ``T - 1`` (and a note saying so)."""
    wanted = [int(t) for t in timesteps]
    if any(t < 0 for t in wanted):
        raise ValueError(f"timesteps are 0-based and must not be negative, got {wanted}")
    if not wanted:
        raise ValueError("no timesteps given for the test loss")
    too_big = [t for t in wanted if t >= num_timesteps]
    note = None
    if too_big:
        note = (f"test-loss timesteps {too_big} are not below T = {num_timesteps}; "
                f"using t = {num_timesteps - 1} (the noisiest step) instead")
    return sorted({min(t, num_timesteps - 1) for t in wanted}), note


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module.eval()`` for a block, then back to the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@torch.no_grad()
def test_losses(
    run,
    timesteps: Iterable[int],
    max_batches: int | None = 8,
    *,
    batch_size: int = 256,
    seed: int = 0,
    model: torch.nn.Module | None = None,
    split: str = "test",
    autocast: bool | None = None,
) -> dict[int, float]:
    """``{t: mean objective loss at t}`` on the first ``max_batches`` batches of ``split`` (None: all of it).

    ``model`` defaults to ``run.sampling_model`` (the EMA when there is one);
    the loss is the recipe's ``[objective]`` (``run.objective``); ``autocast`` defaults to bf16
    on CUDA as in training. Timesteps ``>= T`` are clipped to ``T - 1`` with a warning.
    """
    from gentool.engine.accel import uses_bf16

    process, device = run.process, run.device
    keys, ts, note = test_times(process, timesteps)
    if note:
        warnings.warn(note, stacklevel=3)  # the caller, past torch.no_grad's wrapper
    model = run.sampling_model if model is None else model
    autocast = uses_bf16(run) if autocast is None else autocast
    objective = run.objective
    net = float_net(model, autocast, device.type, process, parameterisation_of(objective))
    data = run.latent_dataset(split)  # the images, or in a latent run their latents
    loader = DataLoader(data, batch_size=min(batch_size, len(data)), shuffle=False)
    noise_gen = torch.Generator().manual_seed(seed)  # on the CPU: the same noise on every device
    sums = torch.zeros(len(ts), dtype=torch.float64, device=device)
    count = 0
    with eval_mode(model), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # a data set's own randomness (random flips) is fixed too
        for b, (x0, labels) in enumerate(loader):
            if max_batches is not None and b >= max_batches:
                break
            x0 = x0.to(device)
            labels = labels.to(device) if getattr(model, "conditioner", None) is not None else None
            for i, t in enumerate(ts):
                noise = torch.randn(x0.shape, generator=noise_gen).to(device)
                t_batch = as_batch(x0, t, process)
                per, _ = objective.loss(net, process, x0, labels, t_batch, noise)
                sums[i] += per.double().sum()
            count += x0.shape[0]
    if count == 0:
        raise DataError(f"the {split} split has no images for the test loss")
    return {k: float(v) / count for k, v in zip(keys, sums.tolist())}
