"""Super-resolution on the batch-inference core: output geometry and the upscale predictor.

Geometry convention (the only one; the thick-slice degradation and the generator's global skip use
the same): upsampling axis ``a`` by an integer ``f`` keeps the *box* of the volume - from half a
voxel before the first centre to half a voxel after the last - and divides it into ``f`` times as
many voxels::

    new_spacing_a = old_spacing_a / f
    new_origin    = old_origin - (f - 1) / (2 f) * old_step_a      (old_step_a: affine column a)
    output voxel m  <->  input index (m - (f - 1) / 2) / f

so the centres of the ``f`` output voxels of input voxel ``n`` straddle its centre symmetrically
(``n f + (f - 1)/2`` is input ``n``'s centre) and the world extent, direction cosines and slab
position are unchanged - for axial, sagittal, coronal and oblique inputs alike (tested against
SimpleITK's physical points).

:class:`UpscalePredictor` is the per-item strategy of ``medgen upscale``: the core
(:class:`medgen.infer.predictor.VolumePredictor`) does normalisation, sliding-window inference with
per-axis output scaling, denormalisation and writing; this class adds the factor checks, the axis
permutation (a model trained on 1x1x4 applied to a sagittal 4x1x1 stack, or a 2D model slicing
across another axis) and the output grid of :func:`upsampled_geometry`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from medgen.errors import ConfigError
from medgen.infer.predictor import UnsuitableInputError, VolumePredictor
from medgen.io.volume import Volume

log = logging.getLogger("medgen.infer")

__all__ = ["UpscalePredictor", "parse_factor", "permute_volume", "upsampled_geometry"]


def upsampled_geometry(affine: np.ndarray, shape: Sequence[int], factors: Sequence[int]
                       ) -> tuple[tuple[int, ...], np.ndarray]:
    """Grid of a volume upsampled by integer ``factors`` per axis, covering the same world box.

    Parameters
    ----------
    affine : (4, 4) array
        Input voxel -> LPS (mm) affine (:class:`medgen.io.Volume` convention).
    shape : sequence of int
        Input ``(I, J, K)``.
    factors : sequence of int
        One integer >= 1 per axis, e.g. ``(1, 1, 4)``.

    Returns
    -------
    shape : tuple of int
        ``shape * factors``.
    affine : (4, 4) ndarray
        Columns divided by the factors; origin moved by ``-(f - 1)/(2 f)`` of each old step.
    """
    a = np.asarray(affine, dtype=np.float64)
    f = [int(v) for v in factors]
    if len(f) != len(shape) or any(v < 1 or v != float(fv) for v, fv in zip(f, factors)):
        raise ValueError(f"factors {list(factors)} must be {len(shape)} integers >= 1")
    out = a.copy()
    for ax, v in enumerate(f):
        out[:3, ax] = a[:3, ax] / v
        out[:3, 3] -= (v - 1) / (2 * v) * a[:3, ax]
    return tuple(int(n) * v for n, v in zip(shape, f)), out


def parse_factor(text: str | int | Sequence[int] | None) -> tuple[int, ...] | None:
    """``"4"`` -> ``(4,)``; ``"1x1x4"`` / ``"1,1,4"`` / ``[1, 1, 4]`` -> ``(1, 1, 4)``."""
    if text is None or text == "":
        return None
    if isinstance(text, int):
        vals: tuple[int, ...] = (text,)
    elif isinstance(text, str):
        parts = [p for p in text.lower().replace(",", "x").split("x") if p.strip()]
        try:
            vals = tuple(int(p) for p in parts)
        except ValueError:
            raise ConfigError("--factor", f"'{text}': an integer (4) or one per axis (1x1x4)") from None
    else:
        vals = tuple(int(v) for v in text)
    if len(vals) not in (1, 3) or any(v < 1 for v in vals):
        raise ConfigError("--factor", f"'{text}': an integer (4) or three per axis (1x1x4), >= 1")
    return vals


def permute_volume(vol: Volume, order: Sequence[int]) -> Volume:
    """Volume whose axis ``m`` is ``vol``'s axis ``order[m]`` (array and affine columns together,
    so every voxel keeps its world position)."""
    order = [int(o) for o in order]
    if order == [0, 1, 2]:
        return vol
    arr = vol.array.transpose(order + ([3] if vol.array.ndim == 4 else []))
    aff = vol.affine.copy()
    aff[:3, :3] = vol.affine[:3, order]
    return Volume(np.ascontiguousarray(arr), aff, dict(vol.meta))


class UpscalePredictor(VolumePredictor):
    """``medgen upscale``'s per-item step (options: ``factor`` - see :func:`parse_factor`).

    * no ``factor``: the model's own factors on its own axes;
    * three factors (per input axis ``i, j, k``): the model's factors up to a permutation of the
      axes; the volume is transposed so that the model's upsampled axis lines up, and back;
    * one factor ``N``: ``N`` along the input's coarsest axis (largest spacing); the model must
      upsample one axis by ``N``.
    """

    task = "upscale"
    verb = "upscaled"

    def __init__(self, model, card, settings=None, *, weights_sha256: str | None = None,
                 options: Mapping[str, Any] | None = None):
        super().__init__(model, card, settings, weights_sha256=weights_sha256, options=options)
        cfg = self.config
        per = getattr(model, "scale_factors", None) or getattr(model, "scale_factor", 1)
        if isinstance(per, int):
            per = (per,) * self.spatial_dims
        if cfg is not None and hasattr(cfg, "volume_factors"):
            self.model_factors = tuple(int(v) for v in cfg.volume_factors())
            self.slice_axis = int(cfg.slice_axis) if self.spatial_dims == 2 else 2
        else:  # a plain MedgenModule with per-axis factors
            self.model_factors = tuple(int(v) for v in per) + ((1,) if self.spatial_dims == 2 else ())
            self.slice_axis = 2
        if all(f == 1 for f in self.model_factors):
            raise ConfigError("--model", "this model does not upsample (scale factor 1): use "
                              "medgen denoise")
        self.requested = parse_factor(self.options.get("factor"))
        if self.requested is not None:
            self._check_requested(self.requested)
        # the core slices 2D models across its last axis: the model's slice axis goes last
        self.core_order = [a for a in range(3) if a != self.slice_axis] + [self.slice_axis]
        if self.card is not None and self.card.expected_spacing_mm and self.core_order != [0, 1, 2]:
            exp = list(self.card.expected_spacing_mm)
            self.card = self.card.model_copy(
                update={"expected_spacing_mm": [exp[a] for a in self.core_order]})

    def _check_requested(self, req: tuple[int, ...]) -> None:
        mf = self.model_factors
        if len(req) == 1:
            up = [f for f in mf if f > 1]
            if len(up) != 1 or up[0] != req[0]:
                raise ConfigError("--factor", f"{req[0]}: the model upsamples by "
                                  f"{'x'.join(map(str, mf))}; a single factor needs a model that "
                                  "upsamples one axis by exactly that factor")
        elif sorted(req) != sorted(mf):
            raise ConfigError("--factor", f"{'x'.join(map(str, req))}: the model upsamples by "
                              f"{'x'.join(map(str, mf))} (any permutation of its axes is allowed)")

    # -- axes -------------------------------------------------------------------------------
    def input_order(self, vol: Volume) -> list[int]:
        """``order[m]`` = the input axis that plays the model's volume axis ``m``."""
        mf = self.model_factors
        req = self.requested
        if req is None:
            return [0, 1, 2]
        if len(req) == 1:
            up = next(a for a in range(3) if mf[a] > 1)
            coarse = int(np.argmax(vol.spacing))
            order = [0, 1, 2]
            order[up], order[coarse] = order[coarse], order[up]
            return order
        if tuple(req) == mf:
            return [0, 1, 2]
        # a permutation that maps the requested per-input-axis factors onto the model's; prefer
        # the one that moves the fewest axes
        import itertools

        best = min((p for p in itertools.permutations(range(3))
                    if all(req[p[m]] == mf[m] for m in range(3))),
                   key=lambda p: sum(p[m] != m for m in range(3)))
        return list(best)

    def scale_factor(self) -> tuple[float, float, float]:
        """Per axis of the volume the core sees (model axes, slice axis last for 2D models)."""
        return tuple(float(self.model_factors[a]) for a in self.core_order)  # type: ignore[return-value]

    def output_geometry(self, shape, affine):
        return upsampled_geometry(affine, shape, [int(f) for f in self.scale_factor()])

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["model_factors"] = list(self.model_factors)
        return d

    def __call__(self, vol: Volume) -> Volume:
        order = self.input_order(vol)
        work_order = [order[a] for a in self.core_order]  # core axis m <- input axis
        if any(s < 1 for s in vol.shape):
            raise UnsuitableInputError(None, "empty volume")
        work = permute_volume(vol, work_order)
        out = super().__call__(work)
        inverse = list(np.argsort(work_order))
        res = permute_volume(out, inverse)
        want_shape, want_aff = upsampled_geometry(
            vol.affine, vol.shape, [self.model_factors[order.index(a)] for a in range(3)])
        if res.shape != want_shape or not np.allclose(res.affine, want_aff, atol=1e-6):
            raise UnsuitableInputError(None, "output grid does not cover the input's extent")
        return res
