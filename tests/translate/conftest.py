"""Tiny translation fixtures: two phantom domains (T1-like and an inverted T2-like mapping of the
same anatomy) as BIDS-named NIfTI files in two manifests, and tiny ``task: translate`` configs."""

from __future__ import annotations

import numpy as np
import pytest

SHAPE = (24, 24, 16)


def to_b(p: np.ndarray) -> np.ndarray:
    """Domain B of a phantom in [0, 1]: inverted, non-linear contrast inside the head."""
    head = p > 0.05
    return np.where(head, 900.0 * (1.0 - p) ** 1.5 + 100.0, 0.0).astype(np.float32)


def _write_domains(root, seeds_a, seeds_b):
    from medgen.data import brain_phantom
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti

    aff = Volume.make_affine([1.0, 1.0, 1.5])
    (root / "A").mkdir()
    (root / "B").mkdir()
    for s in seeds_a:  # BIDS folders: the manifest's subject comes from sub-XX
        p = brain_phantom(SHAPE, seed=s)
        (root / "A" / f"sub-{s:02d}").mkdir()
        write_nifti(Volume((p * 1000).astype(np.float32), aff, {}),
                    root / "A" / f"sub-{s:02d}" / f"sub-{s:02d}_T1w.nii.gz")
    for s in seeds_b:
        p = brain_phantom(SHAPE, seed=s)
        (root / "B" / f"sub-{s:02d}").mkdir()
        write_nifti(Volume(to_b(p), aff, {}), root / "B" / f"sub-{s:02d}" / f"sub-{s:02d}_T2w.nii.gz")


def _manifests(root):
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest

    key = Key(b"t" * 32, "test")
    out = []
    for d in ("A", "B"):
        m = build_manifest(root / d, key).manifest
        m = split_manifest(m, {"train": 0.5, "val": 0.5}, seed=0)
        path = root / f"{d}.jsonl"
        m.write(path)
        out.append(path)
    return out


@pytest.fixture(scope="session")
def paired_data(tmp_path_factory):
    """(manifest A, manifest B): four subjects in both domains, registered (same grid)."""
    root = tmp_path_factory.mktemp("tr-paired")
    _write_domains(root, range(4), range(4))
    return _manifests(root)


@pytest.fixture(scope="session")
def unpaired_data(tmp_path_factory):
    """(manifest A, manifest B): disjoint subjects in the two domains."""
    root = tmp_path_factory.mktemp("tr-unpaired")
    _write_domains(root, range(4), range(10, 14))
    return _manifests(root)


def make_config(manifest_a, manifest_b, out, *, model="pix2pix", dims=3, paired=True, **over):
    """A tiny ``task: {name: translate}`` TrainConfig (seconds on CPU); ``over`` are ``--set`` items."""
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    patch = [16, 16, 16] if dims == 3 else [16, 16]
    data = {
        "version": 2, "seed": 0, "deterministic": True,
        "output_dir": str(out), "checkpoint_every": 2,
        "model": {"name": model, "spatial_dims": dims, "channels": [4, 8], "num_res_units": 1,
                  "intensity_b": {"mode": "range", "a_min": 0.0, "a_max": 1000.0}},
        "data": {"manifest": str(manifest_a), "patch_size": patch, "batch_size": 2},
        "intensity": {"mode": "range", "a_min": 0.0, "a_max": 1000.0},
        "optim": {"lr": 0.003, "max_steps": 4},
        "val": {"every_steps": 2, "max_volumes": 2, "images": False, "sw_batch_size": 2},
        "tracking": {"enabled": False},
        "task": {"name": "translate", "paired": paired, "target_manifest": str(manifest_b), "warmup_steps": 1,
                      "pool_size": 4, "discriminator": {"channels": 4, "num_layers_d": 1}},
        "card": {"intended_use": "tests of the translation task", "modality": "MR"},
    }
    return load_config(TrainConfig, data=data, overrides=[f"{k}={v}" for k, v in over.items()])


@pytest.fixture
def tr_config():
    """``tr_config(manifest_a, manifest_b, out, model=..., dims=..., paired=..., **over)``."""
    return make_config


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on this shared 2-core machine two threads under load are ~50x slower
    for these tiny convolutions (measured); restored afterwards."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
