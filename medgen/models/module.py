"""The inference contract shared by every medgen model: ``predict(model, x)``.

Every model maps a ``(B, C_in, *spatial)`` float tensor in *normalised* intensity to
``(B, C_out, *[s * f for s, f in zip(spatial, scale_factors)])``: super-resolution models declare
``scale_factors`` (one int per spatial axis, e.g. ``(1, 1, 4)``), others an int ``scale_factor``
used on every axis (:func:`scale_factors`); denoisers have ``scale_factor == 1`` and
``C_out == C_in`` so the output has the input's shape. Spatial sizes that are not multiples of
the model's ``size_divisor`` are padded (replicate) and the output cropped back, so the
sliding-window inference core can call any model on any ROI.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class MedgenModule(nn.Module):
    """Base class of medgen models: ``config``, ``size_divisor``, ``scale_factor``, ``infer``.

    ``scale_factors`` (None here) is the per-spatial-axis form; set it for anisotropic
    upsampling (it takes precedence over ``scale_factor`` in :func:`predict`).

    Subclasses implement ``infer(x)`` (deterministic, inference-time output for a padded input);
    ``forward`` stays free to return whatever training needs (e.g. the VAE's posterior).
    """

    size_divisor: int = 1
    scale_factor: int = 1
    scale_factors: tuple[int, ...] | None = None

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.size_divisor = int(config.size_divisor())

    def infer(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def pad_to_multiple(x: torch.Tensor, divisor: int, mode: str = "replicate"
                    ) -> tuple[torch.Tensor, list[int]]:
    """Pad the spatial dims of ``x`` at their high end to multiples of ``divisor``.

    Returns
    -------
    padded : torch.Tensor
    sizes : list of int
        The original spatial sizes (for :func:`crop_to`).
    """
    sizes = list(x.shape[2:])
    if divisor <= 1:
        return x, sizes
    extra = [(-s) % divisor for s in sizes]
    if not any(extra):
        return x, sizes
    pad: list[int] = []
    for e in reversed(extra):  # F.pad lists the last dim first
        pad += [0, e]
    if mode == "replicate" or any(e >= s for e, s in zip(extra, sizes, strict=True)):
        return F.pad(x, pad, mode="replicate"), sizes
    return F.pad(x, pad, mode=mode), sizes


def crop_to(y: torch.Tensor, sizes: list[int], scale: int | Sequence[int] = 1) -> torch.Tensor:
    """Crop spatial dims of ``y`` to ``sizes * scale`` (undo :func:`pad_to_multiple`); ``scale``
    is one int or one per spatial axis."""
    scales = [int(scale)] * len(sizes) if isinstance(scale, int) else [int(f) for f in scale]
    idx = (slice(None), slice(None)) + tuple(slice(0, s * f) for s, f in zip(sizes, scales, strict=True))
    return y[idx]


def scale_factors(model: nn.Module, spatial_dims: int) -> tuple[int, ...]:
    """Per-axis output/input size ratio of a model: ``model.scale_factors`` (per spatial axis,
    super-resolution) when set, else the int ``model.scale_factor`` on every axis."""
    per_axis = getattr(model, "scale_factors", None)
    if per_axis is not None:
        return tuple(int(f) for f in per_axis)
    s = getattr(model, "scale_factor", 1)
    if isinstance(s, (tuple, list)):
        return tuple(int(f) for f in s)
    return (int(s),) * spatial_dims


def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Deterministic inference output of any registered model (the sliding-window contract).

    Parameters
    ----------
    model : nn.Module
        A model from :func:`medgen.models.build_model` / :func:`load_checkpoint`. Plain modules
        without ``infer`` are called directly.
    x : torch.Tensor
        ``(B, C, *spatial)`` with ``len(spatial) == config.spatial_dims``, normalised intensity.

    Returns
    -------
    torch.Tensor
        Same batch, ``out_channels`` channels, spatial sizes times the per-axis
        :func:`scale_factors` (1 for denoisers: the input's shape). The VAE returns the decoded posterior *mean*, not a sample.
        Runs under ``torch.no_grad`` in eval mode; the model's train/eval flag is restored.
    """
    cfg = getattr(model, "config", None)
    if cfg is not None and x.ndim != 2 + cfg.spatial_dims:
        raise ValueError(f"predict: expected a (B, C + {cfg.spatial_dims} spatial dims) "
                         f"tensor, got shape {tuple(x.shape)}")
    if cfg is not None and x.shape[1] != cfg.in_channels:
        raise ValueError(f"predict: model takes {cfg.in_channels} channel(s), got {x.shape[1]}")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            xp, sizes = pad_to_multiple(x, int(getattr(model, "size_divisor", 1)))
            fn = getattr(model, "infer", None)
            y = fn(xp) if fn is not None else model(xp)
            return crop_to(y, sizes, scale_factors(model, x.ndim - 2))
    finally:
        model.train(was_training)
