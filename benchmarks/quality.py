"""Sample quality per unit of compute: gentool's conditional Fashion-MNIST recipe against a plain diffusers setup.

    python benchmarks/quality.py                      # the full run (docs/quality.md)
    python benchmarks/quality.py --quick              # a smoke test in a minute or two

Both systems train in the same process, one after the other, on the same
device and data, and are scored by the same classifier (``gentool-cnn28``
after ``gentool features train fashion_mnist``) in its features:

* diffusers: ``UNet2DModel`` with ``num_class_embeds`` = classes + 1 (the last
  is the null class), ``DDPMScheduler`` (linear betas, T = 1000), AdamW with
  linear warm-up, ``EMAModel``, labels dropped to the null class with
  probability ``p_uncond``, gradient clipping; sampled by
  ``DPMSolverMultistepScheduler`` (DPM-Solver++(2M)) with guidance written
  as gentool writes it: eps = (1 + w) eps(x, c) - w eps(x, null). Its widths
  and hyperparameters are the baseline of issue 15 (the untuned recipe:
  1.06M parameters, 1,200 steps of batch 32, lr 1e-3 after 100 warm-up steps,
  EMA 0.999, p_uncond 0.2, clip 1.0); its training wall time is the budget.
* gentool: the recipe as it stands (its own network, objective, steps, batch
  and sampler options), trained by ``gentool.train`` and sampled by
  ``Run.sample`` with the same number of sampling steps.

Samples ask for every class in turn (n_per_class each). Reported for each
guidance weight: FID in the classifier's 128 pooled features against the
test split, IS from its logits, and class accuracy (the fraction classified
as the class asked for); the real-data floor is the same metrics for as many
real test images against the train split.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
BASELINE = dict(steps=1200, batch=32, lr=1e-3, warmup=100, ema=0.999, p_uncond=0.2, clip=1.0,
                channels=(32, 64, 64), layers=1)
FULL = dict(steps=BASELINE["steps"], n_per_class=100, guidance="0,1,2,3", sampling_steps=20, ref_n=0)
QUICK = dict(steps=40, n_per_class=4, guidance="0,2", sampling_steps=5, ref_n=2000)  # --quick: gentool trains as many steps


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "fashion_mnist_cfg.toml"), help="gentool recipe")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="override in the gentool recipe")
    p.add_argument("--classifier", default="", help="gentool-cnn28 weights [default: gentool features train's file]")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=None, help=f"diffusers training steps [{BASELINE['steps']}]")
    p.add_argument("--batch", type=int, default=BASELINE["batch"], help="diffusers batch size")
    p.add_argument("--diffusers-channels", default=",".join(map(str, BASELINE["channels"])))
    p.add_argument("--diffusers-layers", type=int, default=BASELINE["layers"])
    p.add_argument("--n-per-class", type=int, default=None, help="samples per class [100]")
    p.add_argument("--guidance", default=None, help="guidance weights w [0,1,2,3]")
    p.add_argument("--sampling-steps", type=int, default=None, help="DPM-Solver++(2M) steps [20]")
    p.add_argument("--batch-size", type=int, default=500, help="images per sampling / feature batch")
    p.add_argument("--ref-n", type=int, default=None, help="data images behind each split's reference statistics [all]")
    p.add_argument("--skip-diffusers", action="store_true", help="gentool only (tuning); no budget then")
    p.add_argument("--skip-gentool", action="store_true",
                   help="diffusers only: with --skip-diffusers in another process (one thread each), both systems "
                        "train side by side under the same load; --merge prints their one table")
    p.add_argument("--merge", nargs="+", default=[], metavar="JSON",
                   help="print the one table of results files written by --out (e.g. a --skip-gentool and a "
                        "--skip-diffusers run) and exit")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 40 steps, 4 images per class, w = 0,2, 5 sampling steps, 2,000 reference images")
    p.add_argument("--time-steps", type=int, default=0,
                   help="only time this many training steps of each system (after 3 warm-up steps): s/step and the "
                        "gentool steps that fit the diffusers budget")
    p.add_argument("--out", default="", help="also write the results as JSON here")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.overrides = [f"train.steps={args.steps}", *args.overrides]
    args.guidance = [float(w) for w in args.guidance.split(",")]
    args.diffusers_channels = tuple(int(c) for c in args.diffusers_channels.split(","))
    return args


# ----------------------------------------------------------------------------- data and scoring


def train_tensors(run) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole train split as floats in [-1, 1] and labels."""
    data = run.dataset("train")
    images = getattr(data, "images", None)
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        return images.float() / 127.5 - 1, data.labels.long()
    x = torch.stack([torch.as_tensor(data[i][0]) for i in range(len(data))])
    return x, torch.tensor([int(data[i][1]) for i in range(len(data))])


def load_classifier(run, path: str):
    from gentool.evaluation.features import build_extractor

    fx = build_extractor(run.registry, "gentool-cnn28", path, data=run.recipe.data.name).to(run.device)
    if not fx.trained:
        sys.exit(f"error: {fx.untrained_hint}")
    return fx


class Scorer:
    """FID / IS / class accuracy in the classifier's features; reference features computed once (cached on disk)."""

    def __init__(self, run, fx, batch_size: int, reference_n: int = 0):
        from gentool.evaluation.reference import reference_features

        self.run, self.fx, self.batch_size = run, fx, batch_size
        options = dict(weights=fx.weights_path, batch_size=batch_size, reference_n=reference_n)
        self.test, _ = reference_features(run, fx, split="test", **options)
        self.train, _ = reference_features(run, fx, split="train", **options)

    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        from gentool.evaluation.features import concat, extract, to_rgb_uint8

        return concat([extract(self.fx, to_rgb_uint8(images[i:i + self.batch_size]).to(self.run.device))
                       for i in range(0, len(images), self.batch_size)])

    def score(self, feats: dict[str, torch.Tensor], labels: torch.Tensor, reference=None) -> dict[str, float]:
        from gentool.evaluation.classes import class_accuracy
        from gentool.evaluation.fidelity import fid, isc

        reference = self.test if reference is None else reference
        return {"fid": fid(feats["pool"], reference["pool"]), "isc": isc(feats["logits"], 2020)["isc"],
                "class_acc": class_accuracy(feats["logits"], labels)}

    def floor(self, n: int) -> dict[str, float]:
        from gentool.evaluation.classes import real_features

        feats, labels = real_features(self.run, self.fx, n=n, batch_size=self.batch_size, split="test")
        return self.score(feats, labels, reference=self.train)


# ----------------------------------------------------------------------------- gentool


def gentool_system(args, out_dir: Path):
    import gentool

    overrides = [f'run.output_dir="{out_dir.as_posix()}"', "train.checkpoint_every=1000000", "train.sample_every=0",
                 *args.overrides]
    run = gentool.build(gentool.load_recipe(args.recipe, overrides=overrides), device=args.device)
    return run


def train_gentool(run) -> float:
    import gentool

    t0 = time.perf_counter()
    gentool.train(run, progress=False, log=lambda line: None)
    _sync(run.device)
    return time.perf_counter() - t0


@torch.no_grad()
def sample_gentool(run, labels: torch.Tensor, w: float, steps: int, batch_size: int, seed: int = 0) -> torch.Tensor:
    g = run.generator(seed)
    parts = [run.sample(len(labels[i:i + batch_size]), labels=labels[i:i + batch_size], guidance=w, steps=steps,
                        sampler="dpmpp_2m", generator=g, progress=False).cpu()
             for i in range(0, len(labels), batch_size)]
    return torch.cat(parts)


# ----------------------------------------------------------------------------- diffusers


def diffusers_unet(args, num_classes: int, image_size: int, in_channels: int):
    from diffusers import UNet2DModel

    levels = len(args.diffusers_channels)
    return UNet2DModel(sample_size=image_size, in_channels=in_channels, out_channels=in_channels,
                       layers_per_block=args.diffusers_layers, block_out_channels=args.diffusers_channels,
                       down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                       num_class_embeds=num_classes + 1)  # the last class is the null class


def train_diffusers(args, unet, x_train, y_train, num_classes: int, device) -> tuple[object, float]:
    """The plain diffusers training loop of issue 15; returns the EMA U-Net and the wall time."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    b = BASELINE
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    unet = unet.to(device).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=b["lr"], weight_decay=0.0)
    lr_sched = get_scheduler("constant_with_warmup", opt, num_warmup_steps=b["warmup"])
    ema = EMAModel(unet.parameters(), decay=b["ema"])
    g = torch.Generator().manual_seed(0)
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        idx = torch.randint(len(x_train), (args.batch,), generator=g)
        x0, y = x_train[idx].to(device), y_train[idx].to(device)
        drop = torch.rand(args.batch, generator=g).to(device) < b["p_uncond"]
        y = torch.where(drop, torch.full_like(y, num_classes), y)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=g).to(device)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t, class_labels=y).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), b["clip"])
        opt.step()
        lr_sched.step()
        ema.step(unet.parameters())
    _sync(device)
    seconds = time.perf_counter() - t0
    ema_unet = copy.deepcopy(unet)
    ema.copy_to(ema_unet.parameters())
    return ema_unet.eval(), seconds


@torch.no_grad()
def sample_diffusers(unet, labels: torch.Tensor, w: float, steps: int, batch_size: int, num_classes: int,
                     shape: tuple[int, int, int], device, seed: int = 0) -> torch.Tensor:
    from diffusers import DPMSolverMultistepScheduler

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(0, len(labels), batch_size):
        c = labels[i:i + batch_size].to(device)
        sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                            algorithm_type="dpmsolver++", solver_order=2)
        sched.set_timesteps(steps)
        x = torch.randn((len(c), *shape), generator=g).to(device)
        null = torch.full_like(c, num_classes)
        for t in sched.timesteps:
            if w == 0:
                eps = unet(x, t, class_labels=c).sample
            else:
                eps_c, eps_u = unet(torch.cat([x, x]), t, class_labels=torch.cat([c, null])).sample.chunk(2)
                eps = (1 + w) * eps_c - w * eps_u
            x = sched.step(eps, t, x).prev_sample
        out.append(x.clamp(-1, 1).cpu())
    return torch.cat(out)


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- main


def time_steps(args) -> dict:
    """Seconds per training step of each system (after 3 warm-up steps), measured alternately in one process."""
    with tempfile.TemporaryDirectory(prefix="gentool-quality-") as tmp:
        k, warm = args.time_steps, 3
        base = gentool_system(args, Path(tmp) / "a")
        x_train, y_train = train_tensors(base)
        C, shape = base.num_classes, base.image_shape
        out = {"device": str(base.device), "threads": torch.get_num_threads(), "steps": k}
        for _ in range(2):  # alternate, so both see the same load
            for name in ("diffusers", "gentool"):
                times = []
                for steps in (warm, warm + k):  # the difference excludes start-up costs
                    if name == "diffusers":
                        a = argparse.Namespace(**{**vars(args), "steps": steps})
                        unet = diffusers_unet(args, C, shape[-1], shape[0])
                        times.append(train_diffusers(a, unet, x_train, y_train, C, base.device)[1])
                    else:
                        a = argparse.Namespace(**{**vars(args), "overrides": [*args.overrides, f"train.steps={steps}"]})
                        times.append(train_gentool(gentool_system(a, Path(tmp) / f"g{steps}-{time.time_ns()}")))
                seconds = times[1] - times[0]
                out.setdefault(name, []).append(seconds / k)
        out = {**out, **{n: min(out[n]) for n in ("diffusers", "gentool")}}
        out["gentool_steps_in_budget"] = int(BASELINE["steps"] * out["diffusers"] / out["gentool"])
    print(json.dumps(out))
    return out


def merge(paths: list[str]) -> dict:
    """One results dict from several ``--out`` files of the same sampling set-up (systems side by side)."""
    parts = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    results = {**parts[0], "systems": {}}
    for part in parts:
        same = {k: part[k] for k in ("n", "sampling_steps", "device")}
        if same != {k: results[k] for k in same}:
            sys.exit(f"error: {paths[0]} and the other files differ in {same}: merge only runs of one set-up")
        results["systems"].update(part["systems"])
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        results = merge(args.merge)
        print(table(results))
        return results
    torch.manual_seed(0)
    if args.time_steps:
        return time_steps(args)
    import gentool.engine.train  # noqa: F401 - an engine that cannot load fails now, not after diffusers trained
    with tempfile.TemporaryDirectory(prefix="gentool-quality-") as tmp:
        run = gentool_system(args, Path(tmp))
        fx = load_classifier(run, args.classifier)
        C, shape = run.num_classes, run.image_shape
        labels = torch.arange(C * args.n_per_class) % C
        scorer = Scorer(run, fx, args.batch_size, args.ref_n)
        results: dict = {"device": str(run.device), "threads": torch.get_num_threads(), "n": len(labels), "ref_n": args.ref_n,
                         "sampling_steps": args.sampling_steps, "guidance": args.guidance, "systems": {}}
        results["classifier"] = {"path": fx.weights_path, "test_accuracy": float(fx.metadata.get("test_accuracy", "nan"))}
        if not args.skip_diffusers:
            x_train, y_train = train_tensors(run)
            unet = diffusers_unet(args, C, shape[-1], shape[0])
            params = sum(p.numel() for p in unet.parameters())
            ema_unet, seconds = train_diffusers(args, unet, x_train, y_train, C, run.device)
            results["systems"]["diffusers"] = system_result(
                args, scorer, labels, params, args.steps, args.batch, seconds,
                lambda w: sample_diffusers(ema_unet, labels, w, args.sampling_steps, args.batch_size, C, shape, run.device))
            del x_train, y_train
        if not args.skip_gentool:
            seconds = train_gentool(run)
            tr = run.recipe.train
            params = sum(p.numel() for p in run.model.parameters())
            results["systems"]["gentool"] = system_result(
                args, scorer, labels, params, tr.steps, tr.batch_size, seconds,
                lambda w: sample_gentool(run, labels, w, args.sampling_steps, args.batch_size))
        results["floor"] = scorer.floor(len(labels))
        results["recipe"] = str(args.recipe)
        results["overrides"] = args.overrides
    print(table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def system_result(args, scorer: Scorer, labels, params: int, steps: int, batch: int, seconds: float, sample) -> dict:
    out = {"params": params, "steps": steps, "batch": batch, "train_s": round(seconds, 2), "by_guidance": {}}
    for w in args.guidance:
        t0 = time.perf_counter()
        images = sample(w)
        entry = scorer.score(scorer.features(images), labels)
        entry["sample_s"] = round(time.perf_counter() - t0, 2)
        out["by_guidance"][f"{w:g}"] = entry
    return out


def table(results: dict) -> str:
    acc = results["classifier"]["test_accuracy"]
    lines = [f"device {results['device']} ({results['threads']} threads), n = {results['n']} samples, "
             f"DPM-Solver++(2M) {results['sampling_steps']} steps; classifier test accuracy {acc:.2%}",
             "| system | params | steps x batch | train s | w | FID | IS | class acc | acc / real | sample s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, s in results["systems"].items():
        for w, e in s["by_guidance"].items():
            lines.append(f"| {name} | {s['params'] / 1e6:.2f}M | {s['steps']} x {s['batch']} | {s['train_s']:.0f} | {w} | "
                         f"{e['fid']:.2f} | {e['isc']:.2f} | {e['class_acc']:.1%} | {e['class_acc'] / acc:.2f} | "
                         f"{e['sample_s']:.0f} |")
    f = results["floor"]
    lines.append(f"| real test images | | | | | {f['fid']:.2f} | {f['isc']:.2f} | {f['class_acc']:.1%} | "
                 f"{f['class_acc'] / acc:.2f} | |")
    systems = results["systems"]
    if {"gentool", "diffusers"} <= set(systems):
        g, d = systems["gentool"], systems["diffusers"]
        best = lambda s: min(s["by_guidance"].values(), key=lambda e: e["fid"])  # noqa: E731
        lines.append(f"gentool / diffusers: train time {g['train_s'] / d['train_s']:.2f}x, best FID "
                     f"{best(g)['fid'] / best(d)['fid']:.2f}x" if math.isfinite(best(d)["fid"]) else "")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
