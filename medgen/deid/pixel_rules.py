"""Pixel rule file schema (pydantic; imported only when a rule file is given)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from medgen.config.base import StrictModel


class PixelRule(StrictModel):
    name: str
    manufacturer: str
    model: str
    rows: int = Field(gt=0)
    columns: int = Field(gt=0)
    rectangles: list[tuple[int, int, int, int]] = Field(min_length=1)


class TextZone(StrictModel):
    """Any OCR text whose centre falls in ``box`` ([x0, y0, x1, y1], fractions of the image) is
    blanked, whatever it says."""

    name: str
    modality: str | None = None
    manufacturer: str | None = None
    box: tuple[float, float, float, float]

    @field_validator("box")
    @classmethod
    def _fractions(cls, v):
        x0, y0, x1, y1 = v
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError("box must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= 1, same for y")
        return v


class PixelRules(StrictModel):
    rules: list[PixelRule] = Field(default_factory=list)
    text_zones: list[TextZone] = Field(default_factory=list)


def load_pixel_rules(path: str | Path | None) -> PixelRules:
    """Load and validate a pixel rule YAML (one-line error on a bad file)."""
    if path is None:
        return PixelRules()
    from medgen.config import load_config

    return load_config(PixelRules, path)
