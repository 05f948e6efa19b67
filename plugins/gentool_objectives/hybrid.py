"""``hybrid``: learned reverse variances with L_hybrid = L_simple + lambda L_vlb (Nichol and Dhariwal 2021, sec. 3.1).

The network outputs 2C channels (``[denoiser] learn_sigma = true`` for the
U-Net): its prediction (eps, x0 or v), then v in [-1, 1] per pixel, with
log sigma_t^2 = frac log beta_t + (1 - frac) log beta-tilde_t, frac = (v + 1) / 2
(eq. 15, :mod:`gentool.vlb`). The loss per example at its uniform 0-based t is

    L_simple + lambda * T * L_t,   L_t = the bound's term at t in bits/dim

(T * L_t estimates L_vlb = sum_t L_t; improved-diffusion's "rescaled MSE" with
lambda = 0.001). L_t is the KL between the posterior q(x_{t-1} | x_t, x_0) and
the model's Gaussian for t >= 1, and the discretised Gaussian decoder's NLL at
t = 0; its mean uses the *detached* prediction, so L_vlb trains the variance
only and L_simple the mean (the stop-gradient of sec. 3.1).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor

from gentool import extract, learned_log_variance, split_output, vlb_term
from gentool_objectives.ddpm import DDPMObjective
from gentool_objectives.offset_noise import check_strength


def x0_from_prediction(diffusion, output: Tensor, x_t: Tensor, t: Tensor, prediction: str) -> Tensor:
    """The x0 a prediction implies; from v directly (x0 = sqrt(abar) x_t - sqrt(1 - abar) v), so finite at abar = 0."""
    if prediction == "x0":
        return output
    if prediction == "v":
        return extract(diffusion.sqrt_alphas_cumprod, t, x_t.ndim) * x_t - \
            extract(diffusion.sqrt_one_minus_alphas_cumprod, t, x_t.ndim) * output
    return diffusion.x0_from_eps(x_t, t, output)


class HybridObjective(DDPMObjective):
    """L_simple on the first C output channels plus lambda L_vlb on the learned variance (the last C)."""

    learned_variance = True

    @staticmethod
    def check(process) -> str | None:
        """L_vlb is the discrete chain's variational bound: only that chain (with its posterior) is trained."""
        if not (getattr(process, "discrete", False) and hasattr(process, "q_posterior")):
            return "the variational bound L_vlb is the discrete DDPM chain's (use [process] name = \"vp\")"
        return None

    def __init__(self, prediction: str, vlb_weight: float, offset: float) -> None:
        super().__init__(prediction, "l2", offset=offset)  # draw(): ddpm's, with its offset noise
        self.vlb_weight = vlb_weight

    def loss(self, net, diffusion, x0: Tensor, labels: Tensor | None, t: Tensor,
             noise: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Per-example L_simple + lambda T L_t, float32 ``[B]``; logs ``mse`` and ``vlb`` (T L_t) batch means."""
        x_t = diffusion.q_sample(x0, t, noise)  # eq. 4
        prediction, v = split_output(net(x_t, t, labels).float(), True)
        if prediction.shape != x0.shape:
            raise ValueError(f"the hybrid objective needs a network with 2C output channels (the U-Net's "
                             f"learn_sigma = true); got {2 * prediction.shape[1]} for {x0.shape[1]}-channel images")
        mse = (prediction - diffusion.target(x0, t, noise, self.prediction).float()).square().flatten(1).mean(1)
        # the stop-gradient on the mean: L_vlb sees the prediction as a constant and trains v alone
        x0_hat = x0_from_prediction(diffusion, prediction.detach(), x_t, t, self.prediction)
        mean, _, _ = diffusion.q_posterior(x0_hat, x_t, t)  # eq. 11 as the posterior mean at x0_hat
        vlb = diffusion.num_timesteps * vlb_term(diffusion, x0, x_t, t, mean, learned_log_variance(diffusion, v, t))
        vlb = vlb.float()
        return mse + self.vlb_weight * vlb, {"mse": mse.detach().mean(), "vlb": vlb.detach().mean()}

    def __repr__(self) -> str:
        return f"HybridObjective(prediction={self.prediction!r}, vlb_weight={self.vlb_weight}, offset={self.offset})"


def hybrid(
    *,
    prediction: Literal["eps", "x0", "v"] = "eps",
    vlb_weight: float = 0.001,
    offset_noise: float = 0.0,
) -> HybridObjective:
    """Learned variances, L_hybrid = L_simple + lambda L_vlb (Nichol and Dhariwal 2021, sec. 3.1).

    The denoiser must output twice the image channels (``[denoiser]
    learn_sigma = true``); samplers and bits/dim then use its variance.

    Args:
        prediction: what the first C output channels are: ``"eps"`` (the
            paper's choice), ``"x0"`` or ``"v"``.
        vlb_weight: lambda, the weight of L_vlb = T * L_t (estimated at the
            example's uniform t, in bits/dim); 0.001 in the paper.
        offset_noise: strength of offset noise (0: off); see ``ddpm``.
    """
    if not isinstance(vlb_weight, (int, float)) or isinstance(vlb_weight, bool) or not vlb_weight >= 0:
        raise ValueError(f"vlb_weight must be a number >= 0, got {vlb_weight!r}")
    check_strength(offset_noise)
    return HybridObjective(prediction, float(vlb_weight), float(offset_noise))
