"""Tiny translation trainings in seconds: pix2pix and cyclegan steps, checkpoints, determinism,
exact resume (image pool included), the cycle term falling on a toy unpaired task, pairing and
geometry checks, config cross-checks, the mode-collapse check."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.errors import ConfigError
from medgen.train.trainer import Trainer, train


def _spy_steps(trainer: Trainer) -> list[dict]:
    seen: list[dict] = []
    real = trainer.task.train_step

    def step(batch, s):
        parts = real(batch, s)
        seen.append({"step": s, **parts})
        return parts

    trainer.task.train_step = step
    return seen


def test_pix2pix_trains_and_saves(paired_data, tmp_path, tr_config):
    from medgen.models import load_checkpoint, load_train_state

    a, b = paired_data
    tr = Trainer(tr_config(a, b, tmp_path))
    seen = _spy_steps(tr)
    res = tr.fit()
    assert res.step == 4
    assert "adv_g" not in seen[0] and all("adv_g" in p and "d_loss" in p for p in seen[1:])
    card = json.loads((res.last / "card.json").read_text())
    assert card["task"] == "translate" and card["model_name"] == "pix2pix"
    assert card["lineage"]["translate_paired"] == "true"
    for k in ("val/psnr", "val/ssim", "val/mae", "val/psnr_identity", "val/mode_collapse"):
        assert k in res.metrics
    state = load_train_state(res.last)
    assert set(state["extra"]["modules"]) == {"disc_b"}
    # conditional PatchGAN: input and output channels stacked
    assert tr.task.discs["disc_b"].initial_conv.conv.in_channels == 2
    model, cfg, _ = load_checkpoint(res.last)
    assert cfg.name == "pix2pix" and cfg.intensity_b.mode == "range"


def test_training_is_deterministic(paired_data, tmp_path, tr_config):
    a, b = paired_data
    over = {"val.every_steps": 100, "optim.max_steps": 2}
    r1 = train(tr_config(a, b, tmp_path / "one", model="cyclegan", **over))
    r2 = train(tr_config(a, b, tmp_path / "two", model="cyclegan", **over))
    assert r1.weights_sha256 == r2.weights_sha256


def test_cyclegan_resume_is_exact_with_the_image_pool(unpaired_data, tmp_path, tr_config):
    a, b = unpaired_data
    over = {"val.every_steps": 100}
    kw = dict(model="cyclegan", paired=False)
    full = train(tr_config(a, b, tmp_path / "full", **kw, **over))
    cfg = tr_config(a, b, tmp_path / "cut", **kw, **over)
    first = Trainer(cfg).fit(stop_after=2)
    assert first.stopped_early
    t2 = Trainer(cfg, resume=True)
    res = t2.fit()
    assert len(t2.task.pools["a"].images) == 4  # the pool came back from the checkpoint
    assert res.weights_sha256 == full.weights_sha256


def test_cycle_term_decreases_on_a_toy_unpaired_task(unpaired_data, tmp_path, tr_config):
    a, b = unpaired_data
    cfg = tr_config(a, b, tmp_path, model="cyclegan", paired=False,
                    **{"optim.max_steps": 40, "val.every_steps": 40, "checkpoint_every": 40,
                       "task.adv_weight": 0.1, "optim.lr": 0.01})
    tr = Trainer(cfg)
    seen = _spy_steps(tr)
    res = tr.fit()
    cyc = [p["cycle"] for p in seen]
    assert np.mean(cyc[-8:]) < 0.5 * np.mean(cyc[:8]), cyc
    assert res.metrics["val/cycle_l1"] < cyc[0] / 2  # full validation volumes agree
    assert "val/psnr" not in res.metrics  # unpaired: nothing to compare against


def test_2d_cyclegan_with_spectral_norm_and_smoothed_bce(unpaired_data, tmp_path, tr_config):
    from torch.nn.utils import parametrize

    a, b = unpaired_data
    cfg = tr_config(a, b, tmp_path, model="cyclegan", dims=2, paired=False,
                    **{"task.discriminator.spectral_norm": "true",
                       "task.adv_criterion": "bce", "task.label_smoothing": 0.1,
                       "optim.max_steps": 2})
    tr = Trainer(cfg)
    res = tr.fit()
    d = tr.task.discs["disc_a"]
    assert parametrize.is_parametrized(d.initial_conv.conv, "weight")
    assert np.isfinite(res.metrics["val/cycle_l1"])


def test_pairs_must_share_geometry(tmp_path, tr_config):
    """A domain-B volume on another grid (not resampled onto A's) is refused by name."""
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from tests.translate.conftest import _manifests, _write_domains

    root = tmp_path / "data"
    root.mkdir()
    _write_domains(root, range(2), range(2))
    p = root / "B" / "sub-01" / "sub-01_T2w.nii.gz"
    from medgen.io.nifti import read_nifti

    v = read_nifti(p)
    aff = v.affine.copy()
    aff[:3, 3] += 0.5  # shifted by half a millimetre: not registered onto A's grid
    write_nifti(Volume(v.array, aff, {}), p)
    ma, mb = _manifests(root)
    with pytest.raises(ConfigError, match="affines differ"):
        train(tr_config(ma, mb, tmp_path / "run", **{"val.every_steps": 100}))


def test_pairing_by_key_needs_a_partner(paired_data, unpaired_data, tmp_path, tr_config):
    a, _ = paired_data
    _, b_other = unpaired_data  # other subjects: nobody to pair with
    with pytest.raises(ConfigError, match="partner"):
        Trainer(tr_config(a, b_other, tmp_path))


@pytest.mark.parametrize("over,msg", [
    ({"task.paired": False}, "pix2pix needs paired"),
    ({"task.label_smoothing": 0.1}, "bce only"),
    ({"task.pair_by": "nonsense"}, "pair_by"),
    ({"task.discriminator.num_layers_d": 4}, "too small"),
])
def test_config_cross_checks(paired_data, tmp_path, tr_config, over, msg):
    a, b = paired_data
    with pytest.raises(ConfigError, match=msg):
        tr_config(a, b, tmp_path, **over)


def test_translate_settings_need_task_translate(paired_data, tmp_path, tr_config):
    a, b = paired_data
    with pytest.raises(ConfigError, match="unknown key 'task.paired'"):
        tr_config(a, b, tmp_path, **{"task.name": "denoise"})


def test_mode_collapse_is_flagged(paired_data, tmp_path, tr_config):
    """A generator that outputs a constant has zero diversity: validation flags it; a trained-ish
    generator that follows its input does not."""
    from medgen.models.translate.nets import collapse_check

    a, b = paired_data
    tr = Trainer(tr_config(a, b, tmp_path, **{"optim.max_steps": 1}))
    tr.fit()
    task = tr.task

    class Const(torch.nn.Module):
        def forward(self, x):
            return torch.full_like(x, 0.3)

    from medgen.train.data import volume_dataset

    val_ds = volume_dataset(tr.cfg, tr.manifest, tr.val_records)
    real = task.model.g_ab
    task.model.g_ab = Const()
    m = task.validate(val_ds, None, None, 1)
    assert m["val/mode_collapse"] == 1.0 and m["val/collapse_ratio"] == 0.0
    task.model.g_ab = real
    # the identity map is as diverse as its inputs: not collapsed
    vols = [torch.rand(1, 8, 8, 8) for _ in range(3)]
    ok = collapse_check(vols, [v * 0.9 for v in vols], 0.2)
    assert ok["val/mode_collapse"] == 0.0 and ok["val/collapse_ratio"] > 1.0


def test_diversity_across_grids():
    from medgen.models.translate.nets import diversity

    a = torch.zeros(1, 8, 8, 8)
    b = torch.ones(1, 10, 12, 8)
    assert diversity([a, b]) == pytest.approx(1.0)
    assert diversity([a, a.clone()]) == 0.0 and diversity([a]) == 0.0


def test_collapse_check_never_returns_nan():
    from medgen.models.translate.nets import collapse_check

    m = collapse_check([torch.rand(1, 4, 4, 4)], [torch.rand(1, 4, 4, 4)], 0.2)
    assert all(np.isfinite(v) for v in m.values()) and "val/collapse_ratio" not in m
    assert m["val/mode_collapse"] == 0.0


def test_tracked_run_with_one_validation_volume(paired_data, tmp_path, tr_config):
    """MLflow tracking and the run seal (canonical JSON: no NaN allowed) with a single
    validation volume, where the collapse ratio is undefined."""
    a, b = paired_data
    cfg = tr_config(a, b, tmp_path, **{"tracking.enabled": "true", "val.max_volumes": 1,
                                       "optim.max_steps": 2,
                                       "tracking.tracking_uri": f"sqlite:///{tmp_path / 'm.db'}"})
    res = train(cfg)
    assert res.mlflow_run_id and "val/collapse_ratio" not in res.metrics
