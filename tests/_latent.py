"""A tiny latent-diffusion setup for the tests: an image folder of smooth 16x16 colour images, a ``kl``
autoencoder that encodes them to 4x4x4 latents (trained a few dozen steps), and a recipe that diffuses them."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from PIL import Image


def smooth_images(root: Path, n_train: int = 64, n_test: int = 16, size: int = 16, seed: int = 0) -> Path:
    """``root/train`` and ``root/test``: each image a colour plus a gradient plus a Gaussian bump of a colour."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a, b, c = rng.uniform(-1, 1, (3, 3))
            cx, cy = rng.uniform(0.25, 0.75, 2)
            bump = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / 0.05)[..., None]
            img = 0.5 * (c + 0.5 * a * (xx[..., None] - 0.5) + 0.5 * b * (yy[..., None] - 0.5))
            img = img + bump * rng.uniform(-1, 1, 3)
            Image.fromarray(np.clip((img + 1) * 127.5, 0, 255).astype(np.uint8)).save(root / split / f"{i:03d}.png")
    return root


#: a kl autoencoder of 16x16 RGB images to 4x4x4 latents (factor 4), 40k parameters
KL = {"name": "kl", "in_channels": 3, "latent_channels": 4, "channels": 8, "channel_mult": [1, 2, 2],
      "num_res_blocks": 1, "steps": 60, "batch_size": 8, "lr": 3e-3, "checkpoint_every": 30, "log_every": 30}


def latent_recipe(tmp: Path, *, images: Path, autoencoder: Path, name: str = "lat", tasks: list | None = None) -> dict:
    """A recipe diffusing the latents of ``images`` (random flips) with a one-level U-Net; 2 train steps."""
    return copy.deepcopy({
        "run": {"name": name, "output_dir": (tmp / "runs").as_posix(), "device": "cpu", "compile": False, "seed": 0,
                "threads": 1, "loggers": ["jsonl"]},
        "data": {"name": "image_folder", "root": images.as_posix(), "image_size": 16, "random_flip": True},
        "autoencoder": {**KL, "path": autoencoder.as_posix()},
        "schedule": {"name": "linear", "timesteps": 20, "beta_end": 0.3},
        "denoiser": {"name": "unet", "in_channels": 4, "image_size": 4, "channels": 32, "channel_mult": [1],
                     "num_res_blocks": 1, "attention_resolutions": [], "dropout": 0.0},
        "sampler": {"name": "ddim", "steps": 3},
        "train": {"steps": 2, "batch_size": 8, "checkpoint_every": 2, "log_every": 1, "sample_every": 0,
                  "test_loss_timesteps": [5, 10]},
        "tasks": tasks or [],
    })
