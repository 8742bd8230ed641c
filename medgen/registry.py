"""Name -> object registries with "did you mean" errors and entry-point plugins.

Used for readers/writers, models, degradations and engines. A third-party package registers more
under the entry-point group ``medgen.<registry name>`` (e.g. ``medgen.models``).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medgen.errors import ConfigError

T = TypeVar("T")


def suggest(name: str, choices) -> str:
    """' (did you mean 'x'?)' or ''."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._loaded_entry_points = False

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False):
        """``registry.register("vae", VAE)`` or as a decorator ``@registry.register("vae")``."""

        def _add(o: T) -> T:
            if name in self._items and not overwrite and self._items[name] is not o:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = o
            return o

        return _add(obj) if obj is not None else _add

    def _load_entry_points(self) -> None:
        if self._loaded_entry_points:
            return
        self._loaded_entry_points = True
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"medgen.{self.kind}"):
            if ep.name not in self._items:
                try:
                    self._items[ep.name] = ep.load()
                except Exception:  # a broken plugin is recorded, not fatal (pydicom's habit)
                    import logging

                    logging.getLogger("medgen").warning("plugin %s for %s failed to load",
                                                        ep.name, self.kind)

    def get(self, name: str) -> T:
        if name not in self._items:
            self._load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                None, f"unknown {self.kind} '{name}'{suggest(name, self._items)}; "
                f"known: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def lazy(module: str, attr: str) -> Callable:
    """A registry entry that imports its target on first use (keeps ``--help`` fast)."""

    def _load(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module(module), attr)(*args, **kwargs)

    _load.__qualname__ = f"lazy({module}.{attr})"
    return _load
