"""What the network outputs, and the one converter from its output to a :class:`Denoised` record.

A parameterisation is declared by the objective (``objective.parameterisation``,
or the classic ``objective.prediction`` string ``"eps"``, ``"x0"`` or ``"v"``)
and stored with the model and its checkpoints. The loss regresses the raw
network output on :meth:`Parameterisation.target`; every sampler, task and
metric sees only :meth:`Parameterisation.denoised`, so a new parameterisation
(a flow velocity, EDM's preconditioned D) needs no change anywhere else.

With x_t = alpha x_0 + sigma eps (:mod:`gentool.process`):

=========  ===============================  =================================================
name       network output F                 x_0 and eps from (x_t, F)
=========  ===============================  =================================================
``eps``    eps (Ho et al. 2020)             x0 = (x_t - sigma F) / alpha
``x0``     x_0                              eps = (x_t - alpha F) / sigma
``v``      alpha eps - sigma x_0            x0 = (alpha x_t - sigma F) / (alpha^2 + sigma^2),
           (Salimans and Ho 2022)           eps = (sigma x_t + alpha F) / (alpha^2 + sigma^2)
=========  ===============================  =================================================

Plugins add others by implementing the :class:`Parameterisation` protocol;
:class:`Affine` helps with any output that is affine in (x_0, eps).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from gentool.diffusion import Diffusion
from gentool.process import Process, Time, as_batch, broadcast


@dataclass
class Denoised:
    """One network evaluation at (x_t, t) in the forms samplers use.

    Attributes:
        x0: the predicted data E[x_0 | x_t] (Karras et al.'s D).
        eps: the predicted noise E[eps | x_t]; x_t = alpha x0 + sigma eps.
        extras: anything else the network said, e.g. ``"variance_v"``, the
            learned-variance interpolation of Nichol and Dhariwal (2021, eq. 15).
    """

    x0: Tensor
    eps: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


#: ``denoise(x_t, t) -> Denoised``: the sampling model with conditioning and guidance bound.
#: ``t`` is a number (one time for the batch) or a tensor ``[B]``.
VARIANCE = "variance_v"


def guided_eps(eps_cond: Tensor, eps_uncond: Tensor, guidance: float) -> Tensor:
    """Classifier-free guidance (Ho and Salimans 2022, eq. 6).

    eps~ = (1 + w) eps(x, c) - w eps(x, null). In the other common form,
    eps~ = eps(x, null) + s (eps(x, c) - eps(x, null)) with s = 1 + w, so
    w = 0 (s = 1) is plain conditional sampling. The same affine mix applies to
    x0 and to any output affine in them.
    """
    return (1.0 + guidance) * eps_cond - guidance * eps_uncond


@runtime_checkable
class Parameterisation(Protocol):
    """What a network's raw output F means (see the module docstring).

    * ``name``: stored with the model and its checkpoints.
    * ``inputs(process, x_t, t) -> (x_in, c_noise)``: what the network is
      called with (EDM's c_in x_t and c_noise; most use x_t and
      ``process.noise_label(t)``); ``t`` is a tensor ``[B]``.
    * ``denoised(process, x_t, t, F) -> Denoised``; ``t`` a number or ``[B]``.
    * ``target(process, x0, eps, t) -> Tensor``: the regression target for F.
    * ``guide(process, x_t, t, cond, uncond, w) -> Denoised``: classifier-free
      guidance of two records (:class:`Affine` mixes x0 and eps alike).
    * ``check(process) -> str | None``: why it cannot be used with ``process``.
    """

    name: str

    def inputs(self, process: Process, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]: ...

    def denoised(self, process: Process, x: Tensor, t: Time, output: Tensor) -> Denoised: ...

    def target(self, process: Process, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor: ...

    def guide(self, process: Process, x: Tensor, t: Time, cond: Denoised, uncond: Denoised, w: float) -> Denoised: ...

    def check(self, process: Process) -> str | None: ...


class Affine:
    """Base class of parameterisations whose output is affine in (x_0, eps): guidance mixes both alike."""

    name = "affine"

    def inputs(self, process: Process, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        return x, process.noise_label(t)

    def guide(self, process: Process, x: Tensor, t: Time, cond: Denoised, uncond: Denoised, w: float) -> Denoised:
        return Denoised(guided_eps(cond.x0, uncond.x0, w), guided_eps(cond.eps, uncond.eps, w), dict(cond.extras))

    def check(self, process: Process) -> str | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _coefficients(process: Process, x: Tensor, t: Time) -> tuple[Any, Any]:
    return broadcast(process.alpha(t), x), broadcast(process.sigma(t), x)


class _Classic(Affine):
    """eps, x0 and v: on the discrete chain the DDPM core's arithmetic, bit for bit; elsewhere the formulas."""

    def denoised(self, process: Process, x: Tensor, t: Time, output: Tensor) -> Denoised:
        if isinstance(process, Diffusion):
            return self._discrete(process, x, t, output)
        alpha, sigma = _coefficients(process, x, t)
        eps, x0 = self._from_output(x, output, alpha, sigma)
        return Denoised(x0, eps)

    def _discrete(self, d: Diffusion, x: Tensor, t: Time, output: Tensor) -> Denoised:
        tt = as_batch(x, t, d)
        if isinstance(t, Tensor) or d.abar(int(t)) == 0:  # table path: finite where alpha-bar is 0 (v, x0)
            if self.name == "eps" and not isinstance(t, Tensor):
                raise ValueError(f"alpha-bar is 0 at t = {t} (zero terminal SNR): a noise prediction alone cannot "
                                 "give x0 there; sample with a model that predicts v or x0")
            eps, x0 = d.eps_and_x0(output, x, tt, self.name)
            return Denoised(x0, eps)
        eps = d.to_eps(output, x, tt, self.name)
        return Denoised(d.x0_from_eps_at(x, int(t), eps), eps)

    def guide(self, process: Process, x: Tensor, t: Time, cond: Denoised, uncond: Denoised, w: float) -> Denoised:
        if not isinstance(process, Diffusion) or isinstance(t, Tensor) or process.abar(int(t)) == 0:
            return super().guide(process, x, t, cond, uncond, w)
        eps = guided_eps(cond.eps, uncond.eps, w)  # the DDPM core's order: mix eps, then x0 from it
        return Denoised(process.x0_from_eps_at(x, int(t), eps), eps, dict(cond.extras))

    def _from_output(self, x: Tensor, output: Tensor, alpha, sigma) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class EpsPrediction(_Classic):
    """The network predicts the noise eps (Ho et al. 2020)."""

    name = "eps"

    def _from_output(self, x, output, alpha, sigma):
        return output, (x - sigma * output) / alpha

    def target(self, process: Process, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return eps

    def check(self, process: Process) -> str | None:
        if float(process.alpha(process.t_max)) == 0:
            return ("a noise prediction cannot give x0 where alpha = 0 (x0 = (x_t - sigma eps) / 0), and this "
                    "process reaches alpha = 0 at its noisiest time (a zero-terminal-SNR schedule, or flow "
                    "matching's t = 1); use prediction = \"v\" (Lin et al. 2024) or \"x0\"")
        return None


class X0Prediction(_Classic):
    """The network predicts the clean image x0."""

    name = "x0"

    def _from_output(self, x, output, alpha, sigma):
        return (x - alpha * output) / sigma, output

    def target(self, process: Process, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        return x0


class VPrediction(_Classic):
    """The network predicts v = alpha eps - sigma x0 (Salimans and Ho 2022)."""

    name = "v"

    def _from_output(self, x, output, alpha, sigma):
        norm = alpha**2 + sigma**2
        return (sigma * x + alpha * output) / norm, (alpha * x - sigma * output) / norm

    def target(self, process: Process, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        alpha, sigma = _coefficients(process, x0, t)
        return alpha * eps - sigma * x0


#: The classic parameterisations an objective names by its ``prediction`` string.
CLASSIC: dict[str, Affine] = {p.name: p for p in (EpsPrediction(), X0Prediction(), VPrediction())}


def parameterisation_of(objective: Any) -> Parameterisation:
    """The objective's parameterisation: its ``parameterisation`` attribute, else its ``prediction`` string."""
    param = getattr(objective, "parameterisation", None)
    if param is not None:
        missing = [m for m in ("name", "inputs", "denoised", "target", "guide", "check") if not hasattr(param, m)]
        if missing:
            raise TypeError(f"{type(objective).__name__}.parameterisation lacks {', '.join(missing)} "
                            "(see gentool.Parameterisation)")
        return param
    prediction = getattr(objective, "prediction", None)
    if prediction not in CLASSIC:
        raise ValueError(f"unknown prediction {prediction!r}; valid: {', '.join(CLASSIC)} "
                         "(or give the objective a `parameterisation`)")
    return CLASSIC[prediction]


def with_extras(record: Denoised, **extras: Tensor) -> Denoised:
    """``record`` with more extras."""
    return replace(record, extras={**record.extras, **extras})


def describe(param: Any) -> dict[str, Any]:
    """What a checkpoint stores about a parameterisation: its ``describe()`` or its name."""
    fn = getattr(param, "describe", None)
    return dict(fn()) if callable(fn) else {"name": str(getattr(param, "name", type(param).__name__))}


def call_network(model: Any, process: Process, param: Parameterisation):
    """``net(x_t, t, labels)``: the model applied at time ``t`` ``[B]`` through the parameterisation's inputs."""

    def net(x_t: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        x_in, c_noise = param.inputs(process, x_t, t)
        return model(x_in, c_noise, labels)

    return net


__all__ = ["Affine", "CLASSIC", "Denoised", "EpsPrediction", "Parameterisation", "VPrediction", "X0Prediction",
           "call_network", "describe", "guided_eps", "parameterisation_of", "with_extras"]
