"""Reusable conformance test suites for plugins (import from tests only: needs pytest)."""

from __future__ import annotations

from dls_microscopy.testing.segmenter import SegmenterTests

__all__ = ["SegmenterTests"]
