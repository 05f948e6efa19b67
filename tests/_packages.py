"""A plugin package pip-installed as a user would install it, into a temporary folder (the environment untouched).

``pip install --target SITE PACKAGE`` builds a wheel and unpacks it into SITE;
putting SITE on ``sys.path`` is what installing it into the environment does,
and removing SITE uninstalls it. Used by the example plugin's tests and by
issue 23's acceptance package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from gentool import plugins


def pip_env(editable: bool = False) -> dict[str, str]:
    """Offline, no build isolation when the build backend is already importable; else pip's defaults."""
    env = dict(os.environ)
    needed = ["hatchling"] + (["editables"] if editable else [])
    if all(importlib.util.find_spec(m) is not None for m in needed):
        env.update(PIP_NO_BUILD_ISOLATION="0", PIP_NO_INDEX="1")  # "0" turns isolation off (pip's inverted flag)
    return env


@contextlib.contextmanager
def installed_package(package: Path, site: Path, module: str) -> Iterator[Path]:
    """``package`` pip-installed into ``site`` for the block; ``module``'s imports forgotten afterwards."""
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(package)]
    out = subprocess.run(cmd, env=pip_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    try:
        yield site
    finally:
        shutil.rmtree(site, ignore_errors=True)
        for name in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
            del sys.modules[name]


@contextlib.contextmanager
def on_sys_path(site: Path, monkeypatch) -> Iterator[Path]:
    """The installed package found by gentool's plugin loading (autoload on, nothing blocked) for the block."""
    monkeypatch.delenv("GENTOOL_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("GENTOOL_BLOCK_PLUGINS", raising=False)
    monkeypatch.syspath_prepend(str(site))
    plugins.reset()
    try:
        yield site
    finally:
        plugins.reset()
