"""A tiny training set: generated brain phantoms (NIfTI) in a manifest with train/val splits."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def phantom_manifest(tmp_path_factory):
    import numpy as np

    from medgen.data import brain_phantom
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest

    root = tmp_path_factory.mktemp("phantoms")
    for i in range(4):
        arr = brain_phantom((24, 28, 20), seed=i) * 1000
        write_nifti(Volume(arr.astype(np.float32), Volume.make_affine([1, 1, 1.2]), {}),
                    root / f"sub-{i:02d}_T1w.nii.gz")
    key = Key(b"k" * 32, "test")
    m = split_manifest(build_manifest(root, key).manifest, {"train": 0.5, "val": 0.5}, seed=0)
    path = root / "m.jsonl"
    m.write(path)
    return path


def _tiny_config(manifest, out, model="unet", dims=3, **over):
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    models = {
        "unet": {"name": "unet", "spatial_dims": dims, "channels": [4, 8], "num_res_units": 1},
        "vae": {"name": "vae", "spatial_dims": dims, "channels": [4, 8], "latent_channels": 2,
                "norm_num_groups": 4, "num_res_blocks": 1},
    }
    data = {
        "version": 2, "seed": 0, "deterministic": True, "output_dir": str(out),
        "checkpoint_every": 2, "model": models[model],
        "data": {"manifest": str(manifest), "patch_size": [16] * dims, "batch_size": 2},
        "optim": {"lr": 0.003, "max_steps": 4},
        "val": {"every_steps": 2, "max_volumes": 1, "images": False},
        "tracking": {"enabled": False},
    }
    sets = [f"{k}={v}" for k, v in over.items()]
    return load_config(TrainConfig, data=data, overrides=sets)


@pytest.fixture
def tiny_config():
    """``tiny_config(manifest, out, model="unet", dims=3, **{"a.b": value})`` -> TrainConfig."""
    return _tiny_config
