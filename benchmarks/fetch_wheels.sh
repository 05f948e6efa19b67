#!/usr/bin/env bash
# Wheels that a GPU machine without a package index needs for benchmarks/gpu_session.sh.
#
#   bash benchmarks/fetch_wheels.sh            # here, where pip can reach an index -> .whl/
#
# The device machines hold Python 3.12 with torch, torchvision, typer, rich, pluggy, einops,
# matplotlib, safetensors, huggingface-hub and pytest, but not gentool's build backend
# (hatchling), torch-fidelity, tomli-w or diffusers; gpu_session.sh installs these from
# .whl/ when it exists (the folder is git-ignored; carry it with the call).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do platforms+=(--platform "$tag"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl \
    hatchling pathspec editables trove-classifiers tomlkit torch-fidelity tomli-w "diffusers>=0.30" importlib-metadata
ls -la .whl
