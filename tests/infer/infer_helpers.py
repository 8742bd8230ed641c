"""Helpers for the batch-inference tests: tiny checkpoints built in-test, phantoms."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def make_checkpoint(dst: Path, *, config: str = "configs/tiny/unet-tiny-3d.yaml", seed: int = 0,
                    patch_size=(16, 16, 16), intensity=None, expected_spacing=None) -> Path:
    """A tiny real checkpoint (safetensors + config + card) with seeded random weights."""
    import torch

    from medgen.models import ModelCard, build_model, load_model_config, save_checkpoint

    root = Path(__file__).resolve().parents[2]
    cfg = load_model_config(root / config)
    torch.manual_seed(seed)
    model = build_model(cfg)
    card = ModelCard(model_name=cfg.name, task="denoise", intended_use="test denoiser",
                     modality="any", intensity=intensity or {"mode": "percentile", "lower": 1.0,
                                                             "upper": 99.0},
                     patch_size=list(patch_size) if patch_size else None,
                     expected_spacing_mm=expected_spacing)
    return save_checkpoint(dst, model, cfg, card=card)


def phantom(shape=(24, 20, 12), seed: int = 0) -> np.ndarray:
    from medgen.data import brain_phantom

    rng = np.random.default_rng(seed)
    img = brain_phantom(shape, seed=seed) * 1000.0
    return (img + rng.normal(0, 20, shape)).astype(np.float32)


def write_phantom(path: Path, shape=(24, 20, 12), seed: int = 0, spacing=(1.0, 1.1, 1.5)) -> Path:
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti

    d = np.diag([0.0, 1.0, 0.0])  # an oblique-free but non-identity direction (LSA-like)
    direction = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]) if seed % 2 else np.eye(3)
    del d
    aff = Volume.make_affine(spacing, direction, [-10.0 + seed, 5.0, 20.0])
    write_nifti(Volume(phantom(shape, seed), aff, {"modality": "MR"}), path)
    return path
