"""EDM (Karras et al. 2022): sigma as time, the preconditioning of Table 1, log-normal sigma, Heun (Algorithm 1)."""

import math

import torch

import gentool


class SigmaProcess(gentool.ContinuousProcess):
    """alpha = 1, sigma = t (EDM's sigma(t) = t, s(t) = 1): the data at 0, sampling from sigma_max."""

    t_data = 0.0

    def __init__(self, sigma_min: float, sigma_max: float) -> None:
        self.sigma_min, self.t_max, self.prior_std = sigma_min, sigma_max, sigma_max

    def alpha_of(self, t):
        return torch.ones_like(t)

    def sigma_of(self, t):
        return t

    def t_of_log_snr(self, lam):  # lambda = -2 log sigma
        return torch.exp(-lam / 2) if isinstance(lam, torch.Tensor) else math.exp(-lam / 2)

    def noise_label(self, t):
        return t.log() / 4


def edm_sigma(*, sigma_min: float = 0.002, sigma_max: float = 80.0) -> SigmaProcess:
    """EDM's process: x = x0 + sigma eps, time = sigma.

    Args:
        sigma_min: the lowest noise level samplers visit.
        sigma_max: where sampling starts.
    """
    return SigmaProcess(sigma_min, sigma_max)


class Preconditioned(gentool.Affine):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (Table 1); eps = (x - D) / sigma."""

    name = "edm_precond"

    def __init__(self, sigma_data: float) -> None:
        self.sd = sigma_data

    def _c(self, process, x, t):
        sigma = gentool.as_batch(x, t, process).to(torch.float64).reshape(-1, 1, 1, 1)
        norm = sigma**2 + self.sd**2
        return sigma, self.sd**2 / norm, sigma * self.sd / norm.sqrt(), 1 / norm.sqrt()  # c_skip, c_out, c_in

    def inputs(self, process, x, t):
        sigma, _, _, c_in = self._c(process, x, t)
        return (c_in * x).to(x.dtype), (sigma.flatten().log() / 4).to(x.dtype)  # c_noise = ln(sigma) / 4

    def denoised(self, process, x, t, output):
        sigma, c_skip, c_out, _ = self._c(process, x, t)
        d = (c_skip * x + c_out * output).to(x.dtype)
        return gentool.Denoised(d, ((x - d) / sigma).to(x.dtype))

    def target(self, process, x0, eps, t):  # F's target: (x0 - c_skip x) / c_out with x = x0 + sigma eps
        sigma, c_skip, c_out, _ = self._c(process, x0, t)
        return ((x0 - c_skip * (x0 + sigma * eps)) / c_out).to(x0.dtype)

    def check(self, process):
        return None if isinstance(process, SigmaProcess) else "EDM's D needs alpha = 1 and time = sigma"


class EDMLoss:
    """ln sigma ~ N(P_mean, P_std^2); lambda(sigma) ||D - x0||^2 = ||F - F_target||^2 (lambda = 1 / c_out^2)."""

    def __init__(self, p_mean: float, p_std: float, sigma_data: float) -> None:
        self.p_mean, self.p_std, self.parameterisation = p_mean, p_std, Preconditioned(sigma_data)

    def check(self, process):
        return self.parameterisation.check(process)

    def draw(self, process, x0, generator):
        ln = torch.randn(x0.shape[0], generator=generator, device=x0.device) * self.p_std + self.p_mean
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return ln.exp(), noise

    def loss(self, net, process, x0, labels, t, noise):
        x = x0 + t.reshape(-1, 1, 1, 1).to(x0.dtype) * noise
        diff = net(x, t, labels) - self.parameterisation.target(process, x0, noise, t)
        return diff.square().flatten(1).mean(1), {}


def edm_loss(*, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5) -> EDMLoss:
    """EDM's training loss with its preconditioning.

    Args:
        p_mean: mean of ln sigma.
        p_std: standard deviation of ln sigma.
        sigma_data: the data's standard deviation in the preconditioning.
    """
    return EDMLoss(p_mean, p_std, sigma_data)


@torch.no_grad()
def edm_heun(denoise, process, x_T, *, steps=None, t_start=None, generator=None, callback=None, rho: float = 7.0):
    """Karras et al. (2022) Algorithm 1: Heun's method in sigma on the rho = 7 grid (deterministic).

    Args:
        rho: the grid's exponent (eq. 5).
    """
    ts = list(process.grid(steps, t_start, "karras", rho=rho))
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else process.t_data
        d = denoise(x, t)
        x_next = x + (s - t) * d.eps  # dx/dsigma = (x - D) / sigma
        if s > 0:
            x_next = x + (s - t) * (d.eps + denoise(x_next, s).eps) / 2
        x = x_next
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": d.x0})
            x = x if replaced is None else replaced
    return x
