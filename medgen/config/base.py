"""Base model for every config section, and one-line error messages with suggestions."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationError

from medgen.registry import suggest


class StrictModel(BaseModel):
    """Forbids unknown keys, validates assignments, freezes nothing (overrides are applied first)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _fields_at(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Valid field names of the sub-model that ``loc`` (minus its last element) points into."""
    cls = model_cls
    for part in loc[:-1]:
        if isinstance(part, int) or cls is None:
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            # discriminated union tag or dict key: the union member name may appear in loc
            return []
        ann = field.annotation
        cls = _model_in(ann)
    return list(getattr(cls, "model_fields", {}).keys()) if cls is not None else []


def _model_in(ann):
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _model_in(arg)
        if m is not None:
            return m
    return None


def format_validation_error(err: ValidationError, model_cls: type[BaseModel],
                            source: str | None = None) -> str:
    """Render pydantic errors as short lines: ``config.yaml: train.lr: unknown key (did you mean 'lr_max'?)``."""
    lines = []
    for e in err.errors():
        loc = tuple(e.get("loc", ()))
        dotted = ".".join(str(p) for p in loc)
        if e.get("type") == "extra_forbidden":
            hint = suggest(str(loc[-1]), _fields_at(model_cls, loc)) if loc else ""
            msg = f"unknown key '{dotted}'{hint}"
        else:
            msg = f"{dotted}: {e.get('msg')}" if dotted else str(e.get("msg"))
        lines.append(f"{source}: {msg}" if source else msg)
    return "; ".join(lines)
