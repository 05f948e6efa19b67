"""Meta-tests: the documentation covers the code and cannot drift from it.

Every hook is documented with its signature and has a test; the generated
pages (recipe and CLI reference) equal what the code generates; the plugin
guide's files are the example package's files; every page is reachable and
every local link resolves.
"""

from __future__ import annotations

import ast
import functools
import inspect
import re
from pathlib import Path

import pytest

import gentool
from gentool import docs, hookspecs
from gentool.plugins import state

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EXAMPLE = ROOT / "plugins" / "examples" / "gentool-example"
HOOKSPECS = [name for name, fn in vars(hookspecs).items() if name.startswith("gentool_") and callable(fn)]
#: Files linked before they exist: the grid image comes from a real run, performance.md from another issue.
PENDING: set = set()  # links allowed to point at files not written yet


def read(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_hookspecs_found():
    assert len(HOOKSPECS) >= 7, HOOKSPECS


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hook_is_documented_with_its_signature(hook):
    fn = getattr(hookspecs, hook)
    signature = f"{hook}{inspect.signature(fn)}"
    summary = docs._md(inspect.getdoc(fn).splitlines()[0])
    guide = read("plugins.md")
    assert f"### `{signature}`" in guide, f"docs/plugins.md needs a heading ### `{signature}` in its hook reference"
    section = guide.split(f"### `{signature}`", 1)[1].split("\n### ", 1)[0]
    assert summary in section, f"docs/plugins.md: the section of {hook} should start with its summary {summary!r}"
    assert f"`{signature}`" in read("architecture.md"), f"docs/architecture.md should list the hook {signature}"


@functools.lru_cache(maxsize=1)
def _test_functions() -> frozenset[str]:
    names = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}
    return frozenset(names)


@pytest.mark.parametrize("hook", HOOKSPECS)
def test_every_hook_has_a_test(hook):
    assert f"test_hook_{hook}" in _test_functions(), (
        f"no test named test_hook_{hook}: add one (see tests/test_plugin_control.py) that registers a component "
        "through the hook and checks that the core uses it"
    )


def test_recipe_reference_is_up_to_date():
    assert read("recipes.md") == docs.recipe_reference(builtin_only=True), (
        f"docs/recipes.md is out of date with the components' signatures or docstrings; regenerate it with "
        f"`{docs.REGENERATE}` (or `gentool list-plugins --docs --builtin > docs/recipes.md`)"
    )


def test_cli_reference_is_up_to_date():
    from gentool.cli.reference import cli_reference

    assert read("cli.md") == cli_reference(), (
        f"docs/cli.md is out of date with the commands; regenerate it with `{docs.REGENERATE}`"
    )


def builtin_components():
    builtin = {p.name for p in state().plugins if p.builtin}
    return [c for c in gentool.registry().components() if c.plugin in builtin]


def test_recipe_reference_lists_every_option_of_every_builtin_with_a_description():
    from gentool.config import EvalConfig, RunConfig, TrainConfig
    from gentool.options import option_docs, recipe_parameters

    text = docs.recipe_reference(builtin_only=True)
    from gentool.kinds import BY_NAME

    kinds = dict(re.findall(r"^## (.*?)\n(.*?)(?=^## |\Z)", text, re.S | re.M))  # a name may recur across kinds
    sections = {(kind.name, name): body for kind in BY_NAME.values() if kind.title in kinds
                for name, body in re.findall(r"^### `([^`]+)`\n(.*?)(?=^### |\Z)", kinds[kind.title], re.S | re.M)}
    missing, undocumented = [], []

    for c in builtin_components():
        if not BY_NAME[c.kind].options:  # a command's parameters are command-line options, not recipe options
            continue
        section = sections.get((c.kind, c.name), "")
        reserved = BY_NAME[c.kind].reserved + BY_NAME[c.kind].supplied
        for option in [o for o in recipe_parameters(c.factory) if o not in reserved]:
            if f"| `{option}` |" not in section:
                missing.append(f"{c.kind} {c.name}: {option}")
            if option not in option_docs(c.factory):
                undocumented.append(f"{c.kind} {c.name}: {option}")
    for cls in (RunConfig, TrainConfig, EvalConfig):
        undocumented += [f"{cls.__name__}: {o}" for o in recipe_parameters(cls) if o not in option_docs(cls)]
        missing += [f"{cls.__name__}: {o}" for o in recipe_parameters(cls) if f"| `{o}` |" not in text]
    assert not missing, f"options missing from the recipe reference: {missing}"
    assert not undocumented, f"options without a description in their docstring's Args: block: {undocumented}"
    assert "*(undocumented)*" not in text


def test_recipe_reference_shows_types_and_defaults():
    text = docs.recipe_reference(builtin_only=True)
    linear = text.split("### `linear`", 1)[1].split("###", 1)[0]
    assert "| `timesteps` | `int` | `1000` | number of diffusion steps T. |" in linear
    assert "| `beta_start` | `float` | `0.0001` |" in linear
    unet = text.split("### `unet`", 1)[1].split("###", 1)[0]
    assert "| `channel_mult` | `list of int` | `[1, 2, 2, 2]` |" in unet
    ddpm = text.split("### `ddpm`", 1)[1].split("###", 1)[0]
    assert "| `prediction` | `'eps' \\| 'x0' \\| 'v'` | `\"eps\"` |" in ddpm
    assert "| `path` | `str` | **required** |" in text.split("### `hf_dataset`", 1)[1]


def test_list_plugins_docs_prints_the_reference():
    from typer.testing import CliRunner

    from gentool.cli import app

    result = CliRunner().invoke(app, ["list-plugins", "--docs", "--builtin"])
    assert result.exit_code == 0
    assert result.output == docs.recipe_reference(builtin_only=True)


def test_regenerate_command_writes_both_pages(tmp_path):
    from gentool.cli import reference

    assert docs.REGENERATE == f"python -m {reference.__name__}"
    assert reference.main(["--docs-dir", str(tmp_path)]) == 0
    assert (tmp_path / "recipes.md").read_text() == docs.recipe_reference()
    assert reference.main(["--docs-dir", str(tmp_path), "--check"]) == 0
    (tmp_path / "cli.md").write_text("stale")
    assert reference.main(["--docs-dir", str(tmp_path), "--check"]) == 1


FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.S | re.M)


def test_plugin_guide_files_are_the_example_package():
    titled = {}
    for _, info, body in FENCE.findall(read("plugins.md")):
        title = re.search(r'title="([^"]+)"', info)
        if title:
            titled[title.group(1)] = body
    files = {p.relative_to(EXAMPLE).as_posix() for p in EXAMPLE.rglob("*")
             if p.is_file() and "__pycache__" not in p.parts and ".pytest_cache" not in p.parts and p.name != "README.md"}
    assert set(titled) == files, "docs/plugins.md and plugins/examples/gentool-example/ must hold the same files"
    for path, body in titled.items():
        assert body == (EXAMPLE / path).read_text(encoding="utf-8"), f"docs/plugins.md: {path} differs from the example package"


def test_quickstart_shows_the_readmes_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = read("quickstart.md")
    commands = [body.strip() for lang, _, body in FENCE.findall(readme) if lang == "bash"][:2]
    assert len(commands) == 2
    for command in commands:
        assert command in quickstart, f"docs/quickstart.md should show the README's command {command!r}"
    assert "runs/fashion_mnist/sample/grid.png" in quickstart


@pytest.mark.parametrize("kind", ["schedule", "sampler"])
def test_maths_covers_every_builtin(kind):
    maths = read("maths.md")
    names = [c.name for c in builtin_components() if c.kind == kind]
    assert names
    missing = [n for n in names if f"`{n}`" not in maths]
    assert not missing, f"docs/maths.md should give the equations of the {kind}s {missing}"
    assert "0-based" in maths and "$t + 1$" in maths  # the timestep convention


def close_to_shown(shown: str, value: float) -> bool:
    """Does ``value`` round to the number as the docs print it (``-5.06``, ``24,778``, ``-inf``)?"""
    import math

    text = shown.replace(",", "")
    if text in ("inf", "-inf"):
        return value == float(text)
    places = len(text.partition(".")[2])
    return math.isfinite(value) and abs(float(text) - value) <= 0.5 * 10**-places + 1e-12


def test_maths_log_snr_range_table_matches_the_code():
    """Issue 24, defect 5: maths.md said the range is always clipped at lambda = -5.1; the code clips an outlying end only."""
    import math
    import tomllib

    from gentool.diffusion import Diffusion
    from gentool.reverse import LAMBDA_MIN, lambda_range, lambdas, outlying_end

    maths = read("maths.md")
    assert rf"$\lambda_\text{{min}} = {LAMBDA_MIN}$ only where" in maths
    table = maths[maths.index(r"| schedule | $\lambda_{T-3}"):].split("\n\n")[0].splitlines()[2:]
    assert len(table) >= 4, table
    seen = set()
    for row in table:
        label, lams, outlier, start, sigma_max = [c.strip() for c in row.strip("|").split("|")]
        name, *options = re.findall(r"`([^`]+)`", label)
        schedule = gentool.registry().get("schedule", name).factory(**tomllib.loads("\n".join(options)))
        diffusion = Diffusion(schedule)
        t_start, lam = diffusion.num_timesteps - 1, lambdas(diffusion)
        lo, _ = lambda_range(diffusion, t_start)
        got = {"lambdas": all(close_to_shown(a, float(b)) for a, b in zip(lams.split(", "), lam[-3:], strict=True)),
               "outlier": outlier == ("yes" if outlying_end(lam, t_start) else "no"),
               "start": close_to_shown(start, lo), "sigma_max": close_to_shown(sigma_max, math.exp(-lo))}
        assert all(got.values()), (row, got, lam[-3:].tolist(), lo, math.exp(-lo))
        seen.add(outlier)
    assert seen == {"yes", "no"}  # both sides of the rule are shown


def test_architecture_names_every_kind_and_has_a_diagram():
    text = read("architecture.md")
    from gentool.interfaces import KINDS

    for kind in KINDS:
        assert kind.replace("_", " ") in text, kind
    assert "```mermaid" in text


def test_every_page_is_linked_from_the_index():
    index = read("index.md")
    pages = sorted(p.name for p in DOCS.glob("*.md") if p.name != "index.md")
    assert [p for p in pages if f"]({p})" not in index] == []


def test_local_links_resolve():
    broken = []
    for page in DOCS.glob("*.md"):
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists() and path not in PENDING:
                broken.append(f"{page.name}: {target}")
    assert not broken, f"links to missing files: {broken}"


def test_the_plugin_api_table_names_every_public_name():
    """docs/plugins.md lists every name of the plugin API (gentool/__init__.py's lazy table), and no other."""
    import gentool

    section = read("plugins.md").split("## The plugin API", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)(?:\(\))?`", section.split("Answers to what", 1)[0]))
    missing = sorted(set(gentool._LAZY) - listed)
    assert not missing, f"docs/plugins.md's plugin API table should list {missing}"
