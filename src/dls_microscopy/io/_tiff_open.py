"""Opening a TIFF with tifffile: header check, structure parse, truncation check.

Part of :mod:`dls_microscopy.io.tiff`: a damaged file raises
:class:`~dls_microscopy.errors.CorruptDataError` here, at open, rather than
when pixels are computed.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import tifffile

from dls_microscopy.errors import (
    CorruptDataError,
    InputError,
    InputNotFoundError,
    UnsupportedFormatError,
)

log = logging.getLogger("dls_microscopy.io.tiff")

_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: tifffile log messages that mean the file structure is truncated or corrupt.
_CORRUPT = re.compile(
    r"invalid page offset|invalid offset to page|corrupted tag list|circular reference"
    r"|missing data offset|missing (data )?ByteCounts|incorrect Strip(ByteCounts|Offsets)"
)
#: tifffile's warning for an OME series whose OME-XML names pages the file lacks: raised by
#: :func:`_check_planes` when that series is opened, so not repeated as a warning
_MISSING_FRAMES = re.compile(r"OME series is missing \d+ frames")
#: "invalid value offset N": a tag value beyond the end of the file (N < 8: writer bug).
_VALUE_OFFSET = re.compile(r"invalid value offset (\d+)")


class _ThreadErrors(logging.Filter):
    """Takes tifffile's warnings and errors emitted by the current thread out of the log.

    A logger's filter runs before its handlers and before propagation, so what it
    takes is not printed: a damaged file gets one error naming the file and the
    reason, not tifffile's lines before it; on a file that opens, the messages are
    logged again as our warnings.
    """

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread == self.thread and record.levelno >= logging.WARNING:
            self.messages.append(record.getMessage())
            return False
        return True


@contextmanager
def _tifffile_errors() -> Iterator[list[str]]:
    taken = _ThreadErrors()
    logger = logging.getLogger("tifffile")
    logger.addFilter(taken)
    try:
        yield taken.messages
    finally:
        logger.removeFilter(taken)


def _open_tifffile(path: Path) -> tifffile.TiffFile:
    """Open and parse ``path``; a damaged structure raises :class:`CorruptDataError`."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError as exc:
        raise InputNotFoundError("no such file", path=path) from exc
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    if not head:
        raise UnsupportedFormatError("file is empty", path=path)
    if head not in _TIFF_MAGIC:
        raise UnsupportedFormatError("not a TIFF file (no TIFF header)", path=path)
    tif = None
    try:
        with _tifffile_errors() as messages:
            tif = tifffile.TiffFile(path)
            _ = tif.series  # parses every series (metadata only)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from exc
    except Exception as exc:  # tifffile raises many types on damaged files
        if tif is not None:
            tif.close()
        raise CorruptDataError(
            f"cannot parse TIFF structure: {type(exc).__name__}: {exc}", path=path
        ) from exc
    for message in messages:
        beyond = _VALUE_OFFSET.search(message)
        if _CORRUPT.search(message) or (beyond and int(beyond.group(1)) >= 8):
            tif.close()
            raise CorruptDataError(f"truncated or corrupt TIFF (tifffile: {message})", path=path)
    for message in messages:
        if not _MISSING_FRAMES.search(message):
            log.warning("%s: tifffile: %s", path, message)
    return tif


def _check_extent(series: tifffile.TiffPageSeries, path: Path) -> None:
    """Raise when pixel data of ``series`` (first and last page) lies beyond its file's end."""
    for level in series.levels:
        if level.dataoffset is not None:  # contiguous pixels
            spans = [(level.dataoffset + level.nbytes, level.parent.filehandle.size)]
        else:
            try:
                pages = [level[0], level[len(level) - 1]]
            except Exception as exc:  # a page that cannot be loaded
                raise CorruptDataError(f"cannot read TIFF pages: {exc}", path=path) from exc
            spans = [
                (
                    max(o + n for o, n in zip(p.dataoffsets, p.databytecounts, strict=False)),
                    p.parent.filehandle.size,
                )
                for p in pages
                if p is not None and len(p.dataoffsets)
            ]
        for end, size in spans:
            if end > size:
                raise CorruptDataError(
                    f"file is truncated: pixel data extends to byte {end}, the file has {size}",
                    path=path,
                )


def _check_planes(series: tifffile.TiffPageSeries, index: int, path: Path) -> None:
    """Raise when the OME-XML of ``series`` declares more planes than the file has pages.

    tifffile reads the missing planes as zeros: an image that was never written.
    """
    for level in series.levels:
        declared = len(level.pages)
        present = sum(page is not None for page in level.pages)
        if present < declared:
            raise CorruptDataError(
                f"the OME-XML declares {declared} planes (SizeZ×SizeC×SizeT) for series {index}, "
                f"but the file has {present} pages for them; the file is incomplete or its "
                "OME-XML is wrong",
                path=path,
            )


def _check_imagej_images(tif: tifffile.TiffFile, path: Path) -> None:
    """Warn when an ImageJ file (an ``imagej`` series) has more pages than its ``images=`` count.

    tifffile reads the ``images`` planes the metadata declares and nothing after them,
    so the extra pages would be dropped without a word.  (A file with *fewer* pages is
    normal: ImageJ writes the planes of files over 4 GiB after a single page.)
    """
    meta = tif.imagej_metadata or {}
    try:
        declared = int(meta.get("images", 0))
    except (TypeError, ValueError):
        return
    if declared < 1:
        return
    try:
        tif.pages[declared]  # one page past the declared ones: the IFDs before it are read anyway
    except Exception:  # no such page (or a damaged one, reported when it matters)
        return
    pages = len(tif.pages)  # counted only in this rare case: it reads every IFD
    if declared < pages:
        log.warning(
            "%s: the ImageJ metadata declares %d images, but the file has %d pages; only the first %d "
            "are read (the metadata is wrong, or the file was appended to)",
            path,
            declared,
            pages,
            declared,
        )
