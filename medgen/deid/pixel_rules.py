"""Pixel rule file schema (pydantic; imported only when a rule file is given)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from medgen.config.base import StrictModel


class PixelRule(StrictModel):
    name: str
    manufacturer: str
    model: str
    rows: int = Field(gt=0)
    columns: int = Field(gt=0)
    rectangles: list[tuple[int, int, int, int]] = Field(min_length=1)


class PixelRules(StrictModel):
    rules: list[PixelRule] = Field(default_factory=list)


def load_pixel_rules(path: str | Path | None) -> PixelRules:
    """Load and validate a pixel rule YAML (one-line error on a bad file)."""
    if path is None:
        return PixelRules()
    from medgen.config import load_config

    return load_config(PixelRules, path)

