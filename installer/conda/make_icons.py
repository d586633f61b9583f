"""Make the installer icons (PNG, Windows ICO, macOS ICNS) from the app's own icon.

Usage: ``python installer/conda/make_icons.py [OUTDIR]`` (default ``installer/conda/icons``).
Reads ``src/dls_microscopy/napari/resources/icon.png`` (256×256) and writes
``dls-microscopy.png``, ``dls-microscopy.ico`` and ``dls-microscopy.icns`` with Pillow.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from PIL import Image

log = logging.getLogger("make_icons")
REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "src" / "dls_microscopy" / "napari" / "resources" / "icon.png"


def make_icons(outdir: Path, source: Path = SOURCE) -> list[Path]:
    """Write the three icon files into ``outdir`` and return their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    image = Image.open(source).convert("RGBA")
    if image.size != (256, 256):
        image = image.resize((256, 256), Image.Resampling.LANCZOS)
    paths = [outdir / f"dls-microscopy.{ext}" for ext in ("png", "ico", "icns")]
    image.save(paths[0])
    image.save(paths[1], sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])
    image.save(paths[2])
    return paths


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "icons"
    for p in make_icons(target):
        log.info("wrote %s", p)
