"""The Windows/macOS installer recipe (conda constructor): consistent, complete, icons buildable.

constructor itself needs conda and runs on the target platform, so CI checks what it can here:
``construct.yaml`` renders (jinja2, platform selectors) to valid YAML for each platform, every
file it names exists or is made by ``make_icons.py``, and the menuinst shortcut runs our command.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CONDA = REPO / "installer" / "conda"
PLATFORMS = {"linux": {"linux", "unix"}, "osx": {"osx", "unix"}, "win": {"win"}}


def _render(platform: str, wheel: str) -> dict:
    jinja2 = pytest.importorskip("jinja2")
    text = jinja2.Template((CONDA / "construct.yaml").read_text(encoding="utf-8")).render(
        environ={"DLS_WHEEL": wheel, "DLS_VERSION": "0.1.0"}
    )
    kept = []
    for line in text.splitlines():  # conda-build style selectors: "key: value  # [win]"
        m = re.search(r"#\s*\[(\w+)\]\s*$", line)
        if m is None or m.group(1) in PLATFORMS[platform]:
            kept.append(line)
    return yaml.safe_load("\n".join(kept))


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_construct_yaml_renders_for_each_platform(platform: str, tmp_path: Path) -> None:
    wheel = str(tmp_path / "dist" / "dls_microscopy-0.1.0-py3-none-any.whl")
    spec = _render(platform, wheel)
    assert spec["name"] == "DLS-Microscopy" and spec["version"] == "0.1.0"
    assert spec["channels"] == ["conda-forge"]
    names = {re.split(r"[\s<>=]", s, maxsplit=1)[0] for s in spec["specs"]}
    assert {"python", "pip", "menuinst", "pytorch", "napari", "pyqt"} <= names
    post = CONDA / spec["post_install"]
    assert post.is_file()
    assert post.suffix == (".bat" if platform == "win" else ".sh")
    if platform == "win":
        assert (CONDA / spec["pre_uninstall"]).is_file()
    extra = {src: dst for item in spec["extra_files"] for src, dst in item.items()}
    assert extra[wheel] == "pkgs_dls/dls_microscopy-0.1.0-py3-none-any.whl"
    assert extra["menu.json"] == "Menu/dls-microscopy.json"
    assert (CONDA / "menu.json").is_file()
    icons = {src for src in extra if src.startswith("icons/")}
    assert icons == {f"icons/dls-microscopy.{ext}" for ext in ("png", "ico", "icns")}
    assert all(dst == f"Menu/{Path(src).name}" for src, dst in extra.items() if src in icons)


def test_menu_shortcut_runs_the_gui_command() -> None:
    menu = json.loads((CONDA / "menu.json").read_text(encoding="utf-8"))
    assert menu["$id"].startswith("https://schemas.conda.io/menuinst-")
    (item,) = menu["menu_items"]
    assert item["name"] == "DLS Microscopy" and item["description"]
    assert item["command"] == ["{{ BIN_DIR }}/dls-microscopy", "gui"]
    assert item["platforms"]["win"]["command"] == ["{{ SCRIPTS_DIR }}/dls-microscopy.exe", "gui"]
    assert set(item["platforms"]) == {"win", "osx", "linux"}
    assert item["icon"] == "{{ MENU_DIR }}/dls-microscopy.{{ ICON_EXT }}"
    from importlib.metadata import entry_points

    scripts = {ep.name for ep in entry_points(group="console_scripts")}
    assert "dls-microscopy" in scripts  # the command the shortcut starts
    for script in ("post_install.sh", "post_install.bat"):
        text = (CONDA / script).read_text(encoding="utf-8")
        assert "pkgs_dls" in text and "[gui]" in text and "menuinst.api import install" in text


def test_make_icons_writes_png_ico_icns(tmp_path: Path) -> None:
    pil = pytest.importorskip("PIL.Image")
    import importlib.util

    spec = importlib.util.spec_from_file_location("_make_icons", CONDA / "make_icons.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    png, ico, icns = module.make_icons(tmp_path)
    assert pil.open(png).size == (256, 256)
    with pil.open(ico) as image:
        assert image.format == "ICO" and (256, 256) in image.info["sizes"]
    with pil.open(icns) as image:
        assert image.format == "ICNS"
