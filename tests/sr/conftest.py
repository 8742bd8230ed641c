"""Tiny SR fixtures: brain phantoms (NIfTI) in a manifest, tiny SR training configs."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def sr_manifest(tmp_path_factory):
    """Four 24x28x24 brain phantoms at 1 mm in a manifest split train/val."""
    import numpy as np

    from medgen.data import brain_phantom
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest

    root = tmp_path_factory.mktemp("sr-phantoms")
    for i in range(4):
        arr = brain_phantom((24, 28, 24), seed=10 + i) * 1000
        write_nifti(Volume(arr.astype(np.float32), Volume.make_affine([1, 1, 1]), {}),
                    root / f"sub-{i:02d}_T1w.nii.gz")
    m = split_manifest(build_manifest(root, Key(b"s" * 32, "test")).manifest,
                       {"train": 0.5, "val": 0.5}, seed=0)
    path = root / "m.jsonl"
    m.write(path)
    return path


def make_sr_config(manifest, out, *, dims: int = 3, factors=(1, 1, 2), **over):
    """A tiny ``task: {name: sr}`` TrainConfig (seconds on CPU); ``over`` are ``--set`` items."""
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    factors = [int(f) for f in factors]
    if dims == 3:
        model_f, patch, extra = factors, [16, 16, 16], {}
    else:  # 2D model on planes (i, k): slices across j
        model_f, patch, extra = [factors[0], factors[2]], [16, 16], {"slice_axis": 1}
    data = {
        "version": 2, "seed": 0, "deterministic": True, "output_dir": str(out),
        "checkpoint_every": 2,
        "model": {"name": "rrdb_sr", "spatial_dims": dims, "scale_factors": model_f,
                  "features": 8, "growth": 4, "num_blocks": 1, "dense_blocks": 1,
                  "dense_layers": 2, **extra},
        "data": {"manifest": str(manifest), "patch_size": patch, "batch_size": 2},
        "optim": {"lr": 0.002, "max_steps": 4},
        "val": {"every_steps": 2, "max_volumes": 1, "images": False, "sw_batch_size": 2},
        "tracking": {"enabled": False},
        "task": {"name": "sr", "factors": factors, "warmup_steps": 2, "adv_weight": 0.01,
                 "context": 1, "discriminator": {"channels": 4, "num_layers_d": 1}},
        "card": {"intended_use": "tests of the super-resolution task", "modality": "MR"},
    }
    return load_config(TrainConfig, data=data, overrides=[f"{k}={v}" for k, v in over.items()])


@pytest.fixture
def sr_config():
    """``sr_config(manifest, out, dims=3, factors=(1, 1, 2), **{"a.b": value})`` -> TrainConfig."""
    return make_sr_config
