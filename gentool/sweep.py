"""``gentool sweep``: train the product of recipe variants one after another, then compare them.

``--set schedule.name=linear,cosine --set train.lr=1e-3,2e-4`` gives four
variants; several recipe files (``gentool sweep a.toml b.toml``: whole recipes
that differ in more than a few keys, such as DDPM against flow matching and
EDM) are one more axis, each variant folder starting with its file's name, in
``<output_dir>/<a+b>/``. Each variant is the recipe with those overrides and trains into
``<output_dir>/<name>/<variant>`` (``runs/fashion_mnist/schedule.name=cosine,train.lr=0.001``),
a run directory like any other (a name past 200 bytes is cut and ended by
``~<hash>``, so every variant has its own folder; a grid of more than
:data:`MAX_VARIANTS` is refused before anything is checked).
``<output_dir>/<name>/sweep.json`` records the variants and which finished
with their tasks; ``--variant I`` processes update it under a file lock. Every variant trains like
``gentool run`` (resuming its run directory), so a sweep that is stopped
(Ctrl-C, a killed job) and started again trains nothing twice: finished
variants resume to a no-op (and their tasks are not run again), the
interrupted one continues from its last checkpoint, and a larger
``--set train.steps`` trains every variant on. At the
end :func:`gentool.compare.compare` writes ``compare.png`` and
``compare.json`` into the sweep folder.

On several GPUs, run the variants side by side: ``--variant I`` runs only
the I-th (0-based; a job array's index), one per GPU or one per job, each may
itself be ``torchrun``; ``gentool compare <output_dir>/<name>/*/`` then draws the
comparison. gentool writes no scheduler.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gentool.atomic import atomic_write_text
from gentool.engine.lock import exclusive
from gentool.errors import UsageError



@dataclass
class Variant:
    index: int
    name: str  # the folder: "schedule.name=cosine,train.lr=0.001" (several recipes: "<stem>,schedule.name=...")
    overrides: list[str]  # "schedule.name=cosine", ...
    recipe: Path | None = None  # its recipe file when the sweep has several


@dataclass
class SweepResult:
    folder: Path
    variants: list[Variant]
    trained: list[str] = field(default_factory=list)  # variants trained (or resumed) by this call
    skipped: list[str] = field(default_factory=list)  # variants finished before this call
    interrupted: bool = False
    signal: int = 0
    comparison: Any = None


def split_values(text: str) -> list[str]:
    """``"linear,cosine"`` -> ``["linear", "cosine"]``; commas inside ``[...]``, ``{...}`` or quotes stay."""
    out, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i].strip())
            start = i + 1
    out.append(text[start:].strip())
    return out


def parse_axes(sets: list[str]) -> list[tuple[str, list[str]]]:
    """``["schedule.name=linear,cosine"]`` -> ``[("schedule.name", ["linear", "cosine"])]``."""
    axes: list[tuple[str, list[str]]] = []
    for item in sets:
        key, sep, values = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set {item!r}: write KEY=VALUE[,VALUE...], e.g. --set schedule.name=linear,cosine")
        if key in (k for k, _ in axes):
            raise UsageError(f"--set {key} is given twice; list all its values in one --set {key}=A,B")
        vals = split_values(values)
        if key in ("run.name", "run.output_dir") and len(vals) > 1:
            raise UsageError(f"--set {key}: a sweep names its variants' folders itself (<output_dir>/<name>/<variant>); "
                             "give one value")
        if any(v == "" for v in vals):
            raise UsageError(f"--set {item!r}: an empty value; separate the values with single commas")
        axes.append((key, vals))
    return axes


#: the most variants a sweep takes: each is a whole training run (split a larger grid into several sweeps)
MAX_VARIANTS = 10_000

#: the longest variant folder name in bytes (a file name stops at 255); a longer one is cut and made unique
MAX_NAME_BYTES = 200


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def _folder_name(pairs: list[tuple[str, str]]) -> str:
    """``key=value,...`` with other characters as ``_``; past 200 bytes, cut and ended by ``~<hash of the whole>``."""
    name = ",".join(f"{k}={v}" for k, v in pairs)
    safe = "".join(c if c.isalnum() or c in "._=,+-" else "_" for c in name)
    if len(safe.encode("utf-8")) <= MAX_NAME_BYTES:
        return safe
    cut = safe.encode("utf-8")[:MAX_NAME_BYTES - 13].decode("utf-8", "ignore")
    return f"{cut}~{_digest(name)}"  # '~' is never in a plain name: no cut name equals another variant's


def count_variants(axes: list[tuple[str, list[str]]], recipes: int = 1) -> int:
    """How many variants the axes (times ``recipes`` recipe files) give, without listing them.

    Raises UsageError past :data:`MAX_VARIANTS`, naming each axis's count.
    """
    n = math.prod(len(values) for _, values in axes) * recipes
    if n > MAX_VARIANTS:
        sizes = " x ".join([f"{recipes} (recipes)"] * (recipes > 1) +
                           [f"{len(values)} ({key})" for key, values in axes if len(values) > 1])
        raise UsageError(f"--set gives {n:,} variants ({sizes}); a sweep trains each variant in full, one after "
                         f"another, so it takes at most {MAX_VARIANTS:,}: use fewer values or split the grid")
    return n


def variants(axes: list[tuple[str, list[str]]], recipes: list[Path] | None = None) -> list[Variant]:
    """The product of the axes' values, first axis slowest; a single value is an override of every variant.

    With several ``recipes`` the recipe files are one more axis, the slowest:
    each variant's folder starts with its recipe's file name (``fashion_mnist_flow_cfg``,
    ``fashion_mnist_flow_cfg,train.lr=0.001``). Each variant has its own folder: names
    that the character replacement made equal (``a b`` and ``a_b``) get
    ``~<hash of the overrides>`` appended.
    """
    swept = [(k, vs) for k, vs in axes if len(vs) > 1]
    fixed = [f"{k}={vs[0]}" for k, vs in axes if len(vs) == 1]
    files: list[Path | None] = list(recipes) if recipes and len(recipes) > 1 else [None]
    out = []
    for recipe, combo in itertools.product(files, itertools.product(*(vs for _, vs in swept))):
        pairs = list(zip((k for k, _ in swept), combo))
        name = _folder_name(([("recipe", Path(recipe).stem)] if recipe else []) + pairs)
        if recipe:
            name = name.removeprefix("recipe=")
        out.append(Variant(len(out), name or "base", fixed + [f"{k}={v}" for k, v in pairs], recipe))
    counts = Counter(v.name for v in out)
    for v in out:
        if counts[v.name] > 1:
            v.name += "~" + _digest("\n".join([str(v.recipe or "")] + v.overrides))
    return out


def sweep_name(recipes: list[Path], base_name: str) -> str:
    """The sweep's folder under ``output_dir``: the recipe's run name, or the recipes' file names joined by ``+``."""
    if len(recipes) == 1:
        return base_name
    return _folder_name([("", "+".join(Path(r).stem for r in recipes))]).removeprefix("=")


def _read_state(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _record_done(path: Path, name: str, key: list[str], header: dict[str, Any]) -> None:
    """Add ``name: key`` to the ``done`` of ``path``, keeping every other process's entries.

    ``--variant I`` processes share the file: each re-reads it and writes it
    back under an exclusive lock (``.sweep.json.lock``), atomically.
    """
    with exclusive(path.with_name(f".{path.name}.lock")):
        done = {**_read_state(path).get("done", {}), name: key}
        atomic_write_text(path, json.dumps({**header, "done": done}, indent=1))


def sweep(
    recipe: str | Path | list[str | Path],
    sets: list[str],
    *,
    overrides: list[str] = (),
    only: int | None = None,
    device: str | None = None,
    run_tasks: bool = True,
    progress: bool = True,
    compare_svg: bool = False,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Train every variant (or only the ``only``-th) in turn, resuming; then compare them all.

    ``recipe`` is one recipe file or several: several are one more axis of the
    sweep (each variant is one of them with the ``--set`` values), which trains
    into ``<output_dir>/<stem1+stem2+...>/`` (the first recipe's ``output_dir``).
    """
    from gentool.api import run_tasks_of
    from gentool.compare import SWEEP_FILE  # compare reads it too (the sweep's variant order)
    from gentool.engine import distributed
    from gentool.engine.train import train
    from gentool.recipe import load_recipe
    from gentool.run import build

    files = [Path(recipe)] if isinstance(recipe, (str, Path)) else [Path(r) for r in recipe]
    if not files:
        raise UsageError("gentool sweep needs at least one recipe file")
    if len(set(files)) < len(files):
        raise UsageError(f"a recipe file is given twice: {', '.join(map(str, files))}")
    axes = parse_axes(list(sets))
    n = count_variants(axes, len(files))  # an absurd grid is refused before anything is listed or checked
    log(f"sweep of {n:,} variant{'s' if n != 1 else ''}; checking "
        f"{'their recipes' if only is None else f'the recipe of variant {only}'}")
    vs = variants(axes, files)
    fixed = [f"{k}={values[0]}" for k, values in axes if len(values) == 1]  # in every variant
    if only is not None and not 0 <= only < len(vs):
        raise UsageError(f"--variant {only}: this sweep has variants 0..{len(vs) - 1}")
    base = load_recipe(files[0], overrides=list(overrides) + fixed)  # the recipe and the fixed overrides, checked once
    recipes = {v.name: load_recipe(v.recipe or files[0], overrides=list(overrides) + v.overrides) for v in vs
               if only is None or v.index == only}  # every variant is valid before anything is written
    folder = Path(base.run.output_dir) / sweep_name(files, base.run.name)
    main = distributed.env().main  # under torchrun every rank trains; rank 0 keeps the books
    if main:
        folder.mkdir(parents=True, exist_ok=True)
    state_path = folder / SWEEP_FILE
    result = SweepResult(folder, vs)
    for v in vs:
        if only is not None and v.index != only:
            continue
        rec = recipes[v.name]
        rec.run.output_dir, rec.run.name = str(folder), v.name
        log(f"variant {v.index + 1}/{len(vs)} {v.name}: {rec.run_dir}")
        run = build(rec, device=distributed.local_device(device or rec.run.device))
        out = train(run, resume=True, progress=progress, log=log)  # a finished variant resumes to a no-op
        fresh = out.step > out.resumed_from
        (result.trained if fresh else result.skipped).append(v.name)
        if out.interrupted:
            result.interrupted, result.signal = True, out.signal
            return result
        if not main:
            continue
        key = [f"recipe={v.recipe}"] * (v.recipe is not None) + list(overrides) + v.overrides
        done = _read_state(state_path).get("done", {})  # re-read: --variant runs share the file
        if not fresh:
            log(f"variant {v.index + 1}/{len(vs)} {v.name}: finished before; skipped")
        if run_tasks and (fresh or done.get(v.name) != key):  # tasks again only after new training
            run_tasks_of(run, rec.tasks, out, log=log)  # an earlier step's outputs kept in <task>/step_<N>/
        _record_done(state_path, v.name, key, {"recipe": str(files[0]) if len(files) == 1 else list(map(str, files)),
                                               "sets": list(sets), "overrides": list(overrides),
                                               "variants": [{"name": x.name, "overrides": x.overrides}
                                                            | ({"recipe": str(x.recipe)} if x.recipe else {})
                                                            for x in vs]})
    if only is not None:  # the other variants may still be training (a job array): compare when all are done
        log(f"variant {only} done; once every variant has finished: gentool compare {folder}/*/")
        return result
    ready = [folder / v.name for v in vs if (folder / v.name).is_dir()]
    if ready and main:
        from gentool.compare import CompareError, compare

        try:
            result.comparison = compare(ready, folder / "compare.png", svg=compare_svg)
        except CompareError as exc:  # e.g. train.steps = 0: nothing logged to compare
            log(f"no comparison: {exc}")
            return result
        atomic_write_text(folder / "compare.json", json.dumps(result.comparison.to_json(), indent=1))
    return result
