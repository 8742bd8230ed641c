"""Intensity normalisation recorded in the sample, with an exact inverse.

``NormalizeIntensityd`` maps intensities linearly (``a_min..a_max -> b_min..b_max``, optional
clipping) with MONAI's deterministic ``ScaleIntensityRange``; how ``a_min``/``a_max`` are chosen is
the *mode*:

* ``"percentile"``: ``lower``/``upper`` percentiles of the reference key (MR);
* ``"window"``: a CT window ``center``/``width`` in HU (``a = center -+ width/2``);
* ``"range"``: fixed ``a_min``/``a_max``;
* ``"zscore"``: ``(x - mean) / std`` of the reference key (``b_*`` unused).

The values actually used are recorded in ``data["normalization"]`` (a JSON-able dict), and
:func:`denormalize` maps model outputs back to physical units. :meth:`NormalizeIntensityd.card`
gives the settings a model card stores ("expected intensity normalisation").
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, ScaleIntensityRange

NORM_KEY = "normalization"
MODES = ("percentile", "window", "range", "zscore")

__all__ = ["NormalizeIntensityd", "normalize", "denormalize", "NORM_KEY"]


def _plain(x) -> torch.Tensor:
    from monai.utils import convert_to_tensor

    return convert_to_tensor(x, track_meta=False, dtype=torch.float32)


def _restore(out: torch.Tensor, like):
    from monai.data import MetaTensor

    if isinstance(like, MetaTensor):
        res = MetaTensor(out, meta=dict(like.meta), applied_operations=list(like.applied_operations))
        res.affine = like.affine.clone()
        return res
    if isinstance(like, torch.Tensor):
        return out.to(like.device)
    return out.cpu().numpy()


def normalize(img, record: Mapping[str, Any]):
    """Apply a normalisation record (as stored in the sample) to ``img``."""
    t = _plain(img)
    if record["mode"] == "zscore":
        out = (t - float(record["mean"])) / float(record["std"])
    else:
        tr = ScaleIntensityRange(a_min=float(record["a_min"]), a_max=float(record["a_max"]),
                                 b_min=float(record["b_min"]), b_max=float(record["b_max"]),
                                 clip=bool(record["clip"]))
        out = _plain(tr(t))
    return _restore(out, img)


def denormalize(img, record: Mapping[str, Any]):
    """Inverse of :func:`normalize` (exact up to float rounding; clipped values stay clipped)."""
    t = _plain(img)
    if record["mode"] == "zscore":
        out = t * float(record["std"]) + float(record["mean"])
    else:
        tr = ScaleIntensityRange(a_min=float(record["b_min"]), a_max=float(record["b_max"]),
                                 b_min=float(record["a_min"]), b_max=float(record["a_max"]),
                                 clip=False)
        out = _plain(tr(t))
    return _restore(out, img)


class NormalizeIntensityd(MapTransform):
    """Linear intensity normalisation with the parameters recorded in the sample.

    Parameters
    ----------
    keys : str or list of str
        Keys to normalise (e.g. ``["image", "noisy"]``) - all with the same parameters.
    mode : str
        ``"percentile"``, ``"window"``, ``"range"`` or ``"zscore"``.
    ref_key : str, optional
        Key whose statistics set the parameters (default: the first key), so that a clean image
        and its degraded copy share one mapping.
    lower, upper : float
        Percentiles for ``mode="percentile"``.
    center, width : float
        CT window for ``mode="window"`` (HU).
    a_min, a_max : float
        Input range for ``mode="range"``.
    b_min, b_max : float
        Output range (default [0, 1]).
    clip : bool
        Clip to ``[b_min, b_max]`` (default False, so that noise below the window survives and the
        inverse is exact).
    """

    def __init__(self, keys, mode: str = "percentile", ref_key: str | None = None,
                 lower: float = 0.5, upper: float = 99.5, center: float = 40.0,
                 width: float = 400.0, a_min: float = 0.0, a_max: float = 1.0,
                 b_min: float = 0.0, b_max: float = 1.0, clip: bool = False,
                 record_key: str = NORM_KEY, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if mode not in MODES:
            from medgen.errors import ConfigError
            from medgen.registry import suggest

            raise ConfigError(None, f"unknown normalisation mode '{mode}'{suggest(mode, MODES)}")
        self.mode = mode
        self.ref_key = ref_key
        self.lower, self.upper = float(lower), float(upper)
        self.center, self.width = float(center), float(width)
        self.a_min, self.a_max = float(a_min), float(a_max)
        self.b_min, self.b_max = float(b_min), float(b_max)
        self.clip = bool(clip)
        self.record_key = record_key

    def card(self) -> dict[str, Any]:
        """Settings for a model card (the per-sample values are in each sample's record)."""
        c: dict[str, Any] = {"mode": self.mode, "b_min": self.b_min, "b_max": self.b_max,
                             "clip": self.clip}
        if self.mode == "percentile":
            c.update(lower=self.lower, upper=self.upper)
        elif self.mode == "window":
            c.update(center=self.center, width=self.width)
        elif self.mode == "range":
            c.update(a_min=self.a_min, a_max=self.a_max)
        return c

    def compute(self, ref) -> dict[str, Any]:
        """The record this transform would apply for reference image ``ref``."""
        rec: dict[str, Any] = {"mode": self.mode, "b_min": self.b_min, "b_max": self.b_max,
                               "clip": self.clip}
        if self.mode in ("percentile", "zscore"):
            x = _plain(ref).flatten().cpu().numpy().astype(np.float64)
        if self.mode == "percentile":
            lo, hi = np.percentile(x, [self.lower, self.upper])
            if hi <= lo:
                hi = lo + 1.0
            rec.update(lower=self.lower, upper=self.upper, a_min=float(lo), a_max=float(hi))
        elif self.mode == "window":
            rec.update(center=self.center, width=self.width, a_min=self.center - self.width / 2,
                       a_max=self.center + self.width / 2)
        elif self.mode == "range":
            rec.update(a_min=self.a_min, a_max=self.a_max)
        else:
            std = float(x.std())
            rec.update(mean=float(x.mean()), std=std if std > 0 else 1.0)
        return rec

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if not keys:
            return d
        ref = d[self.ref_key] if self.ref_key is not None else d[keys[0]]
        rec = self.compute(ref)
        for k in keys:
            d[k] = normalize(d[k], rec)
        rec["keys"] = [str(k) for k in keys]
        d[self.record_key] = rec
        return d

    def inverse(self, data: Mapping[Hashable, Any]) -> dict:
        """Map the keys back to the original units using the sample's record."""
        d = dict(data)
        rec = d[self.record_key]
        for k in self.key_iterator(d):
            d[k] = denormalize(d[k], rec)
        return d
