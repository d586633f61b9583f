"""A typed registry of plugins found through entry points, loaded lazily.

Built-ins register through the same entry-point groups as third-party
packages (see ``pyproject.toml``), so the CLI, the pipeline and the napari
widgets discover both the same way.  Importing a plugin's module is deferred
until it is first requested.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from typing import Generic, TypeVar

from dls_microscopy.errors import DlsError, InputError

__all__ = ["Registry"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """Plugins of one kind, by name.

    Parameters
    ----------
    group : str
        The entry-point group, e.g. ``"dls_microscopy.segmenters"``.
    kind : str
        Human name of what is registered, for messages.
    """

    def __init__(self, group: str, kind: str) -> None:
        self.group = group
        self.kind = kind
        self._entry_points: dict[str, EntryPoint] | None = None
        self._loaded: dict[str, T] = {}
        self._registered: dict[str, Callable[[], T]] = {}

    def _discover(self) -> dict[str, EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in entry_points(group=self.group)}
        return self._entry_points

    def register(self, name: str, factory: Callable[[], T]) -> None:
        """Register ``factory`` under ``name`` at runtime (tests, notebooks)."""
        self._registered[name] = factory
        self._loaded.pop(name, None)

    def names(self) -> list[str]:
        """All available names, sorted."""
        return sorted(set(self._discover()) | set(self._registered))

    def get(self, name: str) -> T:
        """The plugin registered as ``name`` (its module is imported now).

        Raises
        ------
        InputError
            When no plugin has that name (the message lists the available ones).
        DlsError
            When the plugin exists but cannot be imported.
        """
        if name in self._loaded:
            return self._loaded[name]
        if name in self._registered:
            obj = self._registered[name]()
        else:
            ep = self._discover().get(name)
            if ep is None:
                raise InputError(
                    f"no {self.kind} named {name!r} (available: {', '.join(self.names()) or 'none'})"
                )
            try:
                obj = ep.load()
            except ImportError as exc:
                raise DlsError(
                    f"the {self.kind} {name!r} ({ep.value}) cannot be imported: {exc}. "
                    "Is its package installed completely?"
                ) from exc
        self._loaded[name] = obj
        return obj
