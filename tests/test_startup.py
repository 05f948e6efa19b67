"""Start-up: ``gentool --help`` and ``--version`` import no torch, ``gentool check`` nothing it does not need
(measured in docs/performance.md, not timed here)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from _tiny import recipe_text, unet_one_level

PROBE = textwrap.dedent("""
    import sys
    from gentool.cli import main
    sys.argv = ["gentool", *{args!r}]
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
    from gentool.plugins import commands
    commands()  # the plugin commands --help lists: every plugin package imported
    heavy = sorted(m for m in ("torch", "torchvision", "torch_fidelity", "matplotlib", "numpy") if m in sys.modules)
    print("HEAVY", heavy)
""")


@pytest.mark.parametrize("args", [["--help"], ["--version"]])
def test_help_and_version_import_no_torch(args):
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-2000:]


def test_import_gentool_is_cheap_and_its_names_still_resolve():
    code = ("import sys, gentool; assert 'torch' not in sys.modules; "
            "from gentool import Diffusion, build, TaskResult; assert callable(build); "
            "assert gentool.Diffusion is Diffusion and 'torch' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_the_built_in_plugin_packages_import_their_components_on_first_use():
    code = ("import sys, gentool_samplers, gentool_tasks, gentool_data, gentool_unet, gentool_schedules, "
            "gentool_conditioners, gentool_metrics; assert 'torch' not in sys.modules, 'torch'; "
            "from gentool_samplers import ddim; from gentool_schedules import cosine; "
            "assert callable(ddim) and callable(cosine) and not isinstance(ddim, type(sys)); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


TASKS = """[eval]
feature_extractor = "gentool-cnn28"

[[tasks]]
name = "sample"
n = 2

[[tasks]]
name = "inpaint"
indices = [0]

[[tasks]]
name = "interpolate"
indices = [0, 1]

[[tasks]]
name = "animate"
n = 1
"""

#: What ``gentool check`` must not import: each costs seconds (torchvision imports torch._dynamo, ~2.5 s on two
#: cores; torch-fidelity imports torchvision) and check needs none of them: data sets report their shape from
#: file headers, and images are only resized or saved by training and tasks.
NOT_FOR_CHECK = ("torchvision", "torch._dynamo", "torch_fidelity", "matplotlib", "scipy", "tensorboard", "PIL")


def test_check_imports_no_torchvision_dynamo_or_fidelity(tmp_path):
    import gzip
    import struct

    idx = tmp_path / "idx"
    idx.mkdir()
    for prefix in ("train", "t10k"):  # 3 blank 28x28 images and their labels, as Debian's package has them
        (idx / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">iiii", 2051, 3, 28, 28) + bytes(3 * 784)))
        (idx / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(struct.pack(">ii", 2049, 3) + bytes(3)))
    recipe = tmp_path / "startup.toml"
    recipe.write_text(recipe_text(tmp_path.as_posix(), name="startup", data_name="fashion_mnist",
                                  data=f'root = "{tmp_path.as_posix()}/none"\nsystem_dir = "{idx.as_posix()}"',
                                  timesteps=10, denoiser_options=unet_one_level(), train="steps = 1\nbatch_size = 2",
                                  tail=TASKS), encoding="utf-8")
    probe = textwrap.dedent(f"""
        import sys
        from gentool.cli import main
        sys.argv = ["gentool", "check", {str(recipe)!r}]
        try:
            main()
        except SystemExit as exc:
            assert not exc.code, exc.code
        print("HEAVY", sorted(m for m in {NOT_FOR_CHECK!r} if m in sys.modules))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "3 images" in out.stdout and "sample, inpaint, interpolate, animate" in out.stdout, out.stdout[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout[-2000:]


USAGE_PROBE = textwrap.dedent("""
    import sys
    from gentool.cli import main
    sys.argv = ["gentool", *{args!r}]
    try:
        main()
    except SystemExit as exc:
        print("EXIT", exc.code)
    print("TORCH", "torch" in sys.modules)
""")


@pytest.mark.parametrize("args, named", [
    (["run", "{tmp}/missing.toml"], "missing.toml"), (["check", "{tmp}/missing.toml"], "missing.toml"),
    (["bench", "{tmp}/missing.toml"], "missing.toml"),
    (["run", "{tmp}/recipe.toml", "--threads", "-1"], "--threads -1"),
    (["sample", "{tmp}/runs/missing"], "runs/missing"), (["sample", "{tmp}/runs", "--n", "0"], "'--n'"),
    (["sample", "{tmp}/runs", "--threads", "-1"], "--threads -1"), (["eval", "{tmp}/runs/missing"], "runs/missing"),
    (["export", "{tmp}/runs/missing"], "runs/missing"),
], ids=lambda x: " ".join(a.replace("{tmp}/", "") for a in x) if isinstance(x, list) else "")
def test_a_usage_error_is_reported_before_torch_is_imported(tmp_path, args, named):
    """torch's import takes 11-21 s on a busy machine: a missing file or a bad value must not wait for it."""
    (tmp_path / "runs").mkdir()
    (tmp_path / "recipe.toml").write_text("", encoding="utf-8")
    args = [a.replace("{tmp}", tmp_path.as_posix()) for a in args]
    out = subprocess.run([sys.executable, "-c", USAGE_PROBE.format(args=args)], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert "EXIT 2" in out.stdout, out.stdout + out.stderr[-2000:]
    assert "TORCH False" in out.stdout, out.stderr[-2000:]
    assert "Traceback" not in out.stderr and named in out.stderr, out.stderr  # the message names what is wrong
