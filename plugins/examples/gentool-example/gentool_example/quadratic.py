"""A quadratic beta schedule."""

import torch


def quadratic(*, timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Quadratic betas: beta_t = (sqrt(beta_start) + (t / (T - 1)) (sqrt(beta_end) - sqrt(beta_start)))^2.

    The square roots of the betas are evenly spaced, so the betas start
    more slowly than the linear schedule's (the "quad" schedule of the DDIM
    code, Song et al. 2021).

    Args:
        timesteps: number of diffusion steps T.
        beta_start: the first beta.
        beta_end: the last beta.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be at least 1, got {timesteps}")
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
    return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
