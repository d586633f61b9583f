#!/usr/bin/env bash
# Build the conda-constructor installer for this platform (macOS: .pkg and .sh; Linux: .sh).
# Needs an environment with constructor and menuinst (conda create -n build -c conda-forge
# constructor menuinst pillow pip) and this checkout. Output: dist/installers/ in the checkout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
PY=${PYTHON:-python}
command -v constructor >/dev/null 2>&1 || { echo "build.sh: constructor not found (conda install -c conda-forge constructor)" >&2; exit 2; }

rm -rf "$here/dist"
"$PY" -m pip wheel --no-deps --wheel-dir "$here/dist" "$repo"
DLS_WHEEL=$(ls "$here"/dist/dls_microscopy-*.whl)
DLS_VERSION=$(basename "$DLS_WHEEL" | cut -d- -f2)
export DLS_WHEEL DLS_VERSION
"$PY" "$here/make_icons.py" "$here/icons"
mkdir -p "$repo/dist/installers"
constructor --output-dir "$repo/dist/installers" "$here"
ls -l "$repo/dist/installers"
