"""Base model for every config section, and one-line error messages with suggestions."""

from __future__ import annotations

import typing
from enum import Enum

from pydantic import BaseModel, ConfigDict, ValidationError

from medgen.registry import suggest

_TAG_FIELDS = ("name", "kind")  # discriminators of the unions in medgen's configs


class StrictModel(BaseModel):
    """Forbids unknown keys, validates assignments, freezes nothing (overrides are applied first)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _models_in(ann) -> list[type[BaseModel]]:
    """Every pydantic model class inside an annotation (unions, lists, Annotated, Optional)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    out: list[type[BaseModel]] = []
    for arg in typing.get_args(ann):
        for m in _models_in(arg):
            if m not in out:
                out.append(m)
    return out


def _tag_of(member: type[BaseModel]) -> str | None:
    for name in _TAG_FIELDS:
        f = member.model_fields.get(name)
        if f is not None and typing.get_origin(f.annotation) is typing.Literal:
            v = typing.get_args(f.annotation)[0]
            return v.value if isinstance(v, Enum) else str(v)
    return None


def resolve_loc(model_cls: type[BaseModel], loc: tuple) -> tuple[str, list[str]]:
    """(dotted key without union tags, valid keys where the last element was looked up).

    ``("task", "sr", "profil")`` on a TrainConfig -> ``("task.profil", [fields of the sr task])``.
    """
    cls: type[BaseModel] | None = model_cls
    parts: list[str] = []
    holder: list[str] = []
    union: dict[str, type[BaseModel]] = {}
    for part in loc:
        if isinstance(part, int):
            parts.append(str(part))
            continue
        if union and str(part) in union:  # the tag pydantic puts in the path of a union member
            cls, union = union[str(part)], {}
            continue
        parts.append(str(part))
        holder = list(cls.model_fields) if cls is not None else []
        field = cls.model_fields.get(part) if cls is not None else None
        members = _models_in(field.annotation) if field is not None else []
        if len(members) > 1:
            union = {t: m for m in members if (t := _tag_of(m)) is not None}
            cls = None
        else:
            cls, union = (members[0] if members else None), {}
    return ".".join(parts), holder


def _clean(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


def _tags(expected: str) -> list[str]:
    """``"<T.A: 'a'>, 'b'"`` -> ``["a", "b"]`` (pydantic's list of expected union tags)."""
    import re

    return re.findall(r"'([^']*)'", expected)


def format_error(e: dict, model_cls: type[BaseModel]) -> str:
    """One pydantic error dict as ``key: what is wrong`` (suggesting the nearest valid name)."""
    loc = tuple(e.get("loc", ()))
    dotted, holder = resolve_loc(model_cls, loc)
    kind = e.get("type")
    ctx = e.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown key '{dotted}'{suggest(str(loc[-1]), holder) if loc else ''}"
    if kind == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "name")).strip("'")
        opts = _tags(str(ctx.get("expected_tags", "")))
        tag = ctx.get("tag")
        return (f"{dotted + '.' if dotted else ''}{disc}: unknown {disc} '{tag}'"
                f"{suggest(tag, opts)}; options: {', '.join(opts)}")
    if kind == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "name")).strip("'")
        return f"{dotted}: needs a '{disc}'"
    msg = _clean(str(e.get("msg")))
    if kind in ("literal_error", "enum") and isinstance(e.get("input"), str):
        msg += suggest(e["input"], _tags(str(ctx.get("expected", ""))))
    if not dotted or msg.startswith((f"{dotted}.", f"{dotted} ", f"{dotted}:")):
        return msg  # the message already names its key (cross-field checks do)
    return f"{dotted}: {msg}"


def format_validation_error(err: ValidationError, model_cls: type[BaseModel],
                            source: str | None = None) -> str:
    """Render pydantic errors as one line: ``train.yaml: unknown key 'optim.lr_maxx' (did you
    mean 'lr'?)``; several errors are joined with ``; ``."""
    lines = [format_error(e, model_cls) for e in err.errors()]
    lines = list(dict.fromkeys(lines))
    return "; ".join(f"{source}: {m}" if source else m for m in lines)
