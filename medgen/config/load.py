"""YAML loading with ``--set a.b=c`` overrides, validated into a pydantic model."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from medgen.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("medgen.config")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path.name, "config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(path.name, f"not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path.name, "top level must be a mapping")
    return data


def parse_set(item: str) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` -> (["train", "lr"], 0.001). Values are parsed as YAML scalars/lists."""
    if "=" not in item:
        raise ConfigError("--set", f"expected key=value, got '{item}'")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError("--set", f"bad key '{key}'")
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None,
                    rename: Callable[[list[str]], list[str]] | None = None) -> dict[str, Any]:
    """Apply ``--set`` items to a nested dict (copying it). Creates intermediate mappings.

    ``rename`` maps a key path first (deprecated keys of an older config version).
    """
    import copy

    out = copy.deepcopy(data)
    for item in overrides or []:
        parts, value = parse_set(item)
        if rename is not None:
            parts = rename(parts)
        node = out
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):  # list items by index: steps.2.preset=...
                if not p.isdigit() or int(p) >= len(node):
                    raise ConfigError("--set", f"'{'.'.join(parts)}': '{p}' is not an index of "
                                      f"a list of {len(node)}")
                if last:
                    node[int(p)] = value
                else:
                    node = node[int(p)]
                continue
            if not isinstance(node, dict):
                raise ConfigError("--set", f"'{'.'.join(parts)}': '{parts[i - 1]}' is not a mapping")
            if last:
                node[p] = value
            else:
                if node.get(p) is None:
                    node[p] = {}
                node = node[p]
    return out


def load_raw(model_cls, path: str | Path | None = None, overrides: list[str] | None = None,
             data: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The mapping :func:`load_config` validates (file or ``data``, upgraded to the current
    config version, overrides applied) and the deprecation notes that produced."""
    from medgen.config.versions import upgrade, upgrade_key

    raw = dict(data or {})
    source = None
    if path is not None:
        raw = load_yaml(path)
        source = Path(path).name
    raw, notes = upgrade(model_cls, raw, source)

    def rename(parts: list[str]) -> list[str]:
        new, note = upgrade_key(model_cls, parts)
        if note:
            notes.append(note)
        return new

    raw = apply_overrides(raw, overrides, rename)
    return raw, notes


def load_config(model_cls: type[M], path: str | Path | None = None, overrides: list[str] | None = None,
                data: dict[str, Any] | None = None) -> M:
    """Load YAML (or ``data``), upgrade an older config version, apply overrides, validate.

    Errors are one-line ConfigErrors naming the key; deprecation notes (an older version, an
    old ``--set`` key) are logged as one warning line each on the ``medgen.config`` logger.
    """
    from medgen.config.base import format_validation_error

    raw, notes = load_raw(model_cls, path, overrides, data)
    for note in notes:
        log.warning("%s", note)
    source = Path(path).name if path is not None else None
    try:
        return model_cls.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(None, format_validation_error(err, model_cls, source)) from None


def dump_config(cfg: BaseModel) -> str:
    """The resolved config as YAML (what runs log as an artifact and hash)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True)
