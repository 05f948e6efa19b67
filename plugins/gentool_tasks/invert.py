"""The ``invert`` task: DDIM inversion of images to their start noise x_T, and back.

Song et al. (2020), sec. 4.3: the deterministic DDIM sampler (eta = 0) is a
discretised ODE, so running it backwards maps an image x_0 to a latent x_T
from which ``ddim`` (eta = 0, the same steps, no clipping) reconstructs it up
to the discretisation error (:func:`gentool.reverse.ddim_invert`). The
latents are written as ``latents.pt`` (a dict of tensors only: ``latents``
[N, C, H, W] and ``labels`` [N], -1 where there is none), which
``interpolate --mode slerp --latents latents.pt`` takes as its end points.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from gentool import TaskResult, atomic_save, brief, ddim_invert, progress_callback, save_grid

from gentool_tasks.inputs import load_inputs

#: reconstruct with the exact reverse of the inversion
RECONSTRUCT = {"eta": 0.0, "clip_denoised": False, "spacing": "uniform"}


@torch.no_grad()
def invert(
    run,
    out_dir: Path,
    *,
    indices: list[int] = [0, 1, 2, 3],
    split: Literal["train", "test"] = "test",
    images: list[str] = [],
    label: int | None = None,
    steps: int | None = None,
) -> TaskResult:
    """DDIM inversion: images to x_T and back; write ``latents.pt`` and ``reconstruction.png`` (inputs, then reconstructions).

    Metrics: ``reconstruction_rmse`` and ``reconstruction_max_error`` (on the
    [-1, 1] scale) of ``ddim`` (eta = 0, ``steps``) from the latents, and
    ``latent_std``, the latents' standard deviation (about 1 when the model
    maps the images to plausible noise).

    Args:
        indices: positions in the data set's ``split`` of the input images.
        split: the data split the indices refer to.
        images: image files to use instead of data-set images.
        label: class for a conditional model (default: each data-set image's own label; none for files).
        steps: DDIM steps each way (default: 100, or T if fewer on the
            discrete chain); the reconstruction error falls as they grow.
    """
    T = getattr(run.process, "num_timesteps", None)
    steps = (min(100, T) if T else 100) if steps is None else steps
    x, y = load_inputs(run, indices=indices, split=split, images=images, label=label)
    denoise = run.denoise_fn(y, 0.0)  # unguided: the ODE of the (conditional) model itself
    total = len(run.process.grid(steps))
    with progress_callback(total, "inversion") as cb:
        latents = ddim_invert(denoise, run.process, run.encode(x), steps=steps, callback=cb)  # a latent run: of E(x)
    recon = run.sample(x_T=latents, labels=y, guidance=0.0, steps=steps, sampler="ddim", sampler_options=RECONSTRUCT,
                       description="reconstruction")
    labels = y if y is not None else torch.full((x.shape[0],), -1, dtype=torch.long)
    out_dir = Path(out_dir)
    latents_file = out_dir / "latents.pt"
    atomic_save({"latents": latents.float().cpu().contiguous(), "labels": labels.cpu()}, latents_file)  # never 0 bytes
    grid = save_grid(torch.cat([x, recon.to(x.device)]), out_dir / "reconstruction.png", nrow=x.shape[0])
    err = (recon.to(x.device).double() - x.double())
    metrics = {"reconstruction_rmse": float(err.square().mean().sqrt()), "reconstruction_max_error": float(err.abs().max()),
               "latent_std": float(latents.double().std())}
    return TaskResult(files=[latents_file, grid], metrics=metrics)


def load_latents(path: str | Path) -> torch.Tensor:
    """The ``latents`` [N, C, H, W] of a ``latents.pt`` written by ``invert`` (tensors only, loaded safely)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such latents file (write one with `gentool invert`)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise  # a fault of the machine (one line already)
    except Exception as exc:  # noqa: BLE001 - truncated, not a torch file, or objects other than tensors (never unpickled)
        raise ValueError(f"{path}: not a latents file of `gentool invert` ({brief(exc, 200)}); "
                         "write one with `gentool invert`") from None
    if not isinstance(data, dict) or not isinstance(data.get("latents"), torch.Tensor) or data["latents"].ndim != 4:
        raise ValueError(f"{path}: not a latents file of `gentool invert` (a dict with a [N, C, H, W] 'latents' tensor)")
    return data["latents"]
