#!/bin/bash
# constructor post-install (Linux .sh, macOS .sh and .pkg): install the bundled wheel of
# dls-microscopy into the new environment, then create the menu entry from Menu/dls-microscopy.json.
set -euo pipefail
if [ -z "${PREFIX:-}" ]; then
    # macOS .pkg: PREFIX is not set; $2 is the install location (constructor's documented recipe)
    PREFIX=$(cd "$2/__NAME_LOWER__" && pwd)
fi
wheel=$(ls "$PREFIX"/pkgs_dls/dls_microscopy-*.whl)
# the compiled dependencies are already there (conda); pip adds the pure-Python rest
"$PREFIX/bin/python" -m pip install --no-warn-script-location "${wheel}[gui]"
"$PREFIX/bin/python" -c "
import sys
from menuinst.api import install
install(sys.argv[1] + '/Menu/dls-microscopy.json', target_prefix=sys.argv[1], base_prefix=sys.argv[1])
" "$PREFIX"
"$PREFIX/bin/dls-microscopy" --version
