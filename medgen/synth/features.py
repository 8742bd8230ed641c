"""Feature maps shared by the memorization check and the quality report.

* :func:`downsample` - area-averaged volume on a small grid (default 24 voxels a side in 3D,
  48 in 2D): the "downsampled volume" on which normalised cross-correlation is computed;
* :class:`RandomConvEmbedding` - a small **fixed random-weight** conv net (seeded, never
  trained, nothing downloaded): three conv + ReLU + average-pool stages pooled to a 4^d grid and
  L2-normalised. Random convolutional features are a generic, data-independent embedding for
  two-sample tests and nearest-neighbour searches; they are *not* a perceptual metric and say so
  in every report. The trained model's own encoder (``SynthModule.features``) is the
  alternative embedding (``embedding="autoencoder"``);
* :func:`load_extractor` - a user-supplied local feature extractor for FID (TorchScript file or
  a folder with ``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def _stack(arrays: Sequence[np.ndarray]):
    import torch

    shapes = {tuple(a.shape) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"arrays must share one shape, got {sorted(shapes)[:3]}")
    return torch.as_tensor(np.stack([np.asarray(a, dtype=np.float32) for a in arrays]))[:, None]


def common_shape(arrays: Sequence[np.ndarray], cap: int = 64) -> tuple[int, ...]:
    """The smallest shape of ``arrays`` per axis, capped at ``cap`` (what everything is resampled to)."""
    dims = {a.ndim for a in arrays}
    if len(dims) != 1:
        raise ValueError("mixed 2D and 3D arrays")
    return tuple(min(cap, min(a.shape[i] for a in arrays)) for i in range(dims.pop()))


def resample_all(arrays: Sequence[np.ndarray], shape: Sequence[int]) -> list[np.ndarray]:
    """Resample every array to ``shape`` (see :func:`medgen.synth.data.resize`)."""
    import torch

    from medgen.synth.data import resize

    out = []
    for a in arrays:
        t = torch.as_tensor(np.asarray(a, dtype=np.float32))[None]
        out.append(resize(t, shape)[0].numpy())
    return out


def downsample(arrays: Sequence[np.ndarray], side: int | None = None) -> np.ndarray:
    """``(N, M)`` flattened area-averaged arrays on a grid of at most ``side`` voxels per axis."""
    import torch.nn.functional as F

    x = _stack(arrays)
    d = x.ndim - 2
    side = side or (24 if d == 3 else 48)
    grid = [min(side, s) for s in x.shape[2:]]
    pool = F.adaptive_avg_pool3d if d == 3 else F.adaptive_avg_pool2d
    return pool(x, grid).flatten(1).numpy().astype(np.float64)


def ncc_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - NCC`` between every row of ``a`` and of ``b`` (rows: flattened volumes)."""
    def z(m):
        m = m - m.mean(1, keepdims=True)
        n = np.linalg.norm(m, axis=1, keepdims=True)
        return m / np.where(n > 1e-12, n, 1.0)

    return np.clip(1.0 - z(a) @ z(b).T, 0.0, 2.0)


def cosine_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``1 - cos`` between every row of ``a`` and of ``b``."""
    def n(m):
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)

    return np.clip(1.0 - n(a) @ n(b).T, 0.0, 2.0)


class RandomConvEmbedding:
    """Fixed random-weight conv net (seeded); ``__call__(arrays) -> (N, D)`` features.

    Parameters
    ----------
    spatial_dims : {2, 3}
    seed : int
        Weight seed (part of the embedding's name in reports: ``random-conv3d-s0``).
    size : int
        Inputs are resampled to this many voxels per axis first.
    """

    def __init__(self, spatial_dims: int, seed: int = 0, size: int | None = None):
        import torch

        self.dims = spatial_dims
        self.seed = seed
        self.size = size or (32 if spatial_dims == 3 else 64)
        conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
        pool = torch.nn.AvgPool3d if spatial_dims == 3 else torch.nn.AvgPool2d
        apool = torch.nn.AdaptiveAvgPool3d if spatial_dims == 3 else torch.nn.AdaptiveAvgPool2d
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(
                conv(1, 16, 3, padding=1), torch.nn.ReLU(), pool(2),
                conv(16, 32, 3, padding=1), torch.nn.ReLU(), pool(2),
                conv(32, 32, 3, padding=1), torch.nn.ReLU(), apool(4)).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)

    @property
    def name(self) -> str:
        return f"random-conv{self.dims}d-s{self.seed}"

    def __call__(self, arrays: Sequence[np.ndarray], batch: int = 16) -> np.ndarray:
        import torch

        arrays = resample_all(arrays, [self.size] * self.dims)
        out = []
        with torch.no_grad():
            for i in range(0, len(arrays), batch):
                x = _stack(arrays[i:i + batch])
                out.append(self.net(x).flatten(1).numpy())
        f = np.concatenate(out).astype(np.float64)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def model_embedding(model) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """Embedding by a trained synthesis model's encoder (posterior mean pooled to 2^d)."""
    import torch

    def f(arrays: Sequence[np.ndarray]) -> np.ndarray:
        dev = next(model.parameters()).device
        size = model.image_size()
        arrays = resample_all(arrays, size)
        x = _stack(arrays).to(dev)
        if model.config.in_channels > 1:  # paired models: zero label channels
            pad = torch.zeros(x.shape[0], model.config.in_channels - 1, *x.shape[2:], device=dev)
            x = torch.cat([x, pad], 1)
        return model.features(x).cpu().numpy().astype(np.float64)

    f.name = f"{model.config.name}-encoder"  # type: ignore[attr-defined]
    return f


def load_extractor(path: str | Path) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """A local feature extractor for FID: ``f(arrays) -> (N, D)``. Nothing is downloaded.

    ``path`` is either a TorchScript file (``torch.jit.load``; called on ``(B, 1, *spatial)``
    float tensors; outputs with spatial axes are average-pooled) or a folder holding a medgen
    checkpoint (``config.json`` + ``model.safetensors`` + ``card.json``) whose model has
    ``features`` (the synthesis families). Inputs are the arrays as given (normalised intensity).

    Raises
    ------
    ConfigError
        Missing or unusable extractor (one line naming it).
    """
    import torch

    from medgen.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        if not (p / "config.json").exists() or not (p / "model.safetensors").exists():
            raise ConfigError(p.name, "extractor folder needs config.json + model.safetensors")
        from medgen.models import load_checkpoint

        model, _, _ = load_checkpoint(p, "cpu")
        if not hasattr(model, "features"):
            raise ConfigError(p.name, f"model '{model.config.name}' has no feature output")
        f = model_embedding(model)
        f.name = f"checkpoint:{model.config.name}"  # type: ignore[attr-defined]
        return f
    if not p.is_file():
        raise ConfigError(p.name, "feature extractor not found")
    try:
        net = torch.jit.load(str(p), map_location="cpu").eval()
    except Exception as exc:  # noqa: BLE001 - any load failure is a bad extractor
        raise ConfigError(p.name, f"not a TorchScript file ({type(exc).__name__})") from None

    def g(arrays: Sequence[np.ndarray], batch: int = 8) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(arrays), batch):
                y = net(_stack(arrays[i:i + batch]))
                if isinstance(y, (tuple, list)):
                    y = y[0]
                if y.ndim > 2:
                    y = y.flatten(2).mean(2)
                out.append(y.float().numpy())
        return np.concatenate(out).astype(np.float64)

    g.name = f"torchscript:{p.stem}"  # type: ignore[attr-defined]
    return g
