"""Start-up: ``gentool --help`` and ``--version`` import no torch (measured in docs/performance.md, not timed here)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

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
