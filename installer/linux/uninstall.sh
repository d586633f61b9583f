#!/usr/bin/env bash
# DLS Microscopy: remove a user-level installation made by install.sh.
#
# Removes the environment folder (PREFIX), then every file listed in PREFIX/install-manifest.txt
# that still carries the installer's mark, then the folders the installer created, where empty.
set -euo pipefail

PROG=$(basename "$0")
APP_ID=dls-microscopy
MARKER="Written by the DLS Microscopy installer"

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS]

Remove DLS Microscopy installed for the current user by install.sh: the environment, the
launcher, the desktop entry and its icon, and the folders the installer created (if empty).
Files not written by the installer are never removed.

Options:
  --prefix DIR      Installation folder given to install.sh
                    (default: \${XDG_DATA_HOME:-\$HOME/.local/share}/dls-microscopy).
  --bin-dir DIR     Launcher folder given to install.sh, used only when the manifest is
                    missing (default: ~/.local/bin).
  -n, --dry-run     Only list what would be removed.
  -h, --help        Show this help and exit.
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 2
}
say() { echo "$PROG: $*"; }

DATA_HOME=${XDG_DATA_HOME:-$HOME/.local/share}
PREFIX=""
BIN_DIR="$HOME/.local/bin"
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
    -h | --help) usage; exit 0 ;;
    --prefix) [ $# -ge 2 ] || die "--prefix needs a value"; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --bin-dir) [ $# -ge 2 ] || die "--bin-dir needs a value"; BIN_DIR=$2; shift 2 ;;
    --bin-dir=*) BIN_DIR=${1#*=}; shift ;;
    -n | --dry-run) DRY=1; shift ;;
    *) die "unknown option '$1' (see --help)" ;;
    esac
done
PREFIX=${PREFIX:-$DATA_HOME/$APP_ID}
case "$PREFIX" in /*) ;; *) PREFIX="$PWD/$PREFIX" ;; esac
case "$BIN_DIR" in /*) ;; *) BIN_DIR="$PWD/$BIN_DIR" ;; esac
MANIFEST="$PREFIX/install-manifest.txt"

remove() { # remove KIND PATH
    if [ "$DRY" = 1 ]; then
        say "would remove $2"
        return
    elif [ "$1" = dir ]; then
        rm -rf -- "$2"
    else
        rm -f -- "$2"
    fi
    say "removed $2"
}

files=()
dirs=()
if [ -f "$MANIFEST" ]; then
    while IFS= read -r line; do
        case "$line" in
        "file "*) files+=("${line#file }") ;;
        "dir "*) dirs+=("${line#dir }") ;;
        esac
    done <"$MANIFEST"
else
    [ -e "$PREFIX" ] && [ ! -d "$PREFIX/venv" ] &&
        die "$PREFIX has no install-manifest.txt and no venv: not an installation made by install.sh"
    say "no manifest in $PREFIX: looking in the default places"
    files=(
        "$BIN_DIR/$APP_ID"
        "$DATA_HOME/applications/$APP_ID.desktop"
        "$DATA_HOME/icons/hicolor/scalable/apps/$APP_ID.svg"
        "$DATA_HOME/icons/hicolor/256x256/apps/$APP_ID.png"
    )
fi

found=0
for f in "${files[@]}"; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    case "$f" in
    *.svg | *.png) mine=1 ;; # icons carry no mark; they are ours by name and by the manifest
    *) if grep -q -e "$MARKER" -e "X-DLS-Microscopy-Installer=" "$f" 2>/dev/null; then mine=1; else mine=0; fi ;;
    esac
    if [ "$mine" = 1 ] && { [ -f "$MANIFEST" ] || [ "$(basename "$f" | cut -d. -f1)" = "$APP_ID" ]; }; then
        remove file "$f"
        found=1
    else
        say "kept $f (not written by the installer)"
    fi
done
if [ -d "$PREFIX" ]; then
    remove dir "$PREFIX"
    found=1
fi
# folders the installer created, deepest first, only where now empty
if [ "$DRY" = 0 ] && [ ${#dirs[@]} -gt 0 ]; then
    printf '%s\n' "${dirs[@]}" | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2- |
        while IFS= read -r d; do
            if [ -d "$d" ] && rmdir -- "$d" 2>/dev/null; then say "removed empty folder $d"; fi
        done
fi
[ "$found" = 1 ] || say "nothing to remove: DLS Microscopy is not installed under $PREFIX"
exit 0
