"""The engine registry: ``--engine`` names -> engine classes (imported on first use).

Kept apart from the :class:`~medgen.infer.engines.Engine` protocol so that settings can check an
engine name (and suggest the nearest one) without importing any engine or torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from medgen.errors import ConfigError
from medgen.registry import Registry, lazy, suggest

ENGINES: Registry[Callable[..., Any]] = Registry("engines")
ENGINES.register("local", lazy("medgen.infer.engines.local", "LocalEngine"))
ENGINES.register("dask", lazy("medgen.infer.engines.dask", "DaskEngine"))


def check_engine_name(name: str) -> str:
    """``name`` if it is a registered engine, else a ConfigError with the nearest name."""
    names = ENGINES.names()
    if name not in names:
        raise ConfigError("--engine", f"unknown engine '{name}'{suggest(name, names)}; "
                          f"known: {', '.join(names)}")
    return name


def make_engine(name: str, **options: Any) -> Any:
    """An engine instance (``options``: ``workers``, ``scheduler``, ``processes``...)."""
    check_engine_name(name)
    return ENGINES.get(name)(**options)
