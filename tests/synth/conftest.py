"""Tiny synthesis fixtures: two classes of brain phantoms with a class-dependent regional intensity, a
manifest with train / val / test splits and class labels, and tiny training configs."""

from __future__ import annotations

import json

import numpy as np
import pytest

SHAPE = (20, 22, 18)


def class_phantom(cls: str, seed: int) -> np.ndarray:
    """A brain phantom whose class is a bright region in the left or the right half (along i).

    A regional, not a global, intensity difference: MONAI's GroupNorm autoencoders normalise
    global scale and offset away, so "the whole volume is brighter" is nearly invisible to them.
    """
    from medgen.data import brain_phantom

    arr = brain_phantom(SHAPE, seed=seed)
    # subjects differ in position too (phantoms alone differ little): shift up to 2 voxels
    rng = np.random.default_rng(seed + 7)
    arr = np.roll(arr, tuple(int(v) for v in rng.integers(-2, 3, 3)), axis=(0, 1, 2))
    half = SHAPE[0] // 2
    sl = slice(2, half) if cls == "left" else slice(half, SHAPE[0] - 2)
    region = np.zeros(SHAPE, bool)
    region[sl, 4:-4, 3:-3] = True
    arr = np.where(region & (arr > 0.3), np.clip(arr + 0.35, 0, 1), arr * 0.6)
    return arr.astype(np.float32)


def _write_manifest(root, n_per_class: int = 5, label_maps: bool = False):
    """``2 * n_per_class`` phantoms: the first 6 train, the others val / test (held out)."""
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest

    names = {}
    for i in range(2 * n_per_class):
        cls = "left" if i % 2 else "right"
        arr = 1000.0 * class_phantom(cls, 100 + i)
        aff = Volume.make_affine([1.5, 1.5, 1.8])
        name = f"sub-{i:02d}_T1w.nii.gz"
        write_nifti(Volume(arr.astype(np.float32), aff, {"modality": "MR"}), root / name)
        labels = {"side": cls, "age": 20 + 5 * i}
        if label_maps:
            lab = (arr > 0.3 * arr.max()).astype(np.int16) + (arr > 0.7 * arr.max())
            (root / "seg").mkdir(exist_ok=True)
            write_nifti(Volume(lab, aff, {}), root / "seg" / f"sub-{i:02d}_seg.nii.gz")
            labels["label_map"] = f"seg/sub-{i:02d}_seg.nii.gz"
        split = "train" if i < 6 else ("val" if i % 2 else "test")
        names[name] = (labels, split)
    m = build_manifest(root, Key(b"s" * 32, "test")).manifest
    m.records = [r for r in m.records if not r.files[0].path.startswith("seg/")]
    for r in m.records:
        labels, split = names[r.files[0].path]
        r.labels = labels
        r.split = split
    path = root / "m.jsonl"
    m.write(path)
    return path


@pytest.fixture(scope="session")
def class_manifest(tmp_path_factory):
    return _write_manifest(tmp_path_factory.mktemp("synth-phantoms"))


@pytest.fixture(scope="session")
def label_manifest(tmp_path_factory):
    return _write_manifest(tmp_path_factory.mktemp("synth-labels"), n_per_class=3, label_maps=True)


MODELS = {
    "unet": {"name": "unet", "channels": [4, 8]},  # not a generator: refused by task synth
    "vae-gen": {"name": "vae-gen", "channels": [8, 16], "latent_channels": 2,
                "norm_num_groups": 4},
    "ldm": {"name": "ldm", "ae_channels": [8, 16], "latent_channels": 2, "ae_norm_num_groups": 4,
            "unet_channels": [16, 32], "unet_norm_num_groups": 8, "num_head_channels": 8},
}


def tiny_synth_config(manifest, out, model="vae-gen", dims=3, synth=None, **over):
    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    size = [16] * dims
    data = {
        "version": 2, "seed": 0, "deterministic": True, "output_dir": str(out),
        "checkpoint_every": 1000, "model": {**MODELS[model], "spatial_dims": dims},
        "data": {"manifest": str(manifest), "patch_size": size, "batch_size": 4},
        "intensity": {"mode": "range", "a_min": 0, "a_max": 1000, "clip": True},
        "optim": {"lr": 0.005, "max_steps": 6},
        "val": {"every_steps": 1000, "max_volumes": 2, "images": False},
        "tracking": {"enabled": False},
        "card": {"intended_use": "tiny synthesis test", "modality": "MR"},
        "task": {"name": "synth", **(synth or {})},
    }
    if model == "ldm":
        data["task"] = {"autoencoder_steps": 3,
                        "diffusion": {"num_train_timesteps": 100, "inference_steps": 5},
                        **data["task"]}
    sets = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in over.items()]
    return load_config(TrainConfig, data=data, overrides=sets)


@pytest.fixture
def synth_config():
    return tiny_synth_config


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread: on a shared 2-core machine, two OpenMP threads per process are
    several times slower than one (the tests' timing budget assumes one)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def trained_vae(class_manifest, tmp_path_factory):
    """A tiny conditional vae-gen (condition ``side``) trained for 60 steps (~10 s)."""
    from medgen.train.trainer import train

    out = tmp_path_factory.mktemp("vae-run")
    cfg = tiny_synth_config(class_manifest, out, "vae-gen",
                            synth={"conditions": [{"name": "side"}]},
                            **{"optim.max_steps": 60, "val.every_steps": 60})
    return train(cfg)


@pytest.fixture(scope="session")
def trained_ldm(class_manifest, tmp_path_factory):
    """A tiny unconditional ldm: 3 autoencoder steps + 3 UNet steps (an untrained sampler)."""
    from medgen.train.trainer import train

    out = tmp_path_factory.mktemp("ldm-run")
    return train(tiny_synth_config(class_manifest, out, "ldm", **{"val.every_steps": 6}))
