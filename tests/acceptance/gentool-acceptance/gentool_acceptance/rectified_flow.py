"""Rectified flow (Liu et al. 2022; Lipman et al. 2022): x_t = (1 - t) x0 + t eps, a velocity target, Euler."""

import math

import torch

import gentool


class LinearPath(gentool.ContinuousProcess):
    """alpha = 1 - t, sigma = t on t in [0, 1]: the data at 0, pure noise at 1."""

    t_data, t_max = 0.0, 1.0

    def alpha_of(self, t):
        return 1 - t

    def sigma_of(self, t):
        return t

    def t_of_log_snr(self, lam):  # lambda = 2 log((1 - t) / t)
        return torch.sigmoid(-lam / 2) if isinstance(lam, torch.Tensor) else 1 / (1 + math.exp(min(lam / 2, 700)))


def linear_path() -> LinearPath:
    """The rectified-flow path x_t = (1 - t) x0 + t eps, t in [0, 1]."""
    return LinearPath()


class Velocity(gentool.Affine):
    """The network outputs u = d x_t / dt = eps - x0; x0 = x_t - t u, eps = x_t + (1 - t) u."""

    name = "rf_velocity"

    def denoised(self, process, x, t, output):
        t = gentool.as_batch(x, t, process).reshape(-1, 1, 1, 1).to(x.dtype)
        return gentool.Denoised(x - t * output, x + (1 - t) * output)

    def target(self, process, x0, eps, t):
        return eps - x0

    def check(self, process):
        if not isinstance(process, LinearPath):
            return "the velocity eps - x0 is the linear path's derivative (use [process] name = \"rf_path\")"
        return None


class RFVelocity:
    """Logit-normal t (Esser et al. 2024, eq. 19), x_t = (1 - t) x0 + t eps, MSE on the velocity."""

    parameterisation = Velocity()

    def __init__(self, m: float, s: float) -> None:
        self.m, self.s = m, s

    def check(self, process):
        return self.parameterisation.check(process)

    def draw(self, process, x0, generator):
        u = torch.randn(x0.shape[0], generator=generator, device=x0.device) * self.s + self.m
        t = torch.sigmoid(u).clamp(1e-5, 1.0)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return t, noise

    def loss(self, net, process, x0, labels, t, noise):
        tt = t.reshape(-1, 1, 1, 1).to(x0.dtype)
        x_t = (1 - tt) * x0 + tt * noise
        diff = net(x_t, t, labels) - self.parameterisation.target(process, x0, noise, t)
        return diff.square().flatten(1).mean(1), {}


def rf_velocity(*, m: float = 0.0, s: float = 1.0) -> RFVelocity:
    """Rectified flow's velocity loss with logit-normal times.

    Args:
        m: location of the logit-normal time distribution.
        s: scale of the logit-normal time distribution.
    """
    return RFVelocity(m, s)


@torch.no_grad()
def rf_euler(denoise, process, x_T, *, steps=None, t_start=None, generator=None, callback=None):
    """Euler's method on the flow ODE dx/dt = u(x, t), evenly in t (deterministic)."""
    ts = list(process.grid(steps, t_start))
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else process.t_data
        d = denoise(x, t)
        x = x + (s - t) * (d.eps - d.x0)  # the velocity, whatever the network predicts
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": d.x0})
            x = x if replaced is None else replaced
    return x
