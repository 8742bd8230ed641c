"""Model card: what a checkpoint is for and how to feed it, with digests only (no PHI).

The card travels as ``card.json`` beside the weights. It carries everything inference needs to
reproduce the training-time input (modality, expected spacing, intensity normalisation with its
parameters, patch size) and the lineage (training manifest digest, config digest, weights digest,
MLflow run id, medgen version). Identifying data cannot be stored: digests must be 64 hex
characters, ids and metric names are restricted to a small alphabet, and free-text fields reject
things that look like paths, DICOM UIDs, dates or e-mail addresses.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from medgen.config import StrictModel

_HEX64 = r"^[0-9a-f]{64}$"
_ID = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,127}$"
# free-text guards (heuristic, documented): absolute/relative paths, UIDs, dates, e-mails
_PHI_PATTERNS = [
    (re.compile(r"(^|\s)(/|~/|\./|\.\./)[^\s]+|[A-Za-z]:\\|\\\\"), "a file path"),
    (re.compile(r"\b\d+(\.\d+){4,}\b"), "a DICOM UID"),
    (re.compile(r"\b(19|20)\d{2}[-/.]?(0[1-9]|1[0-2])[-/.]?(0[1-9]|[12]\d|3[01])\b"), "a date"),
    (re.compile(r"[^\s@]+@[^\s@]+\.[a-z]{2,}", re.I), "an e-mail address"),
]

Task = Literal["denoise", "sr", "synth", "translate"]


def check_free_text(text: str, field: str = "text") -> str:
    """Reject free text that looks like it carries identifiers (see module docstring)."""
    if len(text) > 2000:
        raise ValueError(f"{field}: at most 2000 characters")
    for pat, what in _PHI_PATTERNS:
        if pat.search(text):
            raise ValueError(f"{field}: looks like it contains {what}; model cards carry no "
                             "identifiers (use digests)")
    return text


class IntensityNorm(StrictModel):
    """The training-time intensity normalisation, as :meth:`NormalizeIntensityd.card` gives it.

    Mirrors :class:`medgen.transforms.intensity.NormalizeIntensityd` so inference reproduces it
    with :meth:`transform` (per-volume statistics such as percentiles are recomputed per input;
    the values used are recorded in each sample and inverted with ``denormalize``).

    ``mode``: ``percentile`` (``lower``/``upper``), ``window`` (CT ``center``/``width`` in HU),
    ``range`` (``a_min``/``a_max``) or ``zscore``; ``b_min``/``b_max`` the output range and
    ``clip`` whether values are clipped to it.
    """

    mode: Literal["percentile", "window", "range", "zscore"] = "percentile"
    lower: float | None = None
    upper: float | None = None
    center: float | None = None
    width: float | None = None
    a_min: float | None = None
    a_max: float | None = None
    b_min: float = 0.0
    b_max: float = 1.0
    clip: bool = False

    @model_validator(mode="after")
    def _check(self):
        needs = {"percentile": ("lower", "upper"), "window": ("center", "width"),
                 "range": ("a_min", "a_max"), "zscore": ()}[self.mode]
        others = {"lower", "upper", "center", "width", "a_min", "a_max"} - set(needs)
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ValueError(f"intensity mode '{self.mode}' needs {', '.join(missing)}")
        stray = sorted(n for n in others if getattr(self, n) is not None)
        if stray:
            raise ValueError(f"intensity mode '{self.mode}' does not take {', '.join(stray)}")
        if self.mode == "percentile" and not 0 <= self.lower < self.upper <= 100:
            raise ValueError("intensity 'percentile': need 0 <= lower < upper <= 100")
        if self.mode == "window" and self.width <= 0:
            raise ValueError("intensity 'window': width must be > 0")
        return self

    def transform_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``NormalizeIntensityd(keys, **kwargs)``."""
        return self.model_dump(exclude_none=True)

    def transform(self, keys):
        """A :class:`medgen.transforms.intensity.NormalizeIntensityd` reproducing this setting."""
        from medgen.transforms.intensity import NormalizeIntensityd

        return NormalizeIntensityd(keys, **self.transform_kwargs())


class ModelCard(StrictModel):
    """The ``card.json`` of a checkpoint (schema version 1).

    ``config_sha256`` and ``weights_sha256`` are filled in by
    :func:`medgen.models.checkpoint.save_checkpoint`; leave them empty when creating a card.
    """

    schema_version: Literal[1] = 1
    model_name: str = Field(pattern=_ID, description="registry family, e.g. vae, unet")
    task: Task
    intended_use: str = Field(min_length=1)
    modality: str = Field(pattern=r"^([A-Z]{2,4}|any)$", description="DICOM modality code")
    expected_spacing_mm: list[float] | None = None
    intensity: IntensityNorm
    patch_size: list[int] | None = None
    training_manifest_sha256: str | None = Field(None, pattern=_HEX64)
    metrics: dict[str, float] = Field(default_factory=dict)
    limitations: list[str] = Field(default_factory=list)
    medgen_version: str = Field(default_factory=lambda: __import__("medgen").__version__)
    # No wall-clock time by default: the MLflow run records when it ran, a card with a timestamp
    # would differ byte-for-byte between identical trainings, and the tracking PHI guard (rightly)
    # refuses date-like strings in artifacts. Callers may still set it.
    created_at: str | None = None
    config_sha256: str | None = Field(None, pattern=_HEX64)
    weights_sha256: str | None = Field(None, pattern=_HEX64)
    ema_weights_sha256: str | None = Field(None, pattern=_HEX64)
    mlflow_run_id: str | None = Field(None, pattern=_ID)
    git_commit: str | None = Field(None, pattern=r"^[0-9a-f]{7,64}$")
    lineage: dict[str, str] = Field(default_factory=dict,
                                    description="further digests/ids only, e.g. degradation preset")

    @field_validator("intended_use")
    @classmethod
    def _free_text(cls, v: str) -> str:
        return check_free_text(v, "intended_use")

    @field_validator("limitations")
    @classmethod
    def _limitations(cls, v: list[str]) -> list[str]:
        return [check_free_text(t, "limitations") for t in v]

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, v: dict[str, float]) -> dict[str, float]:
        for k in v:
            if not re.match(r"^[A-Za-z0-9_.:/-]{1,64}$", k) or k.startswith("/"):
                raise ValueError(f"metric name '{k[:40]}' must be a short identifier")
        return v

    @field_validator("lineage")
    @classmethod
    def _lineage(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", k):
                raise ValueError(f"lineage key '{k[:40]}' must be a short identifier")
            if not re.match(_ID, val):
                raise ValueError(f"lineage '{k}': values must be digests or ids "
                                 "(letters, digits, . _ : + -)")
        return v

    @field_validator("created_at")
    @classmethod
    def _created(cls, v: str | None) -> str | None:
        if v is not None:
            datetime.fromisoformat(v.replace("Z", "+00:00"))
        return v

    @model_validator(mode="after")
    def _check(self):
        for name in ("expected_spacing_mm", "patch_size"):
            val = getattr(self, name)
            if val is not None and (len(val) not in (2, 3) or any(s <= 0 for s in val)):
                raise ValueError(f"{name}: 2 or 3 positive entries")
        return self

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
