"""memorization check: is a synthetic sample a near-copy of a training scan?

For every synthetic sample two nearest-training-sample distances are computed:

* ``ncc``: ``1 - normalised cross-correlation`` of area-downsampled volumes
  (:func:`medgen.synth.features.downsample`, 16 voxels a side in 3D, 32 in 2D);
* ``embedding``: cosine distance between embeddings - by default a small fixed random-weight
  conv net (:class:`medgen.synth.features.RandomConvEmbedding`, seed 0), optionally the trained
  model's encoder (``embedding="autoencoder"``); features are centred on the training mean so
  the cosine compares what differs between scans, not the response every scan shares.

They are compared with the **calibration distribution**: the nearest-training distances of
held-out real scans (scans of the same population the model never saw); without held-out scans,
leave-one-out nearest distances within the training set. A sample is flagged when, for either
metric, its distance is below ``margin * percentile(calibration, p)`` (defaults ``p = 5``,
``margin = 0.5``): closer to a training scan than almost any *real* unseen scan is. With the
default ``rule="both"`` a sample must be that close in *both* metrics (a near-copy is close in
voxels and in features; requiring both keeps false alarms on distinct real scans rare when the
calibration set is small); ``rule="either"`` is more sensitive. Flagged samples are withheld from
export by default. The flag rate is the headline number.

Everything is computed on the image channel in normalised intensity, on the generated grid.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medgen.synth.features import (
    RandomConvEmbedding,
    cosine_distance_matrix,
    downsample,
    ncc_distance_matrix,
)

log = logging.getLogger("medgen.synth")

METRICS = ("ncc", "embedding")


@dataclass
class MemorizationReference:
    """Training features + calibrated thresholds (computed once, reused per batch)."""

    train_ids: list[str]
    train_feats: dict[str, np.ndarray]
    thresholds: dict[str, float]
    calibration: dict[str, Any]
    embed: Callable
    side: int | None
    embedding_name: str
    center: np.ndarray | None = None
    rule: str = "both"

    def features(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        emb = self.embed(arrays)
        if self.center is None:  # centred on the training mean: cosine of what differs
            self.center = emb.mean(0, keepdims=True)
        return {"ncc": downsample(arrays, self.side), "embedding": emb - self.center}

    def distances(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"ncc": ncc_distance_matrix(feats["ncc"], self.train_feats["ncc"]),
                "embedding": cosine_distance_matrix(feats["embedding"],
                                                    self.train_feats["embedding"])}

    def check(self, arrays: Sequence[np.ndarray], indices: Sequence[int] | None = None
              ) -> list[dict[str, Any]]:
        """Per-sample memorization rows for ``arrays`` (same grid as the reference)."""
        if not len(arrays):
            return []
        dist = self.distances(self.features(arrays))
        rows = []
        for i in range(len(arrays)):
            row: dict[str, Any] = {"index": int(indices[i]) if indices is not None else i}
            by = []
            for m in METRICS:
                j = int(np.argmin(dist[m][i]))
                d = float(dist[m][i, j])
                row[f"{m}_distance"] = d
                row[f"nearest_train_{m}"] = self.train_ids[j]
                if d < self.thresholds[m]:
                    by.append(m)
            row["flagged"] = len(by) == len(METRICS) if self.rule == "both" else bool(by)
            row["flagged_by"] = by
            rows.append(row)
        return rows


def _summary(x: np.ndarray) -> dict[str, float]:
    return {"min": float(np.min(x)), "p5": float(np.percentile(x, 5)),
            "median": float(np.median(x)), "max": float(np.max(x)), "n": int(len(x))}


def build_reference(train: Sequence[np.ndarray], heldout: Sequence[np.ndarray] | None, *,
                    train_ids: Sequence[str] | None = None,
                    heldout_ids: Sequence[str] | None = None,
                    percentile: float = 5.0, margin: float = 0.5,
                    embedding: Callable | str = "random", side: int | None = None,
                    seed: int = 0, rule: str = "both") -> MemorizationReference:
    """Training features and thresholds calibrated on held-out real scans.

    Parameters
    ----------
    train, heldout : sequences of arrays
        Real training samples and held-out real samples (same grid; 2D or 3D). Items of one
        subject may repeat (2D slices): leave-one-out calibration then leaves the whole
        record out (by ``train_ids``).
    percentile, margin : float
        Threshold = ``margin * percentile(calibration distances, percentile)``.
    embedding : "random" or callable
        ``"random"``: :class:`RandomConvEmbedding` with ``seed``; a callable maps arrays to
        ``(N, D)`` features (e.g. :func:`medgen.synth.features.model_embedding`).
    rule : {"both", "either"}
        Flag when both metrics (default) or either metric is below its threshold.
    side : int, optional
        Downsampling grid for NCC (default 16 in 3D, 32 in 2D: coarse enough that a blurry
        copy of a training scan still correlates with it).

    Raises
    ------
    ValueError
        Fewer than 2 training samples, or no calibration possible.
    """
    if len(train) < 2:
        raise ValueError("the memorization check needs at least 2 training samples")
    if not 0 < percentile < 100 or not 0 < margin <= 1:
        raise ValueError("memorization check: 0 < percentile < 100 and 0 < margin <= 1")
    if rule not in ("both", "either"):
        raise ValueError("memorization check: rule must be 'both' or 'either'")
    train_ids = list(train_ids) if train_ids is not None else [f"train-{i}" for i in range(len(train))]
    dims = np.asarray(train[0]).ndim
    embed = RandomConvEmbedding(dims, seed=seed) if embedding == "random" else embedding
    name = getattr(embed, "name", "custom")
    side = side or (16 if dims == 3 else 32)
    ref = MemorizationReference(train_ids, {}, {}, {}, embed, side, name, rule=rule)
    ref.train_feats = ref.features(train)
    if heldout is not None and len(heldout):
        dist = ref.distances(ref.features(heldout))
        if heldout_ids is not None:  # a held-out scan never counts a training copy of itself
            same = np.array([[h == t for t in train_ids] for h in heldout_ids])
            for m in METRICS:
                dist[m] = np.where(same, np.inf, dist[m])
        source = "heldout"
    else:
        dist = {"ncc": ncc_distance_matrix(ref.train_feats["ncc"], ref.train_feats["ncc"]),
                "embedding": cosine_distance_matrix(ref.train_feats["embedding"],
                                                    ref.train_feats["embedding"])}
        same = np.array([[a == b for b in train_ids] for a in train_ids])
        for m in METRICS:
            dist[m] = np.where(same, np.inf, dist[m])
        source = "train-leave-one-out"
    cal: dict[str, Any] = {"source": source, "percentile": percentile, "margin": margin,
                           "rule": rule, "embedding_name": name, "ncc_grid": side,
                           "n_train": len(train)}
    for m in METRICS:
        nn = dist[m].min(1)
        nn = nn[np.isfinite(nn)]
        if not len(nn):
            raise ValueError("memorization check: no calibration distances (every held-out id is in training)")
        ref.thresholds[m] = float(margin * np.percentile(nn, percentile))
        cal[m] = _summary(nn)
    cal["n_reference"] = len(heldout) if source == "heldout" else len(train)
    ref.calibration = cal
    return ref


@dataclass
class MemorizationResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    thresholds: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)

    @property
    def n_flagged(self) -> int:
        return sum(r["flagged"] for r in self.rows)

    @property
    def rate(self) -> float:
        return self.n_flagged / len(self.rows) if self.rows else 0.0

    def summary(self) -> dict[str, Any]:
        d = {m: np.asarray([r[f"{m}_distance"] for r in self.rows]) for m in METRICS}
        return {
            "n_samples": len(self.rows), "n_flagged": self.n_flagged, "rate": self.rate,
            "flagged_by": {m: int(sum(m in r["flagged_by"] for r in self.rows)) for m in METRICS},
            "thresholds": self.thresholds, "calibration": self.calibration,
            "synthetic": {m: _summary(d[m]) for m in METRICS} if self.rows else {},
            "rule": f"flagged when the nearest-training distance < margin * percentile(calibration "
                    f"nearest-training distances) for {self.calibration.get('rule', 'both')} "
                    "metric(s) (ncc, embedding)",
        }


def check_memorization(synthetic: Sequence[np.ndarray], train: Sequence[np.ndarray],
                       heldout: Sequence[np.ndarray] | None = None, **kwargs) -> MemorizationResult:
    """One-shot memorization check of ``synthetic`` against ``train`` calibrated on ``heldout``.

    Keyword arguments go to :func:`build_reference`. Returns per-sample rows (distances, nearest
    training ids, flags), the thresholds and the calibration summary.
    """
    ref = build_reference(train, heldout, **kwargs)
    return MemorizationResult(ref.check(list(synthetic)), ref.thresholds, ref.calibration)
