"""Field types shared by every config model (train, pipeline, presets, inference settings).

* :func:`choice` - a :mod:`medgen.config.supported` enum with aliases, case-insensitive, whose
  error names the options and suggests the nearest one.
* :data:`Device` - ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
* :func:`check_choice` - the same check as a plain function (CLI options).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BeforeValidator

from medgen.config.supported import StrEnum, SupportedDeviceKind
from medgen.registry import suggest

E = TypeVar("E", bound=StrEnum)


def options_text(enum_cls: type[StrEnum], aliases: Mapping[str, Any] | None = None) -> str:
    """``"gaussian, rect (aliases: rectangular -> rect)"``."""
    text = ", ".join(m.value for m in enum_cls)
    if aliases:
        text += " (aliases: " + ", ".join(f"{a} -> {v}" for a, v in aliases.items()) + ")"
    return text


def check_choice(value: Any, enum_cls: type[E], what: str,
                 aliases: Mapping[str, Any] | None = None) -> E:
    """``value`` as a member of ``enum_cls``; exact, case-insensitive or through ``aliases``.

    Raises
    ------
    ValueError
        ``unknown slice profile 'rectangle' (did you mean 'rect'?); options: gaussian, rect``.
    """
    if isinstance(value, enum_cls):
        return value
    s = str(value).strip()
    for m in enum_cls:
        if s == m.value or s.lower() == m.value.lower():
            return m
    low = {str(k).lower(): v for k, v in (aliases or {}).items()}
    if s.lower() in low:
        return enum_cls(low[s.lower()])
    names = [m.value for m in enum_cls] + list(aliases or {})
    raise ValueError(f"unknown {what} '{s}'{suggest(s, names)}; options: "
                     f"{options_text(enum_cls, aliases)}")


def choice(enum_cls: type[E], what: str, aliases: Mapping[str, Any] | None = None):
    """An annotated field type: ``profile: choice(SupportedProfile, "slice profile", ALIASES)``.

    The stored value is the enum member (a ``str``); YAML/JSON dumps hold its canonical value, so
    an alias never reaches a saved config.
    """
    return Annotated[enum_cls, BeforeValidator(lambda v: check_choice(v, enum_cls, what, aliases))]


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(value: Any) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (case-insensitive); anything else is an error."""
    s = str(value).strip().lower()
    if _DEVICE.match(s):
        return s
    raise ValueError(f"unknown device '{value}'{suggest(s, [m.value for m in SupportedDeviceKind])}"
                     "; options: auto, cpu, cuda, cuda:N")


Device = Annotated[str, BeforeValidator(check_device)]

_SPLIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def check_ratios(value: Any) -> dict[str, float]:
    """Split ratios ``{"train": 0.7, "val": 0.15, "test": 0.15}`` (or ``"train=0.7,val=0.15,..."``):
    names once each, fractions in [0, 1] that add up to 1 (within 1e-6).

    Raises
    ------
    ValueError
        One line naming what is wrong (``ratios add up to 0.9, not 1: train=0.7, val=0.1, ...``).
    """
    pairs: list[tuple[str, Any]]
    if isinstance(value, str):
        pairs = []
        for part in [p for p in value.split(",") if p.strip()]:
            if part.count("=") != 1:
                raise ValueError(f"'{part.strip()}' is not name=fraction (e.g. train=0.7,val=0.3)")
            k, v = part.split("=")
            pairs.append((k.strip(), v.strip()))
    elif isinstance(value, Mapping):
        pairs = list(value.items())
    else:
        raise ValueError("expected name=fraction pairs, e.g. {train: 0.7, val: 0.15, test: 0.15}")
    out: dict[str, float] = {}
    for k, v in pairs:
        if not _SPLIT_NAME.match(str(k)):
            raise ValueError(f"split name '{k}' must start with a letter (letters, digits, _ -)")
        if k in out:
            raise ValueError(f"split '{k}' given twice")
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"split '{k}': '{v}' is not a number") from None
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"split '{k}': {f:g} is not a fraction in [0, 1]")
        out[str(k)] = f
    if not out:
        raise ValueError("no splits given (e.g. train=0.7,val=0.15,test=0.15)")
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        listed = ", ".join(f"{k}={v:g}" for k, v in out.items())
        raise ValueError(f"ratios add up to {total:g}, not 1: {listed}")
    return out


#: Split ratios that add up to 1 (manifest steps, ``medgen manifest split --ratios``).
Ratios = Annotated[dict[str, float], BeforeValidator(check_ratios)]

__all__ = ["Device", "Ratios", "check_choice", "check_device", "check_ratios", "choice",
           "options_text"]
