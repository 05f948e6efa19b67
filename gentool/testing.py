"""Contract checks for gentool components, for plugin authors' own tests.

Each ``check_*`` function exercises one component the way the core will use
it and raises :class:`AssertionError` with a message naming the component and
the rule it broke; it returns quietly when all is well. gentool's built-ins
pass the same checks (``tests/test_contracts.py``). In a plugin's tests::

    from gentool.testing import check_schedule, check_sampler

    def test_quadratic_schedule():
        check_schedule(quadratic, timesteps=50)

    def test_my_sampler():
        check_sampler(my_sampler)

The sampler check runs the sampler on a data distribution whose optimal noise
prediction is known in closed form (a Gaussian), so it also catches a sampler
that runs but produces the wrong distribution.
"""

from __future__ import annotations

import functools
import inspect
import math
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from gentool.diffusion import Diffusion
from gentool.interfaces import TaskResult
from gentool.parameterisation import Denoised, parameterisation_of
from gentool.process import ContinuousProcess, SPACINGS, as_batch
from gentool.process import check_process as check_process_members
from gentool.kinds import KINDS
from gentool.options import OptionError, check_options, option_docs, recipe_parameters, type_hints

PREDICTIONS = ("eps", "x0", "v")
#: Positional parameters the core supplies to each kind of factory (from the table of kinds).
POSITIONAL = {kind.name: kind.positional for kind in KINDS}
#: Keyword parameters the core supplies (never recipe options).
RESERVED = {kind.name: kind.reserved for kind in KINDS if kind.reserved}
#: Keyword parameters the core supplies when a factory declares them (never recipe options).
SUPPLIED = {kind.name: kind.supplied for kind in KINDS if kind.supplied}


def _label(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def _require(ok: bool, who: str, message: str) -> None:
    if not ok:
        raise AssertionError(f"{who}: {message}")


# -- the factory convention --------------------------------------------------

def check_factory(kind: str, factory: Callable[..., Any]) -> None:
    """The calling convention of a ``kind`` factory and its recipe reference.

    Positional parameters are exactly those the core supplies (see
    :data:`POSITIONAL`); every other parameter is keyword-only, annotated and
    documented in the docstring's ``Args:`` block, and the docstring has a
    one-line summary. (Commands are Typer functions: see :func:`check_command`.)
    """
    who = f"{kind} {_label(factory)}"
    _require(kind in POSITIONAL and kind != "command", who,
             f"unknown kind; kinds are {', '.join(k for k in POSITIONAL if k != 'command')}")
    _require(callable(factory), who, "is not callable")
    target = factory.__init__ if inspect.isclass(factory) else factory
    params = list(inspect.signature(target).parameters.values())
    if inspect.isclass(factory):
        params = params[1:]  # self
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    want = list(POSITIONAL[kind])
    _require(positional == want, who, f"positional parameters must be {want} (supplied by the core), got {positional}; "
             "make recipe options keyword-only (after `*`)")
    reserved = RESERVED.get(kind, ())
    missing = [r for r in reserved if r not in recipe_parameters(factory)]
    _require(not missing, who, f"must accept the keyword-only parameters {list(reserved)}; missing {missing}")
    options = [name for name in recipe_parameters(factory) if name not in reserved + SUPPLIED.get(kind, ())]
    hints = type_hints(factory)
    unannotated = [n for n in options if n not in hints and recipe_parameters(factory)[n].annotation is inspect.Parameter.empty]
    _require(not unannotated, who, f"options without a type annotation (recipes cannot be checked): {unannotated}")
    doc = inspect.getdoc(factory) or ""
    _require(bool(doc.strip()), who, "has no docstring; its first line is the summary `gentool list-plugins` shows")
    undocumented = [n for n in options if n not in option_docs(factory)]
    _require(not undocumented, who, f"options missing from the docstring's Args: block (the recipe reference): {undocumented}")


def _resolve(kind: str, factory: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` validated as a recipe table would be, defaults filled in."""
    try:
        return check_options(factory, options, reserved=RESERVED.get(kind, ()) + SUPPLIED.get(kind, ()))
    except OptionError as exc:
        raise AssertionError(f"{kind} {_label(factory)}: options {options}: {exc}") from None


# -- schedules ---------------------------------------------------------------

def check_schedule(factory: Callable[..., Tensor], **options: Any) -> Tensor:
    """A schedule gives float64 betas in (0, 1), length ``timesteps``, reproducibly.

    Also checks that alpha-bar = cumprod(1 - beta) strictly decreases (every
    step adds noise) and that :class:`gentool.Diffusion` accepts the betas.
    Returns the betas.
    """
    check_factory("schedule", factory)
    resolved = _resolve("schedule", factory, options)
    who = f"schedule {_label(factory)}({', '.join(f'{k}={v!r}' for k, v in resolved.items())})"
    betas = factory(**resolved)
    _require(isinstance(betas, Tensor), who, f"must return a torch.Tensor of betas, got {type(betas).__name__}")
    _require(betas.dtype == torch.float64, who, f"betas must be float64 (precision of alpha-bar near t = T), got {betas.dtype}")
    _require(betas.ndim == 1 and betas.numel() >= 1, who, f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}")
    if "timesteps" in resolved:
        _require(betas.numel() == resolved["timesteps"], who, f"expected {resolved['timesteps']} betas (timesteps), got {betas.numel()}")
    _require(bool(torch.isfinite(betas).all()), who, "betas must be finite")
    outside = (betas <= 0) | (betas >= 1)
    outside[-1] = bool(betas[-1] <= 0) or bool(betas[-1] > 1)  # beta_T = 1: zero terminal SNR (Lin et al. 2024)
    bad = outside.nonzero().flatten().tolist()
    _require(not bad, who, f"every beta must lie in (0, 1), the last in (0, 1]; 0-based steps {bad[:5]} have "
             f"{betas[bad[:5]].tolist()}")
    abar = torch.cumprod(1.0 - betas, 0)  # Ho et al. eq. 4
    flat = (abar[1:] >= abar[:-1]).nonzero().flatten().tolist()
    _require(not flat, who, f"alphas_cumprod must strictly decrease; it does not after steps {flat[:5]}")
    _require(torch.equal(factory(**resolved), betas), who, "two calls with the same options gave different betas")
    Diffusion(betas)
    return betas


# -- denoisers and conditioners -------------------------------------------------

def _check_grads(module: nn.Module, who: str) -> None:
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    _require(bool(params), who, "has no trainable parameters")
    unused = [n for n, p in params if p.grad is None]
    _require(not unused, who, f"parameters that get no gradient (unused; DDP needs every parameter used): {unused[:5]}")
    _require(all(bool(torch.isfinite(p.grad).all()) for _, p in params), who, "non-finite gradients")
    _require(any(bool(p.grad.abs().sum() > 0) for _, p in params), who, "every gradient is zero: the output does not depend on the parameters")


def check_denoiser(net: nn.Module, x_shape: tuple[int, ...], *, timesteps: int = 1000, seed: int = 0) -> None:
    """A denoiser maps ``(x_t, t, cond)`` to a tensor of ``x_t``'s shape and dtype.

    ``x_shape`` is ``(B, C, H, W)`` with ``B >= 2``. Checks ``cond_dim``
    (what the output means is the objective's ``prediction``), finiteness,
    that each sample's output does not depend on the rest of the batch (in
    eval mode), and that the output is differentiable with every parameter
    receiving a gradient.
    """
    who = f"denoiser {type(net).__name__}"
    _require(isinstance(net, nn.Module), who, "must be a torch.nn.Module")
    _require(len(x_shape) == 4 and x_shape[0] >= 2, who, f"x_shape must be (B >= 2, C, H, W), got {x_shape}")
    _require(hasattr(net, "cond_dim"), who, "needs an attribute cond_dim (an int, or None if unconditional)")
    cond_dim = net.cond_dim
    _require(cond_dim is None or (isinstance(cond_dim, int) and cond_dim >= 1), who, f"cond_dim must be None or a positive int, got {cond_dim!r}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(x_shape, generator=g)
    t = torch.randint(0, timesteps, (x_shape[0],), generator=g)
    cond = torch.randn(x_shape[0], cond_dim, generator=g) if cond_dim else None
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            calls = [("net(x_t, t)", net(x, t))]
            if cond is not None:
                calls.append(("net(x_t, t, cond)", net(x, t, cond)))
            for call, out in calls:
                _require(isinstance(out, Tensor), who, f"{call} must return a tensor, got {type(out).__name__}")
                _require(tuple(out.shape) == tuple(x_shape), who, f"{call} returned shape {tuple(out.shape)}, expected x_t's {tuple(x_shape)}")
                _require(out.dtype == x.dtype, who, f"{call} returned {out.dtype}, expected x_t's {x.dtype}")
                _require(bool(torch.isfinite(out).all()), who, f"{call} returned non-finite values")
            out, alone = calls[-1][1], net(x[:1], t[:1], None if cond is None else cond[:1])
            _require(torch.allclose(alone, out[:1], atol=1e-4, rtol=1e-3), who,
                     "in eval mode a sample's output depends on the other samples in the batch")
        net.zero_grad(set_to_none=True)
        out = net(x, t, cond)
        _require(out.requires_grad, who, "the output is not differentiable (no autograd graph)")
        (out * torch.randn(out.shape, generator=g)).sum().backward()
        _check_grads(net, who)
    finally:
        net.zero_grad(set_to_none=True)
        net.train(was_training)


def check_conditioner(conditioner: nn.Module, dim: int) -> None:
    """A conditioner maps int64 labels ``[B]`` (``-1``: none) to ``[B, dim]``.

    In eval mode equal labels give equal rows, every ``-1`` gives the same
    null embedding and nothing is random; the output is differentiable.
    """
    who = f"conditioner {type(conditioner).__name__}"
    _require(isinstance(conditioner, nn.Module), who, "must be a torch.nn.Module")
    k = getattr(conditioner, "num_classes", None)
    _require(isinstance(k, int) and not isinstance(k, bool) and k >= 1, who, f"num_classes must be a positive int, got {k!r}")
    labels = torch.tensor([0, k - 1, -1, 0, -1], dtype=torch.long)
    was_training = conditioner.training
    conditioner.eval()
    try:
        out = conditioner(labels)
        _require(isinstance(out, Tensor) and tuple(out.shape) == (5, dim), who,
                 f"labels [5] must give [5, {dim}], got {tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        _require(out.is_floating_point() and bool(torch.isfinite(out).all()), who, "the embedding must be finite floats")
        _require(torch.equal(out[0], out[3]), who, "equal labels gave different embeddings in eval mode")
        _require(torch.equal(out[2], out[4]), who, "label -1 (the null token) gave different embeddings in eval mode")
        _require(torch.equal(conditioner(labels), out), who, "two eval-mode calls gave different embeddings")
        if any(p.requires_grad for p in conditioner.parameters()):
            conditioner.zero_grad(set_to_none=True)
            out.sum().backward()
            grads = [p.grad for p in conditioner.parameters() if p.requires_grad]
            _require(any(g is not None and bool(g.abs().sum() > 0) for g in grads), who, "the embedding is not differentiable")
        conditioner.train()
        with torch.no_grad():
            _require(tuple(conditioner(labels).shape) == (5, dim), who, "train mode changed the output shape")
    finally:
        conditioner.zero_grad(set_to_none=True)
        conditioner.train(was_training)


# -- processes -------------------------------------------------------------------

#: The data of the sampler check: N(0, DATA_STD^2) per pixel.
DATA_STD = 0.5


def reference_diffusion(timesteps: int = 200) -> Diffusion:
    """Linear betas scaled to ``timesteps`` (improved-diffusion's scaling: 1000/T times 1e-4..0.02)."""
    scale = 1000 / timesteps
    return Diffusion(torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64))


class LinearPath(ContinuousProcess):
    """x_t = (1 - t) x_0 + t eps on t in [0, 1]: the rectified-flow path, the checks' continuous process."""

    t_data, t_max = 0.0, 1.0

    def alpha_of(self, t: Tensor) -> Tensor:
        return 1 - t

    def sigma_of(self, t: Tensor) -> Tensor:
        return t

    def t_of_log_snr(self, lam):
        """lambda = 2 log((1 - t) / t), so t = 1 / (1 + exp(lambda / 2)) (a sigmoid)."""
        if isinstance(lam, Tensor):
            return torch.sigmoid(-lam / 2)
        return 1 / (1 + math.exp(lam / 2)) if lam < 700 else 0.0

    def derivatives(self, t):
        return -1.0, 1.0


def reference_processes() -> list[Any]:
    """The processes the sampler check runs on: the discrete chain (T = 200) and the linear path of flow matching."""
    return [reference_diffusion(), LinearPath()]


def check_process(process: Any, *, timesteps: int = 8) -> None:
    """A process has the members of :class:`gentool.Process`, and they agree with each other.

    alpha and sigma are finite and non-negative from the data to ``t_max``
    (the data end: alpha = 1, sigma = 0), log-SNR decreases in t, its inverse
    inverts it (snapped to a trained step on a discrete process), ``grid``
    gives decreasing times from ``t_max`` for every spacing, ``time_at`` runs
    from the data to ``t_max``, and numbers and tensors give the same values.
    """
    who = f"process {type(process).__name__}"
    try:
        check_process_members(process)
    except TypeError as exc:
        raise AssertionError(f"{who}: {exc}") from None
    _require(process.t_data < process.t_max, who, f"t_data ({process.t_data}) must be below t_max ({process.t_max})")
    _require(abs(float(process.alpha(process.t_data)) - 1) < 1e-6 and abs(float(process.sigma(process.t_data))) < 1e-6,
             who, "at t_data the marginal must be the data (alpha = 1, sigma = 0)")
    times = list(process.grid(timesteps))
    _require(len(times) >= 1 and times[0] == process.t_max, who, f"grid({timesteps}) must start at t_max, got {times[:3]}")
    _require(all(a > b for a, b in zip(times, times[1:])) and times[-1] > process.t_data, who,
             f"grid({timesteps}) must decrease and stay above the data end, got {times}")
    for spacing in SPACINGS:
        g = list(process.grid(timesteps, None, spacing))
        _require(g[0] == process.t_max and all(a > b for a, b in zip(g, g[1:])), who, f"grid spacing {spacing!r}: {g}")
    lams = [float(process.log_snr(t)) for t in times]
    _require(all(a < b for a, b in zip(lams, lams[1:])), who, "log_snr must decrease as t grows")
    for t, lam in zip(times, lams):
        a, s = float(process.alpha(t)), float(process.sigma(t))
        _require(a >= 0 and s > 0 and math.isfinite(a) and math.isfinite(s), who, f"alpha, sigma at t = {t}: {a}, {s}")
        if math.isfinite(lam):
            _require(abs(lam - 2 * (math.log(a) - math.log(s))) < 1e-6 * max(1, abs(lam)), who,
                     f"log_snr({t}) = {lam} is not log(alpha^2 / sigma^2)")
            back = float(process.t_of_log_snr(lam))
            _require(abs(back - t) < 1e-5 * max(1.0, abs(t)), who, f"t_of_log_snr(log_snr({t})) = {back}")
        tensor = torch.tensor([t, t], dtype=torch.long if process.discrete else torch.float64)
        _require(torch.allclose(process.alpha(tensor).double(), torch.tensor([a, a], dtype=torch.float64), rtol=1e-6),
                 who, f"alpha of a tensor differs from alpha of a number at t = {t}")
    _require(float(process.time_at(0.0)) <= process.t_data + 1e-9 or process.discrete and process.time_at(0.0) < 0,
             who, "time_at(0) must be the data end")
    _require(abs(float(process.time_at(1.0)) - process.t_max) < 1e-9, who, "time_at(1) must be t_max")


def check_process_factory(factory: Callable[..., Any], *, betas: Tensor | None = None, **options: Any) -> Any:
    """A process factory follows the factory convention and builds a process that passes :func:`check_process`.

    A factory that declares ``betas`` (the core supplies a ``[schedule]``'s) gets
    ``betas`` or those of :func:`reference_diffusion`. Returns the process.
    """
    check_factory("process", factory)
    resolved = _resolve("process", factory, options)
    if "betas" in inspect.signature(factory).parameters:
        resolved["betas"] = reference_diffusion().betas_64 if betas is None else betas
    process = factory(**resolved)
    check_process(process)
    return process


# -- samplers ------------------------------------------------------------------

def gaussian_denoise_fn(process: Any, std: float = DATA_STD, counter: list[int] | None = None):
    """The exact denoiser of data N(0, std^2 I) for any process: ``denoise(x_t, t) -> Denoised``.

    x_t = alpha x_0 + sigma eps is Gaussian with variance v = alpha^2 std^2 + sigma^2,
    so E[x_0 | x_t] = alpha std^2 x_t / v and E[eps | x_t] = sigma x_t / v.
    """

    def denoise(x_t: Tensor, t) -> Denoised:
        if counter is not None:
            counter[0] += 1
        tt = as_batch(x_t, t, process)
        shape = (-1, *[1] * (x_t.ndim - 1))
        alpha = process.alpha(tt).double().reshape(shape)
        sigma = process.sigma(tt).double().reshape(shape)
        v = alpha**2 * std**2 + sigma**2
        x = x_t.double()
        return Denoised((alpha * std**2 * x / v).to(x_t.dtype), (sigma * x / v).to(x_t.dtype))

    return denoise


def denoise_from_eps(eps_fn: Callable[[Tensor, Tensor], Tensor], process: Any):
    """``denoise(x_t, t) -> Denoised`` of a noise prediction ``eps_fn(x_t, t_batch)``, as the ``eps``
    parameterisation converts it (for tests written against noise predictions)."""
    from gentool.parameterisation import EpsPrediction

    param = EpsPrediction()

    def denoise(x_t: Tensor, t) -> Denoised:
        return param.denoised(process, x_t, t, eps_fn(x_t, as_batch(x_t, t, process)))

    return denoise


def gaussian_eps_fn(diffusion: Diffusion, std: float = DATA_STD, counter: list[int] | None = None):
    """The exact eps prediction E[eps | x_t] for data N(0, std^2 I) on the discrete chain (samplers of the
    ``eps_fn`` convention, :mod:`gentool.legacy`): sqrt(1 - abar) x_t / (abar std^2 + 1 - abar)."""

    def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
        if counter is not None:
            counter[0] += 1
        abar = diffusion.alphas_cumprod_64.to(x_t.device)[t].to(x_t.dtype).reshape(-1, *[1] * (x_t.ndim - 1))
        return (1 - abar).sqrt() * x_t / (abar * std**2 + 1 - abar)

    return eps_fn


def _moments_ok(x: Tensor, who: str, what: str, tol: float) -> None:
    mean, std = float(x.mean()), float(x.std())
    _require(abs(mean) < 0.05 and abs(std - DATA_STD) < tol * DATA_STD, who,
             f"{what}: samples have mean {mean:.3f} and std {std:.3f}; the data are N(0, {DATA_STD}^2) and the "
             "denoiser is exact, so a correct sampler gives mean 0 and std "
             f"{DATA_STD} (within {tol:.0%})")


def check_sampler(sampler: Callable[..., Tensor], *, steps: int = 10, tol: float = 0.15,
                  processes: list[Any] | None = None, exact: Callable[..., Any] | None = None,
                  **options: Any) -> None:
    """A sampler is reproducible, honours steps/t_start/callback and samples correctly, on every process it supports.

    On each of ``processes`` (default :func:`reference_processes`: the
    discrete chain with T = 200 and flow matching's linear path) that the
    sampler supports (its optional ``supports(process)``), with the exact
    denoiser of Gaussian data N(0, 0.5^2) (:func:`gaussian_denoise_fn`) it
    checks: the same generator gives the same output; ``x_T`` is not modified;
    output of ``x_T``'s shape and dtype, finite; mean and std of the samples
    right within ``tol`` (default steps and from ``t_start`` halfway); with
    ``steps`` at most ``steps`` callback calls and ``2 * steps`` network
    evaluations, the callback sees ``i = 0, 1, ...``, decreasing ``t`` starting
    at ``t_start`` and the data end as the last ``t_next``; a tensor returned by
    the callback replaces the state. A sampler of the older ``eps_fn``
    convention (:mod:`gentool.legacy`) is checked on the discrete chain only.
    ``exact(process, counter=...)`` replaces :func:`gaussian_denoise_fn` for a
    sampler of another kind of model (a consistency model's sampler gets the
    exact consistency function of the same data).
    """
    from gentool.compat import sampler_fits
    from gentool.legacy import adapt, is_legacy_sampler

    legacy = is_legacy_sampler(sampler)
    if legacy:
        _check_legacy_signature(sampler)
    else:
        check_factory("sampler", sampler)
    resolved = _resolve("sampler", sampler, options)
    who = f"sampler {_label(sampler)}"
    fn = functools.partial(adapt(sampler), **resolved)
    ran = 0
    for process in processes if processes is not None else reference_processes():
        if sampler_fits(sampler, process):
            continue
        _check_on(fn, process, who, steps, tol, exact or gaussian_denoise_fn)
        ran += 1
    _require(ran > 0, who, "supports none of the reference processes")


def _check_legacy_signature(sampler) -> None:
    params = list(inspect.signature(sampler).parameters.values())
    reserved = [p.name for p in params if p.kind is p.KEYWORD_ONLY]
    missing = [r for r in RESERVED["sampler"] if r not in reserved]
    _require(not missing, f"sampler {_label(sampler)}", f"must accept the keyword-only parameters {missing}")


def _check_on(fn, process, who: str, steps: int, tol: float, exact: Callable[..., Any]) -> None:
    from gentool.reverse import data_time

    who = f"{who} on {type(process).__name__}"
    nfe = [0]
    denoise = exact(process, counter=nfe)
    x_T = torch.randn(512, 1, 4, 4, generator=torch.Generator().manual_seed(0)) * float(process.prior_std)
    x_keep = x_T.clone()

    def gen(seed: int = 1) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    out = fn(denoise, process, x_T, generator=gen())
    _require(torch.equal(x_T, x_keep), who, "modified x_T in place")
    _require(isinstance(out, Tensor) and out.shape == x_T.shape and out.dtype == x_T.dtype, who,
             f"must return a tensor of x_T's shape {tuple(x_T.shape)} and dtype {x_T.dtype}")
    _require(bool(torch.isfinite(out).all()), who, "returned non-finite values")
    _require(torch.equal(fn(denoise, process, x_T, generator=gen()), out), who,
             "two runs with identically seeded generators differ; draw all noise from `generator`")
    _moments_ok(out, who, "default steps", tol)
    passthrough = fn(denoise, process, x_T, generator=gen(), callback=lambda info: None)
    _require(torch.equal(passthrough, out), who, "a callback returning None changed the result")

    end = data_time(process)
    seen: list[dict] = []
    nfe[0] = 0
    few = fn(denoise, process, x_T, steps=steps, generator=gen(), callback=seen.append)
    _require(bool(torch.isfinite(few).all()) and few.shape == x_T.shape, who, f"steps={steps}: bad output")
    _require(1 <= len(seen) <= steps, who, f"steps={steps}: the callback ran {len(seen)} times, expected 1..{steps}")
    _require(1 <= nfe[0] <= 2 * steps, who, f"steps={steps}: {nfe[0]} network evaluations, expected at most {2 * steps}")
    _check_callbacks(seen, process.t_max, end, x_T.shape, who)

    t_start = (int(process.t_max) + 1) // 2 if process.discrete else process.time_at(0.5)
    a, s = float(process.alpha(t_start)), float(process.sigma(t_start))
    x_mid = torch.randn(x_T.shape, generator=gen(2)) * math.sqrt(a**2 * DATA_STD**2 + s**2)  # x ~ q(x_t)
    seen = []
    mid = fn(denoise, process, x_mid, t_start=t_start, generator=gen(), callback=seen.append)
    _check_callbacks(seen, t_start, end, x_T.shape, who)
    _moments_ok(mid, who, f"t_start={t_start}", tol)

    def replace_last(info: dict) -> Tensor | None:
        return torch.full_like(info["x"], 0.25) if info["t_next"] == end else None

    replaced = fn(denoise, process, x_T, steps=steps, generator=gen(), callback=replace_last)
    _require(bool((replaced == 0.25).all()), who, "a tensor returned by the callback after the last step must be the result")


def _check_callbacks(seen: list[dict], t_first: float, end: float, shape: torch.Size, who: str) -> None:
    _require(bool(seen), who, "the callback was never called (the callback ran 0 times)")
    keys = {"i", "t", "t_next", "x", "x0"}
    for n, info in enumerate(seen):
        _require(isinstance(info, dict) and keys <= set(info), who, f"callback argument must be a dict with keys {sorted(keys)}")
        _require(info["i"] == n, who, f"callback {n} got i = {info['i']}")
        _require(info["t_next"] < info["t"], who, f"callback {n}: t_next {info['t_next']} is not below t {info['t']}")
        _require(tuple(info["x"].shape) == tuple(shape), who, f"callback {n}: x has shape {tuple(info['x'].shape)}")
        if n:
            _require(info["t"] == seen[n - 1]["t_next"], who, f"callback {n}: t = {info['t']} but the previous t_next was {seen[n - 1]['t_next']}")
    _require(abs(float(seen[0]["t"]) - float(t_first)) < 1e-9, who,
             f"the first step must be at t = {t_first:g}, got {seen[0]['t']}")
    _require(seen[-1]["t_next"] == end, who, f"the last step must end at t_next = {end} (the data), got {seen[-1]['t_next']}")


# -- tasks ---------------------------------------------------------------------

def tiny_recipe(output_dir: str | Path, *, conditional: bool = True, timesteps: int = 20) -> dict[str, Any]:
    """TOML data of a tiny recipe (toy data 1x8x8, a small U-Net, T = ``timesteps``, no training)."""
    recipe: dict[str, Any] = {
        "run": {"name": "tiny", "output_dir": str(output_dir), "device": "cpu", "compile": False},
        "data": {"name": "toy", "n": 16, "image_size": 8, "channels": 1, "num_classes": 2},
        "schedule": {"name": "linear", "timesteps": timesteps, "beta_start": 1e-3, "beta_end": 0.3},
        "denoiser": {"name": "unet", "in_channels": 1, "image_size": 8, "channels": 32, "channel_mult": [1, 2],
                     "num_res_blocks": 1, "attention_resolutions": [4], "dropout": 0.0, "class_cond": conditional},
        "train": {"steps": 0, "batch_size": 4},
    }
    if conditional:
        recipe["conditioner"] = {"name": "class_embedding", "num_classes": 2}
    return recipe


def tiny_run(output_dir: str | Path, *, conditional: bool = True, timesteps: int = 20, perturb: float = 0.02):
    """A built :class:`gentool.Run` from :func:`tiny_recipe` for task checks.

    The U-Net's zero-initialised output layer would make every prediction 0,
    so its weights are perturbed by ``perturb`` times a fixed Gaussian.
    """
    from gentool.recipe import load_recipe
    from gentool.run import build

    run = build(load_recipe(data=tiny_recipe(output_dir, conditional=conditional, timesteps=timesteps)), device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for model in filter(None, (run.model, run.ema)):
            for p in model.denoiser.conv_out.parameters():
                p.copy_(perturb * torch.randn(p.shape, generator=g))
    return run


def check_task(task: Callable[..., TaskResult], run, *, out_dir: str | Path | None = None, **options: Any) -> TaskResult:
    """A task writes only inside ``out_dir`` and returns what it wrote and measured.

    ``run`` is a built :class:`gentool.Run` (see :func:`tiny_run`). Checks the
    :class:`gentool.TaskResult`: every file exists, is not empty and lies in
    ``out_dir``; every metric is a finite number; something was written or
    measured. Returns the result.
    """
    check_factory("task", task)
    resolved = _resolve("task", task, options)
    who = f"task {_label(task)}"
    out_dir = Path(tempfile.mkdtemp(prefix="gentool-task-")) if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = task(run, out_dir, **resolved)
    _require(isinstance(result, TaskResult), who, f"must return a gentool.TaskResult, got {type(result).__name__}")
    _require(bool(result.files or result.metrics), who, "wrote no files and measured no metrics")
    root = out_dir.resolve()
    for f in result.files:
        path = Path(f).resolve()
        _require(path.is_file(), who, f"reported file {f} does not exist")
        _require(path.stat().st_size > 0, who, f"reported file {f} is empty")
        _require(root in path.parents, who, f"wrote {f} outside its out_dir {out_dir}")
    for key, value in result.metrics.items():
        _require(isinstance(key, str), who, f"metric names must be strings, got {key!r}")
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        _require(number and math.isfinite(value), who, f"metric {key!r} must be a finite number, got {value!r}")
    return result


# -- data sources --------------------------------------------------------------

def _check_item(item: Any, who: str, where: str, classes: list) -> tuple[int, ...]:
    _require(isinstance(item, (tuple, list)) and len(item) == 2, who, f"{where} must be an (image, label) pair")
    image, label = item
    _require(isinstance(image, Tensor), who, f"{where}: the image must be a tensor, got {type(image).__name__}")
    _require(image.dtype == torch.float32 and image.ndim == 3, who,
             f"{where}: the image must be float32 [C, H, W], got {image.dtype} {tuple(image.shape)}")
    _require(bool(torch.isfinite(image).all()), who, f"{where}: non-finite pixels")
    lo, hi = float(image.min()), float(image.max())
    _require(lo >= -1 - 1e-5 and hi <= 1 + 1e-5, who, f"{where}: pixels must lie in [-1, 1], got [{lo:.3f}, {hi:.3f}]")
    _require(type(label) is int, who, f"{where}: the label must be a Python int (-1 for none), got {type(label).__name__}")
    _require(label >= -1, who, f"{where}: label {label} < -1")
    if classes:
        _require(label < len(classes), who, f"{where}: label {label} but only {len(classes)} classes")
    return tuple(image.shape)


def check_data_source(factory: Callable[..., Any], *, splits: tuple[str, ...] = ("train", "test"), **options: Any) -> dict:
    """A data source gives ``(float32 [C, H, W] in [-1, 1], int label)`` for each split.

    Checks a few items of each split (first, middle, last), that every image
    has one shape, that the factory's ``shape`` attribute, where it has one,
    agrees with each split (unless it returns None), and that an unknown split
    is refused with ``ValueError``. Returns ``{split: dataset}``.
    """
    check_factory("data_source", factory)
    resolved = _resolve("data_source", factory, options)
    who = f"data source {_label(factory)}"
    shapes: set[tuple[int, ...]] = set()
    built = {}
    for split in splits:
        ds = factory(split, **resolved)
        _require(hasattr(ds, "__len__") and hasattr(ds, "__getitem__"), who, f"{split}: must return a map-style Dataset")
        n = len(ds)
        _require(n >= 1, who, f"the {split} split is empty")
        classes = list(getattr(ds, "classes", None) or [])
        for i in sorted({0, n // 2, n - 1}):
            shapes.add(_check_item(ds[i], who, f"{split}[{i}]", classes))
        told = factory.shape(split, **resolved) if callable(getattr(factory, "shape", None)) else None
        loaded = (n, *ds[0][0].shape)
        _require(told is None or tuple(told) == loaded, who, f"{split}: shape() says {told}, the data set is {loaded}")
        built[split] = ds
    _require(len(shapes) == 1, who, f"images of different shapes: {sorted(shapes)}")
    calls = [factory, *([factory.shape] if callable(getattr(factory, "shape", None)) else [])]
    for call in calls:
        try:
            call("validation", **resolved)
        except ValueError:
            pass
        else:
            name = "" if call is factory else " of shape()"
            raise AssertionError(f"{who}: split 'validation'{name} must raise ValueError (splits are 'train' and 'test')")
    return built


# -- autoencoders --------------------------------------------------------------

def check_autoencoder(factory: Callable[..., Any], *, image_shape: tuple[int, int, int] = (3, 16, 16),
                      **options: Any) -> Any:
    """An autoencoder maps images of ``image_shape`` to latents and back, as its shapes say.

    Builds it from ``options`` and checks: ``latent_shape`` and ``image_shape``
    invert each other and ``latent_shape`` refuses images of another channel
    count with ``ValueError``; ``encode`` gives finite float latents of
    ``latent_shape``, the same twice and for an image alone as within a batch
    (the latent cache encodes in batches); ``decode`` gives finite images of
    ``image_shape``; ``fingerprint`` is a string (not empty unless the
    autoencoder is the identity or says its weights are missing);
    ``scale_factor`` is ``None`` or positive. The identity must return its
    argument unchanged. Returns the autoencoder.
    """
    check_factory("autoencoder", factory)
    ae = factory(**_resolve("autoencoder", factory, options))
    who = f"autoencoder {_label(factory)}"
    for name in ("encode", "decode", "latent_shape", "image_shape"):
        _require(callable(getattr(ae, name, None)), who, f"has no method {name}")
    x = torch.rand((3, *image_shape), generator=torch.Generator().manual_seed(0)) * 2 - 1
    if getattr(ae, "identity", False):
        _require(ae.encode(x) is x and ae.decode(x) is x, who, "is the identity, so encode and decode must return "
                 "their argument itself")
        return ae
    latent = tuple(ae.latent_shape(tuple(image_shape)))
    _require(len(latent) == 3 and all(isinstance(d, int) and d > 0 for d in latent), who,
             f"latent_shape{tuple(image_shape)} must be three positive ints, got {latent}")
    _require(tuple(ae.image_shape(latent)) == tuple(image_shape), who,
             f"image_shape{latent} must give back {tuple(image_shape)}, got {tuple(ae.image_shape(latent))}")
    other = (image_shape[0] + 1, *image_shape[1:])
    try:
        ae.latent_shape(other)
    except ValueError:
        pass
    else:
        raise AssertionError(f"{who}: latent_shape{other} must raise ValueError (it cannot encode "
                             f"{other[0]}-channel images)")
    ae = ae.eval() if isinstance(ae, nn.Module) else ae
    with torch.no_grad():
        z = ae.encode(x)
        _require(isinstance(z, Tensor) and tuple(z.shape) == (3, *latent), who,
                 f"encode must return latents [3, {', '.join(map(str, latent))}], got "
                 f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
        _require(z.is_floating_point() and bool(torch.isfinite(z).all()), who, "encode gave non-finite or non-float latents")
        torch.testing.assert_close(ae.encode(x), z, msg=f"{who}: encode must be deterministic (the posterior mean)")
        torch.testing.assert_close(ae.encode(x[1:2]), z[1:2], atol=1e-5, rtol=1e-4,
                                   msg=f"{who}: an image's latents must not depend on the rest of its batch")
        y = ae.decode(z)
        _require(isinstance(y, Tensor) and tuple(y.shape) == (3, *image_shape), who,
                 f"decode must return images [3, {', '.join(map(str, image_shape))}], got "
                 f"{tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}")
        _require(bool(torch.isfinite(y).all()), who, "decode gave non-finite images")
    missing = getattr(ae, "missing_weights", None)
    fingerprint = getattr(ae, "fingerprint", None)
    _require(isinstance(fingerprint, str), who, "needs a fingerprint (a string hash of its weights)")
    _require(bool(fingerprint) or (callable(missing) and missing()), who,
             "has an empty fingerprint but weights (the latent cache is keyed by the fingerprint)")
    scale = getattr(ae, "scale_factor", "absent")
    _require(scale is None or (isinstance(scale, (int, float)) and scale > 0), who,
             f"scale_factor must be None (measured) or a positive number, got {scale!r}")
    return ae


# -- feature extractors --------------------------------------------------------

def check_feature_extractor(factory: Callable[..., Any], *, image_size: int = 32, **options: Any) -> None:
    """A feature extractor is a ``torch_fidelity.FeatureExtractorBase`` giving finite features.

    Runs it on a uint8 batch ``[2, 3, image_size, image_size]`` and checks one
    tensor per requested feature, each with the batch as its first dimension.
    """
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    check_factory("feature_extractor", factory)
    resolved = _resolve("feature_extractor", factory, options)
    fx = factory(**resolved)
    who = f"feature extractor {type(fx).__name__}"
    _require(isinstance(fx, FeatureExtractorBase), who, "must be a torch_fidelity.feature_extractor_base.FeatureExtractorBase")
    requested = list(fx.get_requested_features_list())
    _require(set(requested) <= set(fx.get_provided_features_list()), who, "requests features it does not provide")
    x = torch.randint(0, 256, (2, 3, image_size, image_size), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = fx.eval()(x)
    _require(isinstance(feats, tuple) and len(feats) == len(requested), who,
             f"forward must return a tuple of {len(requested)} tensors (one per requested feature)")
    for name, f in zip(requested, feats):
        _require(isinstance(f, Tensor) and f.shape[0] == 2, who, f"feature {name!r} must be a tensor with the batch first")
        _require(bool(torch.isfinite(f.float()).all()), who, f"feature {name!r} is not finite")


# -- objectives ----------------------------------------------------------------

class _TinyNet(nn.Module):
    """A 1x1 convolution plus an offset per noise label and per class label: enough to see gradients and mixing."""

    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, out_channels, 1)
        self.t_lin = nn.Linear(2, out_channels)
        self.y_emb = nn.Embedding(3, out_channels)

    def forward(self, x: Tensor, c_noise: Tensor, labels: Tensor | None) -> Tensor:
        c = c_noise.float()[:, None] / 1000
        out = self.conv(x) + self.t_lin(torch.cat([c, c.square()], 1))[:, :, None, None]
        if labels is not None:
            out = out + self.y_emb(labels.clamp(min=0))[:, :, None, None]
        return out


def check_objective(factory: Callable[..., Any], *, x_shape: tuple[int, ...] = (4, 2, 6, 6),
                    processes: list[Any] | None = None, **options: Any) -> Any:
    """An objective draws its batch from the generator alone and gives a differentiable loss per example.

    Builds ``factory(**options)`` and checks its parameterisation (or
    ``prediction``). On each of ``processes`` (default
    :func:`reference_processes`) that the objective and its parameterisation
    accept (their ``check(process)``; at least one): ``draw`` returns times
    ``[B]`` (int64 steps in ``0..T-1`` on a discrete process, floats in
    (t_data, t_max] elsewhere) and noise like ``x0``, the same for identically
    seeded generators and without touching torch's global generator; ``loss``
    of a small network (``2C`` output channels when ``learned_variance``) called
    through the parameterisation's inputs is a finite float32 ``[B]``, each
    example's value independent of the rest of the batch, with a gradient for
    every parameter, and its extras a dict of scalar tensors. Returns the objective.
    """
    from gentool.parameterisation import call_network

    check_factory("objective", factory)
    objective = factory(**_resolve("objective", factory, options))
    who = f"objective {_label(factory)}"
    try:
        param = parameterisation_of(objective)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{who}: {exc}; prediction must be one of {PREDICTIONS} or give a parameterisation") from None
    for method in ("draw", "loss"):
        _require(callable(getattr(objective, method, None)), who, f"needs a method {method}()")
    from gentool.compat import objective_fits

    ran = 0
    for process in processes if processes is not None else reference_processes():
        if param.check(process) or objective_fits(objective, process):
            continue
        ran += 1
        _check_objective_on(objective, param, process, x_shape, f"{who} on {type(process).__name__}", call_network)
    _require(ran > 0, who, "accepts none of the reference processes")
    return objective


def _check_objective_on(objective, param, process, x_shape, who, call_network) -> None:
    x0 = torch.rand(x_shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    before = torch.get_rng_state()
    t, noise = objective.draw(process, x0, torch.Generator().manual_seed(5))
    _require(torch.equal(before, torch.get_rng_state()), who, "draw() used torch's global generator; use `generator`")
    t2, noise2 = objective.draw(process, x0, torch.Generator().manual_seed(5))
    if process.discrete:
        T = int(process.t_max) + 1
        _require(isinstance(t, Tensor) and t.dtype == torch.int64 and tuple(t.shape) == (x_shape[0],), who,
                 f"draw() must return t as int64 [B], got {getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}")
        _require(bool(((t >= 0) & (t < T)).all()), who, f"draw(): timesteps must be 0-based, in 0..{T - 1}, got {t.tolist()}")
    else:
        _require(isinstance(t, Tensor) and t.is_floating_point() and tuple(t.shape) == (x_shape[0],), who,
                 f"draw() must return t as floats [B], got {getattr(t, 'dtype', type(t))} {tuple(getattr(t, 'shape', ()))}")
        _require(bool(((t > process.t_data) & (t <= process.t_max)).all()), who,
                 f"draw(): times must lie in ({process.t_data:g}, {process.t_max:g}], got {t.tolist()}")
    _require(isinstance(noise, Tensor) and noise.shape == x0.shape and noise.dtype == x0.dtype, who,
             "draw() must return noise of x0's shape and dtype")
    _require(torch.equal(t, t2) and torch.equal(noise, noise2), who, "draw() differs for identically seeded generators")
    out_channels = x_shape[1] * (2 if getattr(objective, "learned_variance", False) else 1)
    torch.manual_seed(0)
    net = _TinyNet(x_shape[1], out_channels)
    at = call_network(net, process, param)
    labels = torch.arange(x_shape[0]) % 3 - 1  # includes -1, the null label

    def call(x_t: Tensor, tt: Tensor, y: Tensor | None) -> Tensor:
        return at(x_t, tt, y).float()

    per, extras = objective.loss(call, process, x0, labels, t, noise)
    _require(isinstance(per, Tensor) and tuple(per.shape) == (x_shape[0],) and per.dtype == torch.float32, who,
             f"loss() must return a float32 per-example loss [B], got {getattr(per, 'dtype', type(per))} "
             f"{tuple(getattr(per, 'shape', ()))}")
    _require(bool(torch.isfinite(per).all()), who, f"loss() is not finite: {per.tolist()}")
    _require(isinstance(extras, dict) and all(isinstance(k, str) and isinstance(v, Tensor) and v.numel() == 1
                                              for k, v in extras.items()), who,
             "loss() must return extras as a dict of str -> one-element tensors (may be {})")
    one, _ = objective.loss(call, process, x0[1:2], labels[1:2], t[1:2], noise[1:2])
    _require(torch.allclose(one, per[1:2], rtol=1e-4, atol=1e-6), who,
             "an example's loss depends on the other examples in the batch")
    per.sum().backward()
    _check_grads(net, who)


# -- loggers -------------------------------------------------------------------

def check_logger(factory: Callable[..., Any], run_dir: str | Path | None = None, **options: Any) -> Any:
    """A logger takes every call the engine makes and writes only inside the run directory.

    Calls ``log_text`` (the recipe, at step 0), ``log_scalars`` (with a NaN, as
    a diverging run logs), ``log_image`` (a ``[3, H, W]`` grid in [0, 1]) and
    ``close``. Returns the logger.
    """
    check_factory("logger", factory)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_dir = Path(run_dir) if run_dir is not None else root / "runs" / "check"
        run_dir.mkdir(parents=True, exist_ok=True)
        who = f"logger {_label(factory)}"
        logger = factory(run_dir, **_resolve("logger", factory, options))
        for method in ("log_scalars", "log_image", "log_text", "close"):
            _require(callable(getattr(logger, method, None)), who, f"needs a method {method}()")
        logger.log_text(0, "recipe", "[run]\nname = \"check\"\n")
        logger.log_scalars(1, {"loss": 0.25, "lr": 1e-4, "grad_norm": float("nan"), "skipped": 0})
        logger.log_image(1, "samples", torch.rand(3, 10, 10, generator=torch.Generator().manual_seed(0)))
        logger.log_scalars(2, {"test_loss/t=10": 0.5})
        logger.close()
        if run_dir.is_relative_to(root):
            outside = [p for p in root.rglob("*") if p.is_file() and not p.is_relative_to(run_dir)]
            _require(not outside, who, f"wrote outside its run directory: {outside}")
    return logger


# -- commands ------------------------------------------------------------------

def check_command(name: str, function: Callable[..., Any]) -> None:
    """A command is a documented Typer function that ``gentool NAME --help`` can show.

    Its parameters need ``typer.Argument``/``typer.Option`` defaults or plain
    types Typer understands; the docstring's first line is the summary in
    ``gentool --help``.
    """
    from click.testing import CliRunner

    from gentool.cli.app import friendly  # the command line: imported only when a command is checked
    from gentool.cli.plugin_commands import to_click

    who = f"command {name!r} ({_label(function)})"
    _require(callable(function), who, "is not callable")
    _require(bool((inspect.getdoc(function) or "").strip()), who, "has no docstring (its first line is the help summary)")
    try:
        command = to_click(name, function, wrap=friendly)
    except Exception as exc:  # noqa: BLE001 - any failure to build it is the contract's
        raise AssertionError(f"{who}: Typer cannot build a command from it: {type(exc).__name__}: {exc}") from None
    result = CliRunner().invoke(command, ["--help"], prog_name=f"gentool {name}")
    _require(result.exit_code == 0, who, f"`gentool {name} --help` failed: {result.output}")


__all__ = [
    "check_autoencoder",
    "check_conditioner",
    "check_data_source",
    "check_denoiser",
    "check_factory",
    "check_feature_extractor",
    "check_command",
    "check_logger",
    "check_objective",
    "check_process",
    "check_process_factory",
    "check_sampler",
    "check_schedule",
    "check_task",
    "denoise_from_eps",
    "gaussian_denoise_fn",
    "gaussian_eps_fn",
    "LinearPath",
    "reference_diffusion",
    "reference_processes",
    "tiny_recipe",
    "tiny_run",
]
