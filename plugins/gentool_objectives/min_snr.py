"""Min-SNR-gamma loss weights (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy").

With SNR_t = abar_t / (1 - abar_t) (0-based t), the weight of an example at
timestep t clips the effective x0-loss weight at gamma (sec. 3.4):

* x0 target:  w_t = min(SNR_t, gamma)
* eps target: w_t = min(SNR_t, gamma) / SNR_t        (= min(1, gamma / SNR_t))
* v target:   w_t = min(SNR_t, gamma) / (SNR_t + 1)

The eps weight is written min(1, gamma / SNR_t) so it stays 1 (its limit) at
SNR_t = 0 under a zero-terminal-SNR schedule.
"""

from __future__ import annotations

from torch import Tensor


def snr_of(diffusion, t: Tensor) -> Tensor:
    """SNR_t = abar_t / (1 - abar_t) at 0-based ``t`` ``[B]``, float64 (0 where abar_t = 0)."""
    a = diffusion.alphas_cumprod_64.to(t.device)[t]
    return a / (1.0 - a)


def min_snr_weight(snr: Tensor, gamma: float, prediction: str) -> Tensor:
    """The per-example min-SNR-gamma weight for a network predicting ``prediction`` (eps, x0 or v)."""
    clipped = snr.clamp(max=gamma)
    if prediction == "x0":
        return clipped
    if prediction == "eps":
        return (gamma / snr).clamp(max=1.0)  # min(SNR, gamma) / SNR, 1 at SNR = 0
    if prediction == "v":
        return clipped / (snr + 1.0)
    raise ValueError(f"unknown prediction {prediction!r}; valid: eps, x0, v")


def snr_at(process, t: Tensor) -> Tensor:
    """SNR(t) = alpha^2 / sigma^2, float64 ``[B]``: from alpha-bar on the discrete chain, else exp(lambda(t))."""
    if hasattr(process, "alphas_cumprod_64"):
        return snr_of(process, t)
    return process.log_snr(t).double().exp()


def min_snr_weight_at(process, t: Tensor, gamma: float, prediction: str) -> Tensor:
    """The min-SNR-gamma weight at ``t`` of any process: min(SNR, gamma) times (d x0 / d output)^2.

    The derivative is sigma / alpha for eps, 1 for x0 and sigma / (alpha^2 + sigma^2) for v; on a
    variance-preserving process (alpha^2 + sigma^2 = 1) these are the three weights of the module docstring.
    """
    if hasattr(process, "alphas_cumprod_64") or prediction != "v":
        return min_snr_weight(snr_at(process, t), gamma, prediction)
    alpha, sigma = process.alpha(t).double(), process.sigma(t).double()
    return snr_at(process, t).clamp(max=gamma) * (sigma / (alpha**2 + sigma**2)) ** 2


def check_gamma(gamma: float) -> None:
    if not isinstance(gamma, (int, float)) or isinstance(gamma, bool) or not gamma > 0:
        raise ValueError(f"min_snr_gamma must be a positive number, got {gamma!r}")

