#!/usr/bin/env bash
# DLS Microscopy: user-level installer for Linux (no root needed).
#
# Creates a Python virtual environment under the user's data folder, installs PyTorch first and
# then the dls-microscopy package (with the `gui` extra by default), and adds a launcher to
# ~/.local/bin and a desktop entry with icon to the applications menu. Running it again updates
# the installation in place. `installer/linux/uninstall.sh` removes everything it wrote.
set -euo pipefail

PROG=$(basename "$0")
SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
APP_ID=dls-microscopy
MARKER="Written by the DLS Microscopy installer"

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS] [-- PIP_OPTIONS...]

Install DLS Microscopy for the current user (no root needed).

What it writes (and uninstall.sh removes):
  PREFIX/venv                      the Python environment (PyTorch, dls-microscopy[gui])
  PREFIX/install-manifest.txt      the list of files written outside PREFIX
  BIN_DIR/dls-microscopy           a launcher for the command line
  DATA_HOME/applications/dls-microscopy.desktop   the menu entry (runs 'dls-microscopy gui')
  DATA_HOME/icons/hicolor/scalable/apps/dls-microscopy.svg   its icon
where DATA_HOME is \${XDG_DATA_HOME:-\$HOME/.local/share}.

Options:
  --source SRC          What to install: a source folder (a checkout), a wheel or sdist file,
                        or a requirement such as 'dls-microscopy' or 'dls-microscopy==0.1.0'
                        from the package index. Default: the checkout this script is in, if
                        any, else 'dls-microscopy'.
  --extras LIST         Extras to install, comma-separated (default: gui). '' for none, e.g.
                        on a cluster node without a display; 'gui,cluster' for both.
  --prefix DIR          Installation folder (default: DATA_HOME/dls-microscopy).
  --bin-dir DIR         Folder for the launcher (default: ~/.local/bin).
  --python PY           Python (3.10 or newer) used to create the environment
                        (default: python3).
  --system-site-packages
                        Let the environment see the packages of that Python's installation
                        (e.g. a site-wide PyTorch), as 'python -m venv --system-site-packages'.
  --reuse-env PY        Let the environment see the packages already installed in another
                        environment of the same Python version (its site-packages are added
                        through a .pth file, after the environment's own). pip then installs
                        only what is missing. Used by the tests to avoid downloading PyTorch.
  --torch SPEC          PyTorch requirement installed first (default: torch).
  --torch-index-url URL Index for PyTorch only, e.g. https://download.pytorch.org/whl/cpu
                        for CPU-only wheels or .../whl/cu126 for a CUDA build.
  --no-torch            Do not install PyTorch first (pip still installs it as a dependency).
  --constraints FILE    pip constraints file (default: constraints.txt of a checkout source,
                        the versions tested together).
  --no-constraints      Do not use a constraints file.
  --pip-option OPT      Extra option for every pip install, repeatable, e.g.
                        --pip-option=--find-links=/wheels --pip-option=--no-index.
                        Everything after '--' is passed to pip the same way.
  --no-desktop          Do not write the desktop entry and icon (headless machines).
  --force               Recreate the environment from scratch.
  -q, --quiet           Less output from pip.
  -h, --help            Show this help and exit.

Examples:
  installer/linux/install.sh                                 # from this checkout
  installer/linux/install.sh --source dist/dls_microscopy-0.1.0-py3-none-any.whl
  installer/linux/install.sh --source dls-microscopy --torch-index-url https://download.pytorch.org/whl/cpu
  installer/linux/install.sh --extras '' --no-desktop        # a headless cluster account
  installer/linux/install.sh -- --no-index --find-links /shared/wheels   # offline, from a wheel folder
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 2
}
say() { echo "$PROG: $*"; }

# -- options -------------------------------------------------------------------------------------
DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
SOURCE=""
EXTRAS="gui"
PREFIX=""
BIN_DIR="$HOME/.local/bin"
PYTHON="python3"
SYSTEM_SITE=0
REUSE_ENV=""
TORCH_SPEC="torch"
TORCH_INDEX=""
NO_TORCH=0
CONSTRAINTS=""
NO_CONSTRAINTS=0
DESKTOP=1
FORCE=0
QUIET=()
PIP_OPTS=()

need_value() { [ $# -ge 2 ] && [ -n "${2+x}" ] || die "$1 needs a value (see --help)"; }

while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --source) need_value "$@"; SOURCE=$2; shift 2 ;;
    --source=*) SOURCE=${1#*=}; shift ;;
    --extras) need_value "$@"; EXTRAS=$2; shift 2 ;;
    --extras=*) EXTRAS=${1#*=}; shift ;;
    --prefix) need_value "$@"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --bin-dir) need_value "$@"; BIN_DIR=$2; shift 2 ;;
    --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
    --python) need_value "$@"; PYTHON=$2; shift 2 ;;
    --python=*) PYTHON=${1#*=}; shift ;;
    --system-site-packages) SYSTEM_SITE=1; shift ;;
    --reuse-env) need_value "$@"; REUSE_ENV=$2; shift 2 ;;
    --reuse-env=*) REUSE_ENV=${1#*=}; shift ;;
    --torch) need_value "$@"; TORCH_SPEC=$2; shift 2 ;;
    --torch=*) TORCH_SPEC=${1#*=}; shift ;;
    --torch-index-url) need_value "$@"; TORCH_INDEX=$2; shift 2 ;;
    --torch-index-url=*) TORCH_INDEX=${1#*=}; shift ;;
    --no-torch) NO_TORCH=1; shift ;;
    --constraints) need_value "$@"; CONSTRAINTS=$2; shift 2 ;;
    --constraints=*) CONSTRAINTS=${1#*=}; shift ;;
    --no-constraints) NO_CONSTRAINTS=1; shift ;;
    --pip-option) need_value "$@"; PIP_OPTS+=("$2"); shift 2 ;;
    --pip-option=*) PIP_OPTS+=("${1#*=}"); shift ;;
    --no-desktop) DESKTOP=0; shift ;;
    --force) FORCE=1; shift ;;
    -q | --quiet) QUIET=(--quiet); shift ;;
    --) shift; PIP_OPTS+=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done

case ",$EXTRAS," in
*,gui,*) ;;
*)
    [ "$DESKTOP" = 1 ] && say "no 'gui' extra: no desktop entry (the app needs it)"
    DESKTOP=0
    ;;
esac
PREFIX=${PREFIX:-$DATA_HOME/$APP_ID}
case "$PREFIX" in /*) ;; *) PREFIX="$PWD/$PREFIX" ;; esac
case "$BIN_DIR" in /*) ;; *) BIN_DIR="$PWD/$BIN_DIR" ;; esac
case "$DATA_HOME" in /*) ;; *) die "XDG_DATA_HOME must be an absolute path, got '$DATA_HOME'" ;; esac
VENV="$PREFIX/venv"
MANIFEST="$PREFIX/install-manifest.txt"
APPS_DIR="$DATA_HOME/applications"
ICON_DIR="$DATA_HOME/icons/hicolor/scalable/apps"
DESKTOP_FILE="$APPS_DIR/$APP_ID.desktop"
ICON_FILE="$ICON_DIR/$APP_ID.svg"
LAUNCHER="$BIN_DIR/$APP_ID"

abspath() { (cd "$(dirname "$1")" && printf '%s/%s\n' "$(pwd)" "$(basename "$1")"); }

# -- what to install -----------------------------------------------------------------------------
CHECKOUT=""
if [ -z "$SOURCE" ]; then
    if [ -f "$SCRIPT_DIR/../../pyproject.toml" ] && grep -q '^name = "dls-microscopy"' "$SCRIPT_DIR/../../pyproject.toml"; then
        SOURCE=$(cd "$SCRIPT_DIR/../.." && pwd)
    else
        SOURCE="dls-microscopy"
    fi
fi
EXTRA_SUFFIX=""
[ -n "$EXTRAS" ] && EXTRA_SUFFIX="[$EXTRAS]"
if [ -d "$SOURCE" ]; then
    [ -f "$SOURCE/pyproject.toml" ] || die "source folder '$SOURCE' has no pyproject.toml"
    SOURCE=$(cd "$SOURCE" && pwd)
    CHECKOUT=$SOURCE
    REQUIREMENT="$SOURCE$EXTRA_SUFFIX"
elif [ -f "$SOURCE" ]; then
    case "$SOURCE" in
    *.whl | *.tar.gz | *.zip) ;;
    *) die "source file '$SOURCE' is not a wheel (.whl) or an sdist (.tar.gz, .zip)" ;;
    esac
    SOURCE=$(abspath "$SOURCE")
    REQUIREMENT="$SOURCE$EXTRA_SUFFIX"
else
    case "$SOURCE" in
    */*) die "source '$SOURCE' does not exist (give a folder, a wheel/sdist file or a package name)" ;;
    esac
    # a requirement from the index: put the extras after the name, before any version specifier
    name=$(printf '%s' "$SOURCE" | sed -E 's/^([A-Za-z0-9._-]+).*/\1/')
    case "$SOURCE" in
    *"["*) REQUIREMENT=$SOURCE ;; # extras given in the requirement itself
    *) REQUIREMENT="$name$EXTRA_SUFFIX${SOURCE#"$name"}" ;;
    esac
fi

if [ "$NO_CONSTRAINTS" = 1 ]; then
    CONSTRAINTS=""
elif [ -z "$CONSTRAINTS" ] && [ -n "$CHECKOUT" ] && [ -f "$CHECKOUT/constraints.txt" ]; then
    CONSTRAINTS="$CHECKOUT/constraints.txt"
fi
CONSTRAINT_OPTS=()
if [ -n "$CONSTRAINTS" ]; then
    [ -f "$CONSTRAINTS" ] || die "constraints file '$CONSTRAINTS' does not exist"
    CONSTRAINT_OPTS=(--constraint "$(abspath "$CONSTRAINTS")")
fi

# -- the environment -----------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "Python '$PYTHON' not found (use --python PATH)"
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
    die "cannot run Python '$PYTHON'"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die "Python $PY_VERSION at '$PYTHON' is too old: DLS Microscopy needs Python 3.10 or newer"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null ||
    die "Python '$PYTHON' lacks the venv/ensurepip modules (on Debian/Ubuntu: apt install python3-venv)"

if [ -x "$VENV/bin/python" ] && [ "$FORCE" = 0 ]; then
    have=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo broken)
    if [ "$have" != "$PY_VERSION" ]; then
        say "existing environment uses Python $have, not $PY_VERSION: recreating it"
        FORCE=1
    fi
fi
if [ "$FORCE" = 1 ] && [ -e "$VENV" ]; then
    say "removing the old environment $VENV"
    rm -rf "$VENV"
fi
# Folders we create are recorded too, so that the uninstaller can remove them again when empty.
WRITTEN=()
make_dir() {
    local d=$1 missing=()
    while [ ! -d "$d" ]; do
        missing=("$d" "${missing[@]}")
        d=$(dirname "$d")
    done
    for d in "${missing[@]}"; do
        mkdir "$d"
        WRITTEN+=("dir $d")
    done
}
# keep the folders recorded by an earlier run: they were created by us
if [ -f "$MANIFEST" ]; then
    while IFS= read -r line; do
        case "$line" in "dir "*) WRITTEN+=("$line") ;; esac
    done <"$MANIFEST"
fi

make_dir "$PREFIX"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating the environment $VENV (Python $PY_VERSION)"
    venv_opts=()
    [ "$SYSTEM_SITE" = 1 ] && venv_opts+=(--system-site-packages)
    # with --reuse-env, pip and setuptools come from the reused environment: an own, older copy
    # (ensurepip's) would shadow them
    [ -n "$REUSE_ENV" ] && venv_opts+=(--without-pip)
    "$PYTHON" -m venv "${venv_opts[@]}" "$VENV"
else
    say "updating the environment $VENV"
    if [ "$SYSTEM_SITE" = 1 ]; then
        sed -i 's/^include-system-site-packages = .*/include-system-site-packages = true/' "$VENV/pyvenv.cfg"
    fi
fi
VPY="$VENV/bin/python"
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
REUSE_PTH="$SITE/_dls_microscopy_reuse_env.pth"
if [ -n "$REUSE_ENV" ]; then
    command -v "$REUSE_ENV" >/dev/null 2>&1 || die "--reuse-env: Python '$REUSE_ENV' not found"
    other=$("$REUSE_ENV" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    [ "$other" = "$PY_VERSION" ] ||
        die "--reuse-env: '$REUSE_ENV' is Python $other but the environment is Python $PY_VERSION (use --python)"
    "$REUSE_ENV" -c 'import sysconfig; p = sysconfig.get_paths(); print(p["purelib"]); print(p["platlib"])' |
        sort -u >"$REUSE_PTH"
    say "reusing the packages of $(sed -n 1p "$REUSE_PTH")"
else
    rm -f "$REUSE_PTH"
fi

if ! "$VPY" -c 'import pip' >/dev/null 2>&1; then
    say "installing pip into the environment"
    "$VPY" -m ensurepip --default-pip >/dev/null
fi
PIP=("$VPY" -m pip "${QUIET[@]}" --disable-pip-version-check)
if [ "$NO_TORCH" = 0 ]; then
    say "installing PyTorch ($TORCH_SPEC) first"
    torch_opts=()
    [ -n "$TORCH_INDEX" ] && torch_opts+=(--index-url "$TORCH_INDEX")
    "${PIP[@]}" install "${CONSTRAINT_OPTS[@]}" "${torch_opts[@]}" "${PIP_OPTS[@]}" "$TORCH_SPEC"
fi
say "installing $REQUIREMENT"
"${PIP[@]}" install --upgrade "${CONSTRAINT_OPTS[@]}" "${PIP_OPTS[@]}" "$REQUIREMENT"
EXE="$VENV/bin/$APP_ID"
[ -x "$EXE" ] || die "the package installed no '$APP_ID' command in $VENV/bin"
VERSION=$("$EXE" --version) || die "'$EXE --version' failed"

# -- launcher, icon, desktop entry ---------------------------------------------------------------
make_dir "$BIN_DIR"
cat >"$LAUNCHER" <<EOF
#!/bin/sh
# $MARKER (install.sh); uninstall.sh removes it.
exec "$EXE" "\$@"
EOF
chmod 755 "$LAUNCHER"
WRITTEN+=("file $LAUNCHER")

# Desktop Entry Specification: arguments are quoted with "" and, inside, \ " \` \$ are escaped
# with a backslash; in the key file every \ is then written as \\.
desktop_quote() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//\`/\\\`}
    s=${s//\$/\\\$}
    s=${s//\\/\\\\}
    printf '"%s"' "$s"
}

if [ "$DESKTOP" = 1 ]; then
    # the icon the app itself uses (dls_microscopy.napari.app.icon_path), found without importing Qt
    ICON_SRC=$("$VPY" -c '
import importlib.util, pathlib
root = pathlib.Path(next(iter(importlib.util.find_spec("dls_microscopy").submodule_search_locations)))
icons = [root / "napari" / "resources" / f"icon.{kind}" for kind in ("svg", "png")]
print(next((str(p) for p in icons if p.is_file()), ""))')
    [ -n "$ICON_SRC" ] || die "the installed package has no icon (dls_microscopy/napari/resources/icon.svg)"
    case "$ICON_SRC" in *.png) ICON_DIR="$DATA_HOME/icons/hicolor/256x256/apps"; ICON_FILE="$ICON_DIR/$APP_ID.png" ;; esac
    make_dir "$ICON_DIR"
    cp "$ICON_SRC" "$ICON_FILE"
    WRITTEN+=("file $ICON_FILE")

    make_dir "$APPS_DIR"
    cat >"$DESKTOP_FILE" <<EOF
[Desktop Entry]
Type=Application
Version=1.5
Name=DLS Microscopy
GenericName=3D Microscopy Analysis
Comment=Segment, mesh and measure huge 3D microscopy images (napari)
Exec=$(desktop_quote "$EXE") gui %f
TryExec=$EXE
Icon=$ICON_FILE
Terminal=false
Categories=Science;Biology;Graphics;
Keywords=microscopy;napari;OME-Zarr;segmentation;nuclei;
StartupNotify=true
X-DLS-Microscopy-Installer=$VERSION
EOF
    WRITTEN+=("file $DESKTOP_FILE")
else
    # a re-run with --no-desktop drops an entry written before
    for f in "$DESKTOP_FILE" "$DATA_HOME/icons/hicolor/scalable/apps/$APP_ID.svg" "$DATA_HOME/icons/hicolor/256x256/apps/$APP_ID.png"; do
        if [ -f "$f" ] && grep -qxF "file $f" "$MANIFEST" 2>/dev/null; then
            rm -f "$f"
        fi
    done
fi

{
    echo "# $MARKER: what install.sh wrote outside $PREFIX."
    echo "# Read by uninstall.sh. One entry a line: 'file PATH' or 'dir PATH' (removed when empty)."
    echo "version $VERSION"
    printf '%s\n' "${WRITTEN[@]}" | awk '!seen[$0]++'
} >"$MANIFEST.tmp"
mv "$MANIFEST.tmp" "$MANIFEST"

say "installed $VERSION"
say "  environment: $VENV"
say "  command:     $LAUNCHER"
[ "$DESKTOP" = 1 ] && say "  menu entry:  $DESKTOP_FILE"
case ":$PATH:" in
*":$BIN_DIR:"*) ;;
*) say "note: $BIN_DIR is not on your PATH; add it (e.g. in ~/.profile: export PATH=\"$BIN_DIR:\$PATH\")" ;;
esac
if [ "$DESKTOP" = 1 ]; then
    say "start the desktop app from the applications menu or with: $APP_ID gui"
else
    say "run '$APP_ID --help' to start"
fi
