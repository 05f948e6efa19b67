"""``edm``: the training of Karras et al. (2022), sec. 5 and Table 1, on any alpha = 1 process.

Per example: ln(sigma) ~ N(P_mean, P_std^2), converted to the process's time
t = t_of_log_snr(-2 ln sigma) (on ``edm`` t = sigma; on ``ve`` the t with that
sigma; both clipped to the process's range), eps ~ N(0, I), x_t = x_0 + sigma(t) eps, and

    loss = lambda(sigma) |D(x_t; sigma) - x_0|^2,  lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2

averaged over pixels (eq. 2 with Table 1's weighting; lambda c_out^2 = 1, so
it is the unweighted error of F against its effective target, eq. 8).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from gentool_edm.precond import EDMPrecond, alpha_is_one, check_sigma_data


def edm_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 (Table 1, "Loss weighting")."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


class EDMObjective:
    """Log-normal sigma, EDM's preconditioning and loss weighting (see the module docstring)."""

    learned_variance = False

    def __init__(self, p_mean: float, p_std: float, sigma_data: float) -> None:
        self.p_mean, self.p_std, self.sigma_data = p_mean, p_std, sigma_data
        self.parameterisation = EDMPrecond(sigma_data)

    def check(self, process) -> str | None:
        return alpha_is_one(process)

    def draw(self, process, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """ln(sigma) ~ N(P_mean, P_std^2) as the process's time, then the noise, from ``generator``."""
        z = torch.randn((x0.shape[0],), device=x0.device, generator=generator, dtype=torch.float64)
        log_sigma = self.p_mean + self.p_std * z
        t = process.t_of_log_snr(-2 * log_sigma)
        t = torch.as_tensor(t, dtype=torch.float64)  # sigma above t_max (p = 2e-6 at the defaults) trains at t_max
        t = t.clamp(min=torch.finfo(torch.float32).tiny, max=process.t_max)
        return t.float(), torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)

    def loss(self, net, process, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-example lambda(sigma) times the mean over pixels of |D - x_0|^2, float32 ``[B]``."""
        shape = (-1, *[1] * (x0.ndim - 1))
        sigma = process.sigma(t).double()
        x_t = x0 + sigma.to(x0.dtype).reshape(shape) * noise
        d = self.parameterisation.denoised(process, x_t, t, net(x_t, t, labels).float()).x0
        per = (d.double() - x0.double()).square().flatten(1).mean(1)
        return (edm_weight(sigma, self.sigma_data) * per).float(), {}

    def __repr__(self) -> str:
        return f"EDMObjective(p_mean={self.p_mean}, p_std={self.p_std}, sigma_data={self.sigma_data})"


def edm_objective(*, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5) -> EDMObjective:
    """EDM training (Karras et al. 2022): log-normal sigma, the preconditioning and loss weighting of Table 1.

    The network is wrapped as D = c_skip x + c_out F(c_in x, ln(sigma) / 4) (the
    ``edm`` parameterisation); ln(sigma) ~ N(P_mean, P_std^2) per example and
    the loss is lambda(sigma) |D - x_0|^2 with lambda = (sigma^2 +
    sigma_data^2) / (sigma sigma_data)^2. Works on the ``edm`` and ``ve``
    processes (alpha = 1); sigma is converted to the process's time.

    Args:
        p_mean: P_mean, the mean of ln(sigma) (-1.2 in the paper).
        p_std: P_std, the standard deviation of ln(sigma) (1.2 in the paper).
        sigma_data: the standard deviation of the training data (0.5 in the
            paper, for images in [-1, 1]); sets c_skip, c_out, c_in and the weighting.
    """
    if isinstance(p_mean, bool) or not isinstance(p_mean, (int, float)) or not math.isfinite(p_mean):
        raise ValueError(f"p_mean must be a finite number, got {p_mean!r}")
    if isinstance(p_std, bool) or not isinstance(p_std, (int, float)) or not math.isfinite(p_std) or p_std <= 0:
        raise ValueError(f"p_std must be a positive number, got {p_std!r}")
    return EDMObjective(float(p_mean), float(p_std), check_sigma_data(sigma_data))
