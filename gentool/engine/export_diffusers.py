"""``gentool export --format diffusers``: a run as a folder that diffusers' DDPM and DDIM pipelines load.

The folder is what ``DDPMPipeline.save_pretrained`` writes: ``model_index.json``,
``unet/`` (a ``UNet2DModel``: config and safetensors weights) and
``scheduler/`` (a ``DDPMScheduler`` config). The U-Net of Ho et al. maps onto
``UNet2DModel`` parameter for parameter (diffusers' ``google/ddpm-cifar10-32``
is the same network): each resolution level becomes a ``DownBlock2D`` (an
``AttnDownBlock2D`` where it attends) and its mirror on the way up; gentool's
fused q/k/v 1x1 convolution splits into ``to_q``, ``to_k`` and ``to_v``; the
sinusoidal time embedding is sin-then-cos with frequencies
``10000 ** (-i / (dim / 2))``, which is ``flip_sin_to_cos = False``,
``freq_shift = 0``. Timesteps are 0-based in both (gentool's ``t`` is
diffusers' ``t``).

A class-conditional model (a class embedding with a null token) becomes
``num_class_embeds = num_classes + 1``: rows ``0..num_classes-1`` are the
classes and row ``num_classes`` is gentool's null label ``-1``.

The scheduler carries the recipe's betas: a named ``beta_schedule`` where
diffusers' formula gives the same betas (``linear``, ``squaredcos_cap_v2``),
``trained_betas`` otherwise; the prediction type (eps -> ``epsilon``, x0 ->
``sample``, v -> ``v_prediction``), the variance of the recipe's ancestral
sampler (beta -> ``fixed_large``, beta-tilde -> ``fixed_small``) and its x0
clipping; a learned variance (``learn_sigma``) is ``learned_range``. What
diffusers cannot express (another network layout, another conditioner) is
refused with an error naming the recipe option. Before anything is written the exported network is checked against
gentool's on a random input.

Sampling differences to know: diffusers' DDIM steps a fixed ``T // steps``
between timesteps (``timestep_spacing = "leading"``), gentool's DDIM spaces
``steps`` timesteps evenly over ``T-1..0``; the two agree exactly when
``steps = T``. diffusers' pipelines have no classifier-free guidance.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gentool.errors import GentoolError

#: gentool prediction -> diffusers ``prediction_type``
PREDICTION_TYPES = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
#: gentool ancestral ``variance`` -> diffusers ``variance_type``
VARIANCE_TYPES = {"beta": "fixed_large", "beta_tilde": "fixed_small"}
#: the largest difference between gentool's and the exported network's output that the export accepts
CHECK_ATOL = 1e-4


class DiffusersExportError(GentoolError, ValueError):
    """A run that diffusers' UNet2DModel and DDPMScheduler cannot express."""


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise DiffusersExportError("--format diffusers needs the diffusers package, which is not installed; "
                                   "install it with `pip install 'gentool[diffusers]'` or `pip install diffusers`"
                                   ) from None
    return diffusers


# -- the network ---------------------------------------------------------------
def _unet_layout(den: nn.Module, recipe) -> dict[str, Any]:
    """``UNet2DModel``'s config read off the structure of the U-Net of Ho et al. (gentool's layout)."""
    where = f"denoiser.name = {recipe.denoiser.name!r}"
    try:
        levels = list(den.down)
        widths = [level.blocks[0].res.conv1.out_channels for level in levels]
        attends = [not isinstance(level.blocks[0].attn, nn.Identity) for level in levels]
        layers = len(levels[0].blocks)
        attn_blocks = [level.blocks[0].attn for level, a in zip(levels, attends) if a] + [den.mid[0].attn]
        attn_widths = [w for w, a in zip(widths, attends) if a] + [widths[-1]]
        norm = den.norm_out
        res0 = levels[0].blocks[0].res
        config = {
            "in_channels": den.conv_in.in_channels, "out_channels": den.conv_out.out_channels,
            "block_out_channels": tuple(widths), "layers_per_block": layers,
            "down_block_types": tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attends),
            "up_block_types": tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)),
            "norm_num_groups": norm.num_groups, "norm_eps": norm.eps, "dropout": float(res0.dropout.p),
            "flip_sin_to_cos": False, "freq_shift": 0, "downsample_padding": 0,
            "time_embedding_type": "positional", "act_fn": "silu",
        }
        heads = {int(getattr(blk, "num_heads", 1)) for blk in attn_blocks}
    except (AttributeError, IndexError, TypeError) as exc:
        raise DiffusersExportError(f"{where}: only the U-Net of Ho et al. (gentool's `unet` layout) maps onto "
                                   f"diffusers' UNet2DModel; this denoiser does not ({exc})") from None
    head_dims = {w // h for w in attn_widths for h in heads}
    if heads == {1}:
        config["attention_head_dim"] = None  # one head as wide as each block
    elif len(heads) == 1 and len(head_dims) == 1:
        config["attention_head_dim"] = head_dims.pop()
    else:
        raise DiffusersExportError(f"denoiser.num_heads = {sorted(heads)}: UNet2DModel has one attention head "
                                   f"width for every block, but these attention blocks ({attn_widths} channels) "
                                   "give several; use num_heads = 1 or equal widths at the attention levels")
    learned = bool(getattr(den, "learned_variance", False))  # 2C channels: the prediction, then v
    if config["out_channels"] != config["in_channels"] * (2 if learned else 1):
        raise DiffusersExportError(
            f"denoiser.out_channels = {config['out_channels']}: only a network that predicts one "
            f"{config['in_channels']}-channel target (and, with learn_sigma, its variance) is exported to diffusers")
    return config


#: gentool U-Net parameter prefixes -> UNet2DModel's (levels, blocks and the middle: see _rename)
_PREFIXES = {"time_embed.0.": "time_embedding.linear_1.", "time_embed.2.": "time_embedding.linear_2.",
             "norm_out.": "conv_norm_out."}
_RES = {"emb_proj": "time_emb_proj", "skip": "conv_shortcut"}
_ATTN = {"norm": "group_norm", "proj": "to_out.0"}


def _rename_part(kind: str, rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{(_RES if kind == 'res' else _ATTN).get(head, head)}.{tail}"


def _rename(key: str) -> str:
    if m := re.match(r"^(down|up)\.(\d+)\.resample\.conv\.(.*)$", key):
        side = "downsamplers" if m[1] == "down" else "upsamplers"
        return f"{m[1]}_blocks.{m[2]}.{side}.0.conv.{m[3]}"
    if m := re.match(r"^(down|up)\.(\d+)\.blocks\.(\d+)\.(res|attn)\.(.*)$", key):
        group = "resnets" if m[4] == "res" else "attentions"
        return f"{m[1]}_blocks.{m[2]}.{group}.{m[3]}.{_rename_part(m[4], m[5])}"
    if m := re.match(r"^mid\.(\d+)\.(res|attn)\.(.*)$", key):
        # gentool's middle is [res + attn, res]; diffusers' is resnets [0, 1] with attentions [0] between
        group = "resnets" if m[2] == "res" else "attentions"
        return f"mid_block.{group}.{m[1]}.{_rename_part(m[2], m[3])}"
    for old, new in _PREFIXES.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def unet_state_dict(den: nn.Module) -> dict[str, Tensor]:
    """The denoiser's weights under UNet2DModel's names (q/k/v split, 1x1 convolutions as linear layers)."""
    out: dict[str, Tensor] = {}
    for key, value in den.state_dict().items():
        value = value.detach().cpu().float().contiguous()
        name = _rename(key)
        if ".attentions." in name and ".qkv." in name:
            prefix, _, param = name.rpartition(".qkv.")
            for part, chunk in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                out[f"{prefix}.{part}.{param}"] = chunk.reshape(chunk.shape[0], -1).clone() if param == "weight" \
                    else chunk.clone()
        elif ".attentions." in name and ".to_out.0.weight" in name:
            out[name] = value.reshape(value.shape[0], -1).clone()
        else:
            out[name] = value
    return out


def _class_embedding(model, recipe) -> tuple[int | None, Tensor | None]:
    """``num_class_embeds`` and its weight (the classes, then the null label), or (None, None)."""
    cond = model.conditioner
    if cond is None:
        return None, None
    emb, null = getattr(cond, "embedding", None), getattr(cond, "null", None)
    if not isinstance(emb, nn.Embedding) or not isinstance(null, Tensor) or null.shape != emb.weight.shape[1:]:
        raise DiffusersExportError(f"conditioner.name = {recipe.conditioner.name!r}: diffusers' UNet2DModel "
                                   "takes class labels only through one embedding table (num_class_embeds); "
                                   "only a class embedding with a null token can be exported")
    weight = torch.cat([emb.weight.detach().float(), null.detach().float()[None]]).cpu().contiguous()
    return int(emb.num_embeddings) + 1, weight


def build_unet(run) -> nn.Module:
    """The run's sampling (EMA) network as a diffusers ``UNet2DModel`` (float32, on the CPU, eval mode)."""
    diffusers = _diffusers()
    model = run.sampling_model
    den = model.denoiser
    config = _unet_layout(den, run.recipe)
    num_class_embeds, class_weight = _class_embedding(model, run.recipe)
    config.update(sample_size=run.image_shape[-1], num_class_embeds=num_class_embeds)
    unet = diffusers.UNet2DModel(**config)
    state = unet_state_dict(den)
    if class_weight is not None:
        state["class_embedding.weight"] = class_weight
    missing, unexpected = unet.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise DiffusersExportError(f"denoiser.name = {run.recipe.denoiser.name!r}: its parameters do not map onto "
                                   f"UNet2DModel (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return unet.eval()


def diffusers_labels(labels: Tensor, num_classes: int) -> Tensor:
    """gentool labels (``-1``: no class) as the exported model's class labels (the null label is ``num_classes``)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    return torch.where(labels < 0, torch.full_like(labels, num_classes), labels)


@torch.no_grad()
def check_unet(run, unet: nn.Module, *, atol: float = CHECK_ATOL, seed: int = 0) -> float:
    """The largest |gentool - diffusers| network output on a random input (raises past ``atol``)."""
    model = run.sampling_model.eval()
    gen = torch.Generator().manual_seed(seed)
    c, h, w = run.image_shape
    x = torch.randn((2, c, h, w), generator=gen)
    t = torch.randint(0, run.diffusion.num_timesteps, (2,), generator=gen)
    labels = torch.tensor([0, -1]) if model.num_classes else None
    device = next(model.parameters()).device
    ours = model(x.to(device), t.to(device), None if labels is None else labels.to(device)).float().cpu()
    kwargs = {"class_labels": diffusers_labels(labels, model.num_classes)} if labels is not None else {}
    theirs = unet(x, t, **kwargs).sample
    diff = float((ours - theirs).abs().max())
    if not diff <= atol:
        raise DiffusersExportError(f"denoiser.name = {run.recipe.denoiser.name!r}: the exported UNet2DModel "
                                   f"differs from gentool's network by up to {diff:.3g} (more than {atol:g}); "
                                   "its layout does not match diffusers'")
    return diff


# -- the scheduler -------------------------------------------------------------
def _beta_schedule(betas: Tensor) -> dict[str, Any]:
    """A named diffusers ``beta_schedule`` giving these betas (to 1e-6), else ``trained_betas``."""
    diffusers = _diffusers()
    T = betas.numel()
    candidates = [
        {"beta_schedule": "linear", "beta_start": float(betas[0]), "beta_end": float(betas[-1])},
        {"beta_schedule": "squaredcos_cap_v2"},
    ]
    for option in candidates:
        theirs = diffusers.DDPMScheduler(num_train_timesteps=T, **option).betas.double()
        if torch.allclose(theirs, betas, rtol=1e-5, atol=1e-7):
            return option
    return {"beta_schedule": "linear", "trained_betas": [float(b) for b in betas]}


def _sampler_options(recipe) -> dict[str, Any]:
    """``variance_type`` and ``clip_sample`` from the recipe's sampler options (their defaults otherwise)."""
    opts = recipe.sampler.options
    variance = opts.get("variance", "beta")
    if variance not in VARIANCE_TYPES:
        raise DiffusersExportError(f"sampler.variance = {variance!r}: diffusers' variance types express "
                                   f"{', '.join(VARIANCE_TYPES)}")
    return {"variance_type": VARIANCE_TYPES[variance], "clip_sample": bool(opts.get("clip_denoised", True))}


def scheduler_config(run) -> dict[str, Any]:
    """The ``DDPMScheduler`` keyword arguments of the run's diffusion and sampler.

    A learned variance (Nichol and Dhariwal eq. 15, ``frac = (v + 1) / 2`` between
    log beta-tilde and log beta) is diffusers' ``learned_range``, the same formula.
    """
    prediction = run.sampling_model.prediction
    if prediction not in PREDICTION_TYPES:
        raise DiffusersExportError(f"objective prediction = {prediction!r}: diffusers' prediction types express "
                                   f"{', '.join(PREDICTION_TYPES)}")
    return {"num_train_timesteps": run.diffusion.num_timesteps, **_beta_schedule(run.diffusion.betas_64.cpu()),
            "prediction_type": PREDICTION_TYPES[prediction], "clip_sample_range": 1.0,
            "timestep_spacing": "leading", "steps_offset": 0, **_sampler_options(run.recipe),
            **({"variance_type": "learned_range"} if getattr(run.sampling_model.denoiser, "learned_variance", False)
               else {})}


# -- the folder ----------------------------------------------------------------
#: what marks a folder as one gentool exported (diffusers' own folders have model_index.json too)
MARKER = "gentool.json"
#: the prefix of the temporary folder inside an existing ``out`` (one a killed export left is not a foreign file)
_TMP_PREFIX = ".gentool-export."


def _entries(folder: Path) -> dict[Path, str]:
    """Every entry under ``folder`` (relative path -> "dir", "file" or "other"); links are "other", never followed."""
    found: dict[Path, str] = {}
    for path in sorted(folder.rglob("*")):
        if path.relative_to(folder).parts[0].startswith(_TMP_PREFIX):
            continue
        kind = "other" if path.is_symlink() else "dir" if path.is_dir() else "file" if path.is_file() else "other"
        found[path.relative_to(folder)] = kind
    return found


def _check_reusable(out: Path) -> None:
    """``out`` is a new or empty folder or one gentool exported; anything else is refused before any work."""
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DiffusersExportError(f"{out}: exists and is not a folder; name a new or empty folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise DiffusersExportError(f"{out}: holds files that gentool did not export (it has no {MARKER}); "
                                   "name a new or empty folder")


def write_folder(out: str | Path, write) -> Path:
    """Call ``write(folder)`` on a temporary folder, then make it ``out``; nothing gentool did not write is deleted.

    A new ``out`` is the temporary folder renamed (atomic). An existing one
    (empty, or an earlier export) gets each written file renamed into it, one
    atomic ``os.replace`` a file; an earlier export is updated only when every
    entry in it is one this export writes too, so no other file is touched.
    """
    out = Path(os.path.abspath(out))  # "-o ." is the current folder by its name, not "."
    _check_reusable(out)
    new = not out.exists()
    if new:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    else:
        tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=out))  # same file system, found by name
    try:
        write(tmp)
        if new:
            tmp.rename(out)
            return out
        ours, theirs = _entries(tmp), _entries(out)
        foreign = sorted(str(rel) for rel, kind in theirs.items() if ours.get(rel) != kind)
        if foreign:
            raise DiffusersExportError(f"{out}: holds {', '.join(foreign[:3])}"
                                       f"{f' and {len(foreign) - 3} more' if len(foreign) > 3 else ''}, which this "
                                       "export does not write; name a new or empty folder (nothing was changed)")
        for rel, kind in ours.items():
            if kind == "dir":
                (out / rel).mkdir(exist_ok=True)
            else:
                os.replace(tmp / rel, out / rel)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_run(run, out: str | Path) -> Path:
    """Write a built run's sampling network and schedule as a diffusers ``DDPMPipeline`` folder."""
    diffusers = _diffusers()
    if getattr(run, "latent", False):  # a DDPMPipeline generates pixels: it has no autoencoder to decode with
        raise DiffusersExportError(f"autoencoder.name = {run.recipe.autoencoder.name!r}: the run diffuses latents, "
                                   "and diffusers' DDPMPipeline has no autoencoder to decode them; export it with "
                                   "`gentool export RUN` (safetensors) instead")
    if not (getattr(run.process, "discrete", False) and hasattr(run.process, "betas_64")):
        raise DiffusersExportError(f"process.name = {run.recipe.process.name!r}: diffusers' DDPMScheduler is the "
                                   "discrete DDPM chain (betas over integer timesteps), which this run's process is "
                                   "not; export it with `gentool export RUN` (safetensors) instead")
    _check_reusable(Path(os.path.abspath(out)))
    unet = build_unet(run)
    check_unet(run, unet)
    scheduler = diffusers.DDPMScheduler(**scheduler_config(run))
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)

    def write(folder: Path) -> None:
        pipe.save_pretrained(folder, safe_serialization=True)
        (folder / MARKER).write_text(json.dumps({
            "step": run.step, "null_class_label": run.sampling_model.num_classes or None,
            "recipe": run.recipe.dumps()}, indent=1), encoding="utf-8")

    return write_folder(out, write)
