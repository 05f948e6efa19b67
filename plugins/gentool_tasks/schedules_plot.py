"""The ``schedules`` task: alphas_cumprod and its square root for several schedules, side by side.

alpha-bar_t = prod_{s <= t} (1 - beta_s) (Ho et al. eq. 4) is the fraction of
signal variance left in x_t; sqrt(alpha-bar_t) and sqrt(1 - alpha-bar_t) are
the signal and noise coefficients of q(x_t | x_0). Drawn with matplotlib's
object API on the Agg canvas (no pyplot, no global backend switch).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gentool import TaskResult


def schedule_curves(registry, names: list[str], timesteps: int, options: dict[str, dict] | None = None) -> dict[str, Tensor]:
    """``{name: alphas_cumprod}`` (float64 ``[T]``) of each registered schedule, with ``timesteps`` = T."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    curves = {}
    for name in names:
        factory = registry.get("schedule", name).factory
        betas = torch.as_tensor(factory(**{**(options or {}).get(name, {}), "timesteps": timesteps}), dtype=torch.float64)
        curves[name] = torch.cumprod(1.0 - betas, 0)
    return curves


def plot_curves(curves: dict[str, Tensor], path: Path) -> Path:
    """Two panels: alpha-bar_t, and sqrt(alpha-bar_t) (solid) with sqrt(1 - alpha-bar_t) (dashed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax_a, ax_s = fig.subplots(1, 2)
    for k, (name, abar) in enumerate(curves.items()):
        color = f"C{k}"
        t = torch.arange(len(abar)).numpy()
        ax_a.plot(t, abar.numpy(), color=color, label=name)
        ax_s.plot(t, abar.sqrt().numpy(), color=color, label=name)
        ax_s.plot(t, (1 - abar).sqrt().numpy(), color=color, linestyle="--")
    T = len(next(iter(curves.values())))
    ax_a.set(title=f"alphas_cumprod (T = {T})", xlabel="t (0-based step)", ylabel=r"$\bar\alpha_t$", ylim=(0, 1.02))
    # in mathtext: spelt out ("sqrt(alpha-bar_t) ...") the title ran past the right edge
    ax_s.set(title=r"$\sqrt{\bar\alpha_t}$ (solid) and $\sqrt{1 - \bar\alpha_t}$ (dashed)", xlabel="t (0-based step)",
             ylim=(0, 1.02))
    for ax in (ax_a, ax_s):
        ax.legend()
        ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def schedules(run, out_dir: Path, *, names: list[str] = [], timesteps: int | None = None) -> TaskResult:
    """Plot alphas_cumprod and its square root for several schedules; write ``schedules.png``.

    Works without a trained run (``run = None``, as ``gentool schedules`` calls
    it). With a run, its own schedule is drawn with its recipe options.
    Metrics: ``<name>.alphas_cumprod_T``, the signal left at the last step.

    Args:
        names: registered schedule names to compare (default: every registered schedule).
        timesteps: T for every schedule (default: the run's T, else 1000).
    """
    if run is not None:
        if run.recipe.schedule is None:
            raise ValueError(f"process {run.recipe.process.name!r} takes no schedule, so this run has none to plot; "
                             "`gentool schedules` without a run plots the registered ones")
        registry, spec = run.registry, run.recipe.schedule
        own = {spec.name: {k: v for k, v in spec.options.items() if k != "timesteps"}}
        timesteps = run.diffusion.num_timesteps if timesteps is None else timesteps
    else:
        import gentool

        registry, own = gentool.registry(), {}
        timesteps = 1000 if timesteps is None else timesteps
    names = list(names) or registry.names("schedule")
    curves = schedule_curves(registry, names, timesteps, own)
    path = plot_curves(curves, Path(out_dir) / "schedules.png")
    return TaskResult(files=[path], metrics={f"{n}.alphas_cumprod_T": float(a[-1]) for n, a in curves.items()})
