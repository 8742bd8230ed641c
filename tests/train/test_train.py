"""Tiny trainings in seconds: every model, determinism, exact resume, self-supervised mode."""

from __future__ import annotations

import pytest

from medgen.errors import ConfigError
from medgen.train.trainer import Trainer, train


@pytest.mark.parametrize("model,dims", [("unet", 3), ("vae", 3), ("unet", 2), ("vae", 2)])
def test_tiny_models_train(phantom_manifest, tmp_path, tiny_config, model, dims):
    cfg = tiny_config(phantom_manifest, tmp_path, model, dims, **{"optim.max_steps": 3})
    res = train(cfg)
    assert res.step == 3 and (res.last / "model.safetensors").exists()
    assert res.best is not None and "val/psnr" in res.metrics
    files = {p.name for p in res.last.iterdir()}
    assert {"model.safetensors", "config.json", "card.json"} <= files
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".ckpt") for p in res.last.iterdir())


def test_deterministic_same_weights_hash(phantom_manifest, tmp_path, tiny_config):
    a = train(tiny_config(phantom_manifest, tmp_path / "a", "vae"))
    b = train(tiny_config(phantom_manifest, tmp_path / "b", "vae"))
    c = train(tiny_config(phantom_manifest, tmp_path / "c", "vae", seed=1))
    assert a.weights_sha256 == b.weights_sha256
    assert a.weights_sha256 != c.weights_sha256


def test_resume_equals_uninterrupted(phantom_manifest, tmp_path, tiny_config):
    full = train(tiny_config(phantom_manifest, tmp_path / "full", "unet", **{"optim.max_steps": 6}))
    cfg = tiny_config(phantom_manifest, tmp_path / "cut", "unet", **{"optim.max_steps": 6})
    first = Trainer(cfg).fit(stop_after=3)
    assert first.stopped_early and first.step == 3
    resumed = Trainer(cfg, resume=True).fit()
    assert resumed.step == 6
    assert resumed.weights_sha256 == full.weights_sha256


def test_resume_refuses_changed_config(phantom_manifest, tmp_path, tiny_config):
    """Any change but optim.max_steps is refused, naming the key; max_steps may grow (extend the
    run) but not fall below the checkpoint's step."""
    cfg = tiny_config(phantom_manifest, tmp_path, "unet")
    Trainer(cfg, run_name="r").fit(stop_after=2)
    other = tiny_config(phantom_manifest, tmp_path, "unet", **{"optim.lr": 0.01})
    with pytest.raises(ConfigError, match="'optim.lr' differs from the checkpoint's config"):
        Trainer(other, run_name="r", resume=True).fit()
    fewer = tiny_config(phantom_manifest, tmp_path, "unet", **{"optim.max_steps": 1})
    with pytest.raises(ConfigError, match="below the checkpoint's step 2"):
        Trainer(fewer, run_name="r", resume=True).fit()
    longer = tiny_config(phantom_manifest, tmp_path, "unet", **{"optim.max_steps": 6})
    res = Trainer(longer, run_name="r", resume=True).fit()
    assert res.step == 6


def test_self_supervised_blindspot(phantom_manifest, tmp_path, tiny_config):
    cfg = tiny_config(phantom_manifest, tmp_path, "unet", **{"task.mode": "self-supervised",
                                                             "optim.max_steps": 4})
    assert cfg.task.blindspot.enabled and cfg.task.degradation is None  # no synthetic noise
    res = train(cfg)
    assert res.step == 4
    import json

    card = json.loads((res.last / "card.json").read_text())
    assert card["lineage"]["mode"] == "self-supervised"
    assert card["training_manifest_sha256"] and card["intensity"]["mode"] == "percentile"


def test_config_cross_checks(phantom_manifest, tmp_path, tiny_config):
    with pytest.raises(ConfigError, match="patch_size"):
        tiny_config(phantom_manifest, tmp_path, "unet", 3, **{"data.patch_size": "[16, 16]"})
    with pytest.raises(ConfigError, match="did you mean 'max_steps'"):
        tiny_config(phantom_manifest, tmp_path, "unet", 3, **{"optim.max_step": 3})


@pytest.mark.parametrize("cache", ["memory", "disk"])
def test_volume_cache_holds_the_volumes(tmp_path, tiny_config, cache):
    """The cached datasets read each file once: after the files are gone, batches still come.
    (A loader that is not a MONAI Transform makes CacheDataset cache nothing - a real regression.)"""
    import numpy as np

    from medgen.data import brain_phantom
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.train.data import volume_dataset

    root = tmp_path / "vols"
    root.mkdir()
    for i in range(2):
        write_nifti(Volume(brain_phantom((20, 20, 16), seed=i).astype(np.float32), np.eye(4), {}),
                    root / f"sub-{i:02d}_T1w.nii.gz")
    m = build_manifest(root, Key(b"k" * 32, "test")).manifest
    for r in m.records:
        r.split = "train"
    m.write(tmp_path / "m.jsonl")
    cfg = tiny_config(tmp_path / "m.jsonl", tmp_path / "out", **{"data.cache": cache})
    tr = Trainer(cfg)
    ds = volume_dataset(cfg, tr.manifest, tr.train_records)
    first = tr.task.sampler(ds).batch(0)
    for p in root.glob("*.nii.gz"):
        p.unlink()
    again = tr.task.sampler(ds).batch(0)
    assert again["clean"].numpy().tobytes() == first["clean"].numpy().tobytes()
    assert again["noisy"].numpy().tobytes() == first["noisy"].numpy().tobytes()
    assert ds[0]["image"].shape == (1, 20, 20, 16)


def test_time_budget_anneals_and_spans_resume(phantom_manifest, tmp_path, tiny_config):
    """With max_steps out of reach, a time budget ends the run with the lr at its cosine floor
    (not at the peak), and a resume continues the same budget instead of starting a new one."""
    cfg = tiny_config(phantom_manifest, tmp_path, **{"optim.max_steps": 10**6, "optim.time_budget_s": 2,
                                                    "optim.min_lr_ratio": 0.05, "val.every_steps": 10**6,
                                                    "checkpoint_every": 10**6})
    tr = Trainer(cfg)
    res = tr.fit()
    assert res.stopped_early and res.step > 5
    lr = tr.task.schedulers["model"].get_last_lr()[0]
    assert lr <= 0.06 * cfg.optim.lr, lr
    assert tr.elapsed() >= 2
    again = Trainer(cfg, resume=True)
    res2 = again.fit()  # the budget is spent: one step, then stop
    assert res2.step == res.step + 1


def test_foreground_oversampling_centres_patches_on_tissue(phantom_manifest, tmp_path, tiny_config):
    """foreground_fraction=1: every patch centre lies on foreground; 0: uniform, some air."""
    from medgen.train.data import volume_dataset

    means = {}
    for frac in (0.0, 1.0):
        cfg = tiny_config(phantom_manifest, tmp_path / str(frac), **{"data.foreground_fraction": frac,
                                                                  "data.patch_size": [4, 4, 4],
                                                                  "data.batch_size": 16})
        tr = Trainer(cfg)
        s = tr.task.sampler(volume_dataset(cfg, tr.manifest, tr.train_records))
        clean = [s.batch(i)["clean"] for i in range(8)]
        centres = [c[:, 0, 2, 2, 2] for c in clean]
        means[frac] = float(sum((c > 0.1 * c.max()).float().mean() for c in centres) / len(centres))
    assert means[1.0] == 1.0
    assert means[0.0] < 1.0
