"""Shared preparation of volumes for synthesis: resize to the generated size, one-hot label maps,
conditioning vectors from manifest labels, and real reference sets for the memorization check and the report.

Everything here works on normalised intensities (the training-time ``intensity`` mapping), so
generated and real volumes are compared on the same scale.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

log = logging.getLogger("medgen.synth")


def resize(t, size: Sequence[int], *, nearest: bool = False):
    """Resample a ``(C, *spatial)`` tensor to ``size`` (trilinear/bilinear, antialiased when
    shrinking in 2D; nearest for label maps)."""
    import torch
    import torch.nn.functional as F

    size = [int(s) for s in size]
    if list(t.shape[1:]) == size:
        return t
    x = t[None].float()
    if nearest:
        return F.interpolate(x, size=size, mode="nearest-exact")[0].to(t.dtype)
    if len(size) == 2:
        shrink = any(s < o for s, o in zip(size, t.shape[1:]))
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False,
                             antialias=shrink)[0]
    # 3D: box-filter first when shrinking by 2x or more (trilinear alone would alias)
    factors = [max(1, int(o // s)) for o, s in zip(t.shape[1:], size)]
    if any(f > 1 for f in factors):
        x = F.avg_pool3d(x, kernel_size=factors, stride=factors, ceil_mode=True)
    return F.interpolate(x, size=size, mode="trilinear", align_corners=False)[0].to(torch.float32)


def one_hot(label, n: int):
    """``(1, *spatial)`` integer label map -> ``(n, *spatial)`` float one-hot (values >= n clip)."""
    import torch

    lab = label[0].long().clamp(0, n - 1)
    return torch.nn.functional.one_hot(lab, n).movedim(-1, 0).float()


def crop_or_resize(img, size: Sequence[int], fit: str, rng: np.random.Generator | None = None):
    """``fit: resize`` -> resample; ``fit: crop`` -> a random (or central) crop, edge-padded."""
    import torch

    if fit == "resize":
        return resize(img, size)
    spatial = list(img.shape[1:])
    need = [max(p, s) for p, s in zip(size, spatial)]
    if need != spatial:
        pad = []
        for p, s in reversed(list(zip(need, spatial))):
            pad += [0, p - s]
        img = torch.nn.functional.pad(img[None], pad, mode="replicate")[0]
        spatial = need
    if rng is None:
        start = [(s - p) // 2 for s, p in zip(spatial, size)]
    else:
        start = [int(rng.integers(0, s - p + 1)) for s, p in zip(spatial, size)]
    sl = (slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, size))
    return img[sl]


def slice_indices(depth: int, slice_range: Sequence[float]) -> list[int]:
    """Axial slice indices between the fractions ``slice_range`` of ``depth`` (at least one)."""
    lo = int(np.floor(slice_range[0] * depth))
    hi = max(lo + 1, int(np.ceil(slice_range[1] * depth)))
    return list(range(lo, min(hi, depth)))


def prepare(item: dict, size: Sequence[int], dims: int, *, fit: str = "resize",
            label_channels: int = 0, slice_index: int | None = None,
            rng: np.random.Generator | None = None):
    """One training/reference sample ``(C, *size)``: image (+ one-hot label channels).

    ``item`` is a dataset entry ``{"image": (1, I, J, K), "label": (1, I, J, K) optional}``; 2D
    models take axial slice ``slice_index``.
    """
    import torch

    img = torch.as_tensor(item["image"]).float()
    img = img.as_tensor() if hasattr(img, "as_tensor") else img
    chans = [img]
    if label_channels:
        if "label" not in item:
            raise ValueError("no label map")
        lab = torch.as_tensor(item["label"])
        lab = lab.as_tensor() if hasattr(lab, "as_tensor") else lab
        chans.append(one_hot(lab, label_channels))
    x = torch.cat(chans, 0)
    if dims == 2:
        k = x.shape[-1] // 2 if slice_index is None else slice_index
        x = x[..., k]
    if fit == "crop":
        return crop_or_resize(x, size, "crop", rng)
    out = resize(x[:1], size)
    if label_channels:  # resample the label map as labels (nearest), then one-hot again
        lab = x[1:].argmax(0, keepdim=True)
        lab = resize(lab, size, nearest=True)
        out = torch.cat([out, one_hot(lab, label_channels)], 0)
    return out


def fill_conditions(conditions: list, labels: list[dict[str, Any]]) -> list:
    """Complete class lists and scalar ranges from the training records' labels.

    Raises
    ------
    ValueError
        A condition no training record carries.
    """
    from medgen.models.synth.config import _class_str

    out = []
    for c in conditions:
        vals = [lab[c.label_key] for lab in labels if lab.get(c.label_key) is not None]
        if not vals:
            raise ValueError(f"condition '{c.name}': no training record has labels['{c.label_key}']")
        upd: dict[str, Any] = {}
        if c.kind == "class" and not c.classes:
            upd["classes"] = sorted({_class_str(v) for v in vals})
        if c.kind == "scalar" and c.range is None:
            nums = [float(v) for v in vals]
            lo, hi = min(nums), max(nums)
            upd["range"] = [lo, hi if hi > lo else lo + 1.0]
        out.append(c.model_copy(update=upd))
    return out


def condition_vector(conditions: list, labels: dict[str, Any]) -> list[float] | None:
    """The conditioning vector of a record's labels, or None when a label is missing/invalid."""
    from medgen.models.synth.config import encode_conditions

    if not conditions:
        return []
    try:
        vals = {c.name: labels[c.label_key] for c in conditions}
        return encode_conditions(conditions, vals)
    except (KeyError, ValueError):
        return None


def output_spacing(shapes: list[Sequence[int]], spacings: list[Sequence[float]],
                   size: Sequence[int], dims: int, fit: str) -> list[float]:
    """Voxel spacing (mm, 3 entries) of generated volumes: the median field of view of the
    training records divided by the generated size (``fit: resize``), else their median spacing."""
    sp = np.median(np.asarray(spacings, dtype=float), axis=0) if spacings else np.ones(3)
    if fit != "resize" or not shapes:
        return [round(float(s), 6) for s in sp]
    fov = np.median(np.asarray(shapes, dtype=float) * np.asarray(spacings, dtype=float), axis=0)
    out = [float(fov[i] / size[i]) for i in range(dims)]
    if dims == 2:
        out.append(float(sp[2]))
    return [round(s, 6) for s in out]


def load_reference(manifest, records, intensity, size: Sequence[int], dims: int, *,
                   fit: str = "resize", slice_range: Sequence[float] = (0.3, 0.7),
                   max_slices: int = 8, max_crops: int = 27, allow_uneven: bool = False
                   ) -> tuple[list[np.ndarray], list[str], list[dict]]:
    """Real volumes of ``records`` prepared like training samples (image channel only).

    Returns ``(arrays, record ids, rejects)``; 2D models give up to ``max_slices`` evenly spaced
    slices per volume (ids repeat). A record that cannot be read is a reject with a one-line
    reason; the others go on.
    """
    import torch

    from medgen.errors import MedgenError

    tf = intensity.transform(["image"])
    arrays, ids, rejects = [], [], []
    for r in records:
        try:
            vol = manifest.read(r, allow_uneven=allow_uneven)
            item = tf({"image": vol.to_metatensor().float()})
        except (MedgenError, ValueError, RuntimeError) as exc:
            rejects.append({"record": r.id, "reason": str(exc)[:200]})
            log.warning("reference record %s skipped: %s", r.id, type(exc).__name__)
            continue
        if dims == 2:
            ks = slice_indices(int(item["image"].shape[-1]), slice_range)
            if len(ks) > max_slices:
                ks = [ks[int(i)] for i in np.linspace(0, len(ks) - 1, max_slices).round()]
        else:
            ks = [None]
        for k in ks:
            if fit == "resize":
                crops = [prepare(item, size, dims, slice_index=k)[0]]
            else:  # crop generators: compare with overlapping crops (stride: half a crop)
                img = torch.as_tensor(item["image"]).float()
                img = img.as_tensor() if hasattr(img, "as_tensor") else img
                crops = grid_crops(img[0] if dims == 3 else img[0, ..., k], size, max_crops)
            for c in crops:
                arrays.append(torch.as_tensor(c).numpy().astype(np.float32))
                ids.append(r.id)
    return arrays, ids, rejects


def grid_crops(x, size: Sequence[int], max_crops: int = 27) -> list:
    """Crops of ``size`` from ``x`` (spatial only) at a stride of half a crop (edge-padded)."""
    import itertools

    import torch

    x = crop_or_resize(x[None], [max(a, b) for a, b in zip(size, x.shape)], "crop")[0]
    starts = []
    for s, p in zip(x.shape, size):
        st = list(range(0, s - p + 1, max(1, p // 2)))
        if st[-1] != s - p:
            st.append(s - p)
        starts.append(st)
    combos = list(itertools.product(*starts))
    if len(combos) > max_crops:
        combos = [combos[int(i)] for i in np.linspace(0, len(combos) - 1, max_crops).round()]
    return [torch.as_tensor(x[tuple(slice(a, a + p) for a, p in zip(c, size))]) for c in combos]
