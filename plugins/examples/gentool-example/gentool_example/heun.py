"""Heun's method on the probability-flow ODE (Karras et al. 2022, Algorithm 1)."""

import torch


@torch.no_grad()
def heun(eps_fn, diffusion, x_T, *, steps=None, t_start=None, generator=None, callback=None, second_order: bool = True):
    """Heun's second-order ODE sampler (Karras et al. 2022, Algorithm 1); deterministic.

    In the variables sigma_t = sqrt((1 - abar_t) / abar_t) and
    y = x_t / sqrt(abar_t) the ODE is dy/dsigma = eps(x_t, t). Each step
    from t to the next timestep s takes an Euler step and, unless s is the
    data, corrects it with the average of the slopes at both ends (two
    network evaluations). ``generator`` is not used: there is no noise.

    Args:
        second_order: apply Heun's correction; false gives Euler's method
            (one network evaluation per step).
    """
    abar = diffusion.alphas_cumprod_64.tolist() + [1.0]  # abar[-1] = 1: the data, x_0
    ts = diffusion.timesteps(steps, t_start)
    x = x_T
    for i, t in enumerate(ts):
        s = ts[i + 1] if i + 1 < len(ts) else -1
        sigma_t, sigma_s = ((1 - abar[t]) / abar[t]) ** 0.5, ((1 - abar[s]) / abar[s]) ** 0.5
        y = x / abar[t] ** 0.5
        eps = eps_fn(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        y_next = y + (sigma_s - sigma_t) * eps  # Euler step
        if second_order and s >= 0:
            eps_s = eps_fn(y_next * abar[s] ** 0.5, torch.full((x.shape[0],), s, dtype=torch.long, device=x.device))
            y_next = y + (sigma_s - sigma_t) * (eps + eps_s) / 2  # Heun's correction
        x = y_next * abar[s] ** 0.5
        if callback is not None:
            replaced = callback({"i": i, "t": t, "t_next": s, "x": x, "x0": y - sigma_t * eps})
            if replaced is not None:
                x = replaced
    return x
