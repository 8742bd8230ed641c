"""Config versions: each top-level config has a ``version`` and migrations from older versions.

A model opts in with two class attributes::

    class TrainConfig(StrictModel):
        version: Literal[2] = 2
        MIGRATIONS: ClassVar[tuple[Migration, ...]] = (Migration(1, _v1_to_v2, _v1_key, "..."),)

:func:`upgrade` brings a mapping (a YAML file, a logged ``resolved.yaml``) to the current
version and :func:`upgrade_key` does the same for a ``--set`` key written against the old
shape. Each applied step leaves ONE line in ``notes`` (a deprecation note the caller logs); a
version newer than this medgen, or older than the oldest migration, is a ``ConfigError`` that
says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medgen.errors import ConfigError


@dataclass(frozen=True)
class Migration:
    """One step ``from_version -> from_version + 1``.

    Attributes
    ----------
    from_version : int
    upgrade : callable
        ``upgrade(data) -> data`` (a new mapping of the next version).
    rename_key : callable
        ``rename_key(path) -> new path or None`` for ``--set`` keys of the old shape (None: the
        key means the same in both versions).
    summary : str
        What changed, one short clause (``"task: sr + sr: {...} -> task: {name: sr, ...}"``).
    """

    from_version: int
    upgrade: Callable[[dict[str, Any]], dict[str, Any]]
    rename_key: Callable[[list[str]], list[str] | None]
    summary: str


def current_version(model_cls) -> int | None:
    field = getattr(model_cls, "model_fields", {}).get("version")
    return None if field is None else int(field.default)


def _migrations(model_cls) -> dict[int, Migration]:
    return {m.from_version: m for m in getattr(model_cls, "MIGRATIONS", ())}


def detect_version(model_cls, data: dict[str, Any]) -> int | None:
    """The version ``data`` declares, else what its shape says (``guess_version``), else None."""
    v = data.get("version")
    if v is not None:
        try:
            return int(v)
        except (TypeError, ValueError):
            raise ConfigError(None, f"version: expected an integer, got '{v}'") from None
    guess = getattr(model_cls, "guess_version", None)
    return guess(data) if guess is not None else None


def upgrade(model_cls, data: dict[str, Any], source: str | None = None
            ) -> tuple[dict[str, Any], list[str]]:
    """``data`` migrated to ``model_cls``'s current version, and the deprecation notes."""
    cur = current_version(model_cls)
    if cur is None:
        return data, []
    v = detect_version(model_cls, data)
    if v is None or v == cur:
        return data, []
    where = source or "config"
    steps = _migrations(model_cls)
    if v > cur:
        raise ConfigError(where, f"version {v} is newer than this medgen understands ({cur}); "
                          "upgrade medgen")
    if v not in steps:
        raise ConfigError(where, f"version {v} is no longer supported (this medgen reads "
                          f"{min(steps, default=cur)}..{cur}); rewrite it as version {cur} "
                          "(see docs/configuration.md)")
    changes, first = [], v
    while v < cur:
        m = steps[v]
        data = dict(m.upgrade(dict(data)))
        data["version"] = v + 1
        changes.append(m.summary)
        v += 1
    note = (f"{where}: config version {first} is deprecated, read as version {cur} "
            f"({'; '.join(changes)}); `medgen config upgrade {where}` prints it in the new shape")
    return data, [note]


def upgrade_key(model_cls, parts: list[str]) -> tuple[list[str], str | None]:
    """A ``--set`` key path of an older shape -> (current path, note or None)."""
    cur = current_version(model_cls)
    steps = _migrations(model_cls)
    if cur is None or not steps:
        return parts, None
    out = list(parts)
    for v in sorted(steps):
        new = steps[v].rename_key(out)
        if new is not None:
            out = list(new)
    if out == list(parts):
        return out, None
    return out, (f"--set {'.'.join(parts)}: deprecated key, read as {'.'.join(out)} "
                 f"(config version {cur})")


__all__ = ["Migration", "current_version", "detect_version", "upgrade", "upgrade_key"]
