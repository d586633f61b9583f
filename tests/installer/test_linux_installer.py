"""The Linux installer end to end: install into a temporary HOME, start from the menu entry, uninstall.

To stay fast and offline the installer is run with ``--reuse-env`` (the new environment sees the
packages of the test environment, so PyTorch is not downloaded again) and the pip options
``--no-index --no-build-isolation`` (the checkout is built with the hatchling of the dev extra).
The package itself is really built and installed into the new environment.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "installer" / "linux" / "install.sh"
UNINSTALL = REPO / "installer" / "linux" / "uninstall.sh"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux installer")


def _env(home: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "PIP_", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(cache), PYTHONNOUSERSITE="1")
    # pip asks rustc for its version (user agent); rustup would create ~/.rustup in the new HOME
    env.setdefault("RUSTUP_HOME", str(Path.home() / ".rustup"))
    env.setdefault("CARGO_HOME", str(Path.home() / ".cargo"))
    return env


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _desktop_exec(value: str) -> list[str]:
    """Split a desktop entry's Exec value into argv (Desktop Entry Specification 1.5)."""
    # the key file's string escapes first (backslash s, n, t, r and a doubled backslash) ...
    text = re.sub(
        r"\\([sntr\\])", lambda m: {"s": " ", "n": "\n", "t": "\t", "r": "\r"}.get(m[1], m[1]), value
    )
    # ... then the Exec quoting: "..." groups an argument; inside, a backslash escapes " ` $ and itself
    argv: list[str] = []
    current, quoted, started, i = "", False, False, 0
    while i < len(text):
        ch = text[i]
        if quoted and ch == "\\" and i + 1 < len(text) and text[i + 1] in '"`$\\':
            current, i = current + text[i + 1], i + 2
            continue
        if ch == '"':
            quoted, started = not quoted, True
        elif ch == " " and not quoted:
            if started:
                argv.append(current)
            current, started = "", False
        else:
            current, started = current + ch, True
        i += 1
    assert not quoted, f"unbalanced quotes in Exec={value!r}"
    if started:
        argv.append(current)
    return [arg for arg in argv if not re.fullmatch(r"%[fFuUdDnNickvm]", arg)]


def _run(cmd: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def test_help_of_both_scripts() -> None:
    for script in (INSTALL, UNINSTALL):
        res = _run(["bash", str(script), "--help"], dict(os.environ))
        assert res.returncode == 0, res.stderr
        assert "Usage:" in res.stdout
    bad = _run(["bash", str(INSTALL), "--no-such-option"], dict(os.environ))
    assert bad.returncode == 2
    assert "unknown option '--no-such-option'" in bad.stderr


@pytest.mark.slow  # 13 s on an idle 2-core machine, up to ~45 s under load
def test_install_start_from_desktop_entry_uninstall(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="the dev extra's hatchling builds the checkout offline")
    from dls_microscopy import __version__

    home = tmp_path / "home of a user"  # a space in every path the installer writes
    (home / ".local" / "bin").mkdir(parents=True)
    foreign = home / ".local" / "bin" / "other-tool"
    foreign.write_text("#!/bin/sh\n")
    before = _tree(home)
    env = _env(home, tmp_path / "cache")
    base_python = getattr(sys, "_base_executable", sys.executable)
    cmd = [
        "bash", str(INSTALL), "--source", str(REPO), "--python", base_python,
        "--reuse-env", sys.executable, "--quiet", "--", "--no-index", "--no-build-isolation",
    ]  # fmt: skip

    for attempt in (1, 2):  # the second run updates the installation in place
        res = _run(cmd, env)
        assert res.returncode == 0, f"install run {attempt} failed:\n{res.stdout}\n{res.stderr}"

    data = home / ".local" / "share"
    venv = data / "dls-microscopy" / "venv"
    desktop = data / "applications" / "dls-microscopy.desktop"
    launcher = home / ".local" / "bin" / "dls-microscopy"
    assert launcher.is_file() and os.access(launcher, os.X_OK)

    entry = configparser.ConfigParser(interpolation=None)
    entry.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    entry.read(desktop, encoding="utf-8")
    section = entry["Desktop Entry"]
    assert section["Type"] == "Application"
    assert section["Name"] == "DLS Microscopy"
    icon = REPO / "src" / "dls_microscopy" / "napari" / "resources" / "icon.svg"  # the app's own
    assert Path(section["Icon"]).read_bytes() == icon.read_bytes()
    assert Path(section["TryExec"]).is_file()
    argv = _desktop_exec(section["Exec"])
    assert Path(argv[0]).is_relative_to(venv)
    assert argv[1:] == ["gui"]

    # start the program named by the menu entry
    res = _run([argv[0], "--version"], env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"dls-microscopy {__version__}"
    res = _run([str(launcher), "--version"], env, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"dls-microscopy {__version__}"
    # the package was installed into the new environment, not taken from the reused one
    where = "import dls_microscopy; print(dls_microscopy.__file__)"
    res = _run([str(venv / "bin" / "python"), "-c", where], env)
    assert Path(res.stdout.strip()).is_relative_to(venv), res.stdout + res.stderr

    import typer.main

    from dls_microscopy.cli import app

    if "gui" in typer.main.get_command(app).commands:  # type: ignore[attr-defined]
        res = _run([*argv, "--help"], env, timeout=120)
        assert res.returncode == 0, res.stderr

    res = _run(["bash", str(UNINSTALL)], env)
    assert res.returncode == 0, res.stderr
    # nothing left: HOME is as before (the folder .local/bin existed and holds a file not ours)
    assert _tree(home) == before
    assert foreign.read_text() == "#!/bin/sh\n"

    res = _run(["bash", str(UNINSTALL)], env)
    assert res.returncode == 0
    assert "nothing to remove" in res.stdout
