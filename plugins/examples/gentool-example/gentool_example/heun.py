"""Heun's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1), on any noise process."""

import math

import torch

from gentool import coefficients, data_time, karras_sigma


@torch.no_grad()
def heun(denoise, process, x_T, *, steps=None, t_start=None, generator=None, callback=None, second_order: bool = True):
    """Heun's second-order ODE sampler (Karras et al. 2022, Algorithm 1); deterministic.

    In Karras et al.'s noise level sigma = sigma(t) / alpha(t) and y = x_t / alpha(t)
    the ODE is dy/dsigma = eps(x_t, t). Each step from t to the next time s of
    the process's grid takes an Euler step, y_s = x0 + sigma_s eps (finite even
    from infinite noise), and, unless s is the data, corrects it with the
    average of the slopes at both ends (two network evaluations). ``generator``
    is not used: there is no noise.

    Args:
        second_order: apply Heun's correction; false gives Euler's method
            (one network evaluation per step).
    """
    ts = list(process.grid(steps, t_start))
    end = data_time(process)
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else end
        (alpha_t, _), (alpha_s, _) = coefficients(process, t), coefficients(process, s)
        sigma_t, sigma_s = karras_sigma(process, t), karras_sigma(process, s)
        d = denoise(x, t)  # the record: d.x0 and d.eps
        y_next = d.x0 + sigma_s * d.eps  # Euler step: y + (sigma_s - sigma_t) eps
        if second_order and s != end and math.isfinite(sigma_t):
            eps_s = denoise(y_next * alpha_s, s).eps
            y_next = x / alpha_t + (sigma_s - sigma_t) * (d.eps + eps_s) / 2  # Heun's correction
        x = y_next * alpha_s
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": d.x0})
            if replaced is not None:
                x = replaced
    return x
