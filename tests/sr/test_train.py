"""Tiny SR trainings in seconds: both phases, EMA saved, exact resume, variants, config checks."""

from __future__ import annotations

import json

import pytest

from medgen.errors import ConfigError
from medgen.train.trainer import Trainer, train


def _spy_steps(trainer: Trainer) -> list[dict]:
    """Record what each real train_step returned (the step itself runs unchanged)."""
    seen: list[dict] = []
    real = trainer.task.train_step

    def step(batch, s):
        parts = real(batch, s)
        seen.append({"step": s, **parts})
        return parts

    trainer.task.train_step = step
    return seen


def test_two_phases_ema_and_discriminator_saved(sr_manifest, tmp_path, sr_config):
    from medgen.models import load_checkpoint, load_train_state, weights_sha256

    cfg = sr_config(sr_manifest, tmp_path)
    tr = Trainer(cfg)
    seen = _spy_steps(tr)
    res = tr.fit()
    assert res.step == 4
    assert [p["phase"] for p in seen] == [1.0, 1.0, 2.0, 2.0]  # warmup_steps: 2
    assert all("adv_g" not in p and "d_loss" not in p for p in seen[:2])
    assert all("adv_g" in p and "d_loss" in p and "freq" in p for p in seen[2:])
    files = {p.name for p in res.last.iterdir()}
    assert {"model.safetensors", "ema.safetensors", "config.json", "card.json"} <= files
    assert weights_sha256(res.last, "ema") != weights_sha256(res.last, "model")
    card = json.loads((res.last / "card.json").read_text())
    assert card["task"] == "sr" and card["ema_weights_sha256"]
    assert card["lineage"]["sr_factors"] == "1x1x2" and card["lineage"]["sr_adversarial"] == "on"
    assert card["expected_spacing_mm"] == [1.0, 1.0, 2.0]  # the LR input grid
    assert card["patch_size"] == [16, 16, 8]  # the LR window
    for k in ("val/psnr", "val/psnr_bspline", "val/psnr_gain", "val/ssim_bspline"):
        assert k in res.metrics
    state = load_train_state(res.last)
    assert "discriminator" in state["extra"]["modules"]
    assert set(state["optimizer"]) == {"model", "discriminator"}
    model, _, _ = load_checkpoint(res.last)  # EMA weights by default, digests verified
    assert model.scale_factors == (1, 1, 2)


def test_l1_only_ablation_builds_no_discriminator(sr_manifest, tmp_path, sr_config):
    cfg = sr_config(sr_manifest, tmp_path, **{"task.adv_weight": 0, "optim.max_steps": 2,
                                              "val.every_steps": 2})
    tr = Trainer(cfg)
    seen = _spy_steps(tr)
    res = tr.fit()
    assert set(tr.task.optimizers) == {"model"} and tr.task.disc is None
    assert all(p["phase"] == 1.0 for p in seen)
    assert json.loads((res.last / "card.json").read_text())["lineage"]["sr_adversarial"] == "off"


def test_resume_across_the_phase_switch_is_exact(sr_manifest, tmp_path, sr_config):
    from medgen.models import weights_sha256

    over = {"val.every_steps": 100}  # no validation: the loop and resume only
    full = train(sr_config(sr_manifest, tmp_path / "full", **over))
    cfg = sr_config(sr_manifest, tmp_path / "cut", **over)
    first = Trainer(cfg).fit(stop_after=1)
    assert first.stopped_early
    resumed = Trainer(cfg, resume=True).fit()
    assert resumed.step == 4
    assert resumed.weights_sha256 == full.weights_sha256
    assert weights_sha256(resumed.last, "ema") == weights_sha256(full.last, "ema")


def test_gan_from_an_l1_checkpoint(sr_manifest, tmp_path, sr_config):
    """ESRGAN's recipe: the GAN run starts from the L1 model's EMA weights (adversarial at once)."""
    from medgen.models import read_state_dict, state_dict_sha256

    l1 = train(sr_config(sr_manifest, tmp_path / "l1", **{"task.adv_weight": 0, "optim.max_steps": 2,
                                                           "val.every_steps": 100}))
    cfg = sr_config(sr_manifest, tmp_path / "gan", **{"task.init_from": str(l1.last),
                                                      "task.warmup_steps": 0, "optim.max_steps": 1,
                                                      "val.every_steps": 100})
    tr = Trainer(cfg)
    init = state_dict_sha256(read_state_dict(l1.last / "ema.safetensors"))
    assert state_dict_sha256(tr.task.model.state_dict()) == init
    seen = _spy_steps(tr)
    res = tr.fit()
    assert seen[0]["phase"] == 2.0
    card = json.loads((res.last / "card.json").read_text())
    assert card["lineage"]["sr_init_weights_sha256"] == init
    other = sr_config(sr_manifest, tmp_path / "bad", **{"task.init_from": str(l1.last),
                                                        "model.features": 12})
    with pytest.raises(ConfigError, match="different generator"):
        Trainer(other)


@pytest.mark.parametrize("dims,factors,over", [
    (2, (1, 1, 4), {}),
    (3, (2, 2, 1), {"task.kspace_axes": "[0, 1]", "task.degradation": "mri-rician-mild"}),
])
def test_variants_train(sr_manifest, tmp_path, sr_config, dims, factors, over):
    """2D slice-wise model (planes (i, k), 4x along k); MR in-plane k-space pairs with noise."""
    cfg = sr_config(sr_manifest, tmp_path, dims=dims, factors=factors,
                    **{"optim.max_steps": 3, "task.warmup_steps": 1, "val.every_steps": 3, **over})
    tr = Trainer(cfg)
    seen = _spy_steps(tr)
    res = tr.fit()
    assert [p["phase"] for p in seen] == [1.0, 2.0, 2.0]
    assert res.metrics["val/psnr"] > 0 and (res.last / "ema.safetensors").exists()
    if dims == 2:
        assert json.loads((res.last / "card.json").read_text())["patch_size"] == [16, 4]


def test_pairs_are_step_indexed_and_noise_only_on_lr(sr_manifest, tmp_path, sr_config):
    from medgen.train.data import volume_dataset

    cfg = sr_config(sr_manifest, tmp_path, **{"task.degradation": "mri-rician-mild"})
    tr = Trainer(cfg)
    ds = volume_dataset(cfg, tr.manifest, tr.train_records)
    s = tr.task.sampler(ds)
    a, b, c = s.batch(3), s.batch(3), s.batch(4)
    assert a["lr"].shape == (2, 1, 16, 16, 8) and a["hr"].shape == (2, 1, 16, 16, 16)
    assert a["lr"].numpy().tobytes() == b["lr"].numpy().tobytes()
    assert a["lr"].numpy().tobytes() != c["lr"].numpy().tobytes()
    names = [r["name"] for r in a["degradations"][0]]
    assert names == ["thick_slice", "rician"]


def test_config_cross_checks(sr_manifest, tmp_path, sr_config):
    from pathlib import Path

    from medgen.config import load_config
    from medgen.train.config import TrainConfig

    for p in sorted((Path(__file__).resolve().parents[2] / "configs" / "train").glob("sr-*.yaml")):
        cfg = load_config(TrainConfig, p)
        assert cfg.task.name == "sr" and cfg.task.factors == cfg.model.volume_factors()
    with pytest.raises(ConfigError, match="differ from the model"):
        sr_config(sr_manifest, tmp_path, **{"task.factors": "[1, 1, 4]"})
    with pytest.raises(ConfigError, match="divisible"):
        sr_config(sr_manifest, tmp_path, **{"data.patch_size": "[16, 16, 15]"})
    with pytest.raises(ConfigError, match="too small for a discriminator"):
        sr_config(sr_manifest, tmp_path, **{"task.discriminator.num_layers_d": 3})
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        sr_config(sr_manifest, tmp_path, **{"task.perceptual_weight": 0.1})
    with pytest.raises(ConfigError, match="did you mean 'warmup_steps'"):
        sr_config(sr_manifest, tmp_path, **{"task.warmup_step": 3})
    with pytest.raises(ConfigError, match="only the noise"):  # refused when the config loads
        sr_config(sr_manifest, tmp_path, **{"task.degradation": "thick-slice-x2"})
