"""Training generators with ``medgen train`` (task synth): conditions honoured, checkpoints
complete for sampling, two-stage ldm, paired image + label maps, config cross-checks."""

from __future__ import annotations

import json

import pytest
import torch

from medgen.errors import ConfigError
from medgen.models import load_checkpoint
from medgen.models.synth.config import encode_conditions

from .conftest import tiny_synth_config


def _side_contrast(model, cfg, n=8):
    """Mean(left half) - mean(right half) of generated samples, per class."""
    out = {}
    for cls in ("left", "right"):
        cond = torch.tensor([encode_conditions(cfg.conditions, {"side": cls})] * n)
        img, _ = model.split_output(model.generate(list(range(100, 100 + n)), cond))
        half = img.shape[2] // 2
        out[cls] = float(img[:, :, :half].mean() - img[:, :, half:].mean())
    return out


def test_conditional_vae_honours_its_condition(trained_vae):
    model, cfg, card = load_checkpoint(trained_vae.last)
    assert card.task == "synth" and cfg.conditions[0].classes == ["left", "right"]
    c = _side_contrast(model, cfg)
    # training phantoms: the "left" class is brighter on the left half, "right" on the right
    # (real training data: about +0.12 for "left", -0.12 for "right")
    assert c["left"] - c["right"] > 0.05, c


def test_checkpoint_is_complete_for_sampling(trained_vae):
    cfg = json.loads((trained_vae.last / "config.json").read_text())
    assert cfg["image_size"] == [16, 16, 16] and len(cfg["spacing_mm"]) == 3
    assert cfg["conditions"][0]["name"] == "side" and cfg["fit"] == "resize"
    card = json.loads((trained_vae.last / "card.json").read_text())
    assert card["lineage"]["conditions"] == "side" and card["training_manifest_sha256"]


def test_ldm_two_stage(trained_ldm):
    model, cfg, card = load_checkpoint(trained_ldm.last)
    assert float(model.latent_scale) > 0  # fixed at the first UNet step
    assert cfg.diffusion.num_train_timesteps == 100 and card.lineage["objective"] == "ddpm"
    assert "val/diffusion_loss" in trained_ldm.metrics
    assert trained_ldm.best is not None  # selected among UNet-phase validations only


def test_ldm_resume_across_the_stage_boundary(class_manifest, tmp_path):
    from medgen.train.trainer import Trainer, train

    full = train(tiny_synth_config(class_manifest, tmp_path / "a", "ldm"))
    cfg = tiny_synth_config(class_manifest, tmp_path / "b", "ldm")
    Trainer(cfg).fit(stop_after=2)  # inside the autoencoder phase
    resumed = Trainer(cfg, resume=True).fit()
    assert resumed.weights_sha256 == full.weights_sha256


@pytest.mark.slow
def test_conditional_ldm_honours_its_condition(class_manifest, tmp_path):
    from medgen.train.trainer import train

    res = train(tiny_synth_config(
        class_manifest, tmp_path, "ldm", synth={"conditions": [{"name": "side"}],
                                                "autoencoder_steps": 40},
        **{"optim.max_steps": 540, "val.every_steps": 540}))
    model, cfg, _ = load_checkpoint(res.last)
    c = _side_contrast(model, cfg)
    assert c["left"] > c["right"], c


def test_paired_image_and_label_map(label_manifest, tmp_path):
    from medgen.train.trainer import train

    res = train(tiny_synth_config(label_manifest, tmp_path, "vae-gen",
                                  synth={"label_channels": 3}, **{"optim.max_steps": 3}))
    model, cfg, _ = load_checkpoint(res.last)
    assert cfg.in_channels == 4 and cfg.label_channels == 3
    img, lab = model.split_output(model.generate([1, 2]))
    assert img.shape == (2, 1, 16, 16, 16) and lab.shape == (2, 16, 16, 16)
    assert 0 <= int(lab.min()) and int(lab.max()) <= 2


def test_2d_generator_with_class_and_scalar_conditions(class_manifest, tmp_path):
    from medgen.train.trainer import train

    res = train(tiny_synth_config(class_manifest, tmp_path, "ldm", dims=2,
                                  synth={"conditions": [{"name": "side"},
                                                        {"name": "age", "kind": "scalar"}]}))
    model, cfg, _ = load_checkpoint(res.last)
    assert cfg.spatial_dims == 2 and cfg.conditions[1].range == [20.0, 45.0]  # training ages
    cond = torch.tensor([encode_conditions(cfg.conditions, {"side": "left", "age": 33})])
    assert model.generate([5], cond).shape == (1, 1, 16, 16)


def test_config_cross_checks(class_manifest, tmp_path):
    with pytest.raises(ConfigError, match="task synth trains vae-gen or ldm"):
        tiny_synth_config(class_manifest, tmp_path, "unet")
    with pytest.raises(ConfigError, match="autoencoder_steps"):
        tiny_synth_config(class_manifest, tmp_path, "ldm", synth={"autoencoder_steps": 0})
    with pytest.raises(ConfigError, match="must be < optim.max_steps"):
        tiny_synth_config(class_manifest, tmp_path, "ldm", synth={"autoencoder_steps": 6})
    with pytest.raises(ConfigError, match="not trained by task 'denoise'"):
        tiny_synth_config(class_manifest, tmp_path, "vae-gen", **{"task.name": "denoise"})
    with pytest.raises(ConfigError, match="through the task: section"):
        tiny_synth_config(class_manifest, tmp_path, "vae-gen", **{"model.image_size": [16, 16, 16]})
    with pytest.raises(ConfigError, match="no training record has labels"):
        from medgen.train.trainer import Trainer

        Trainer(tiny_synth_config(class_manifest, tmp_path, "vae-gen",
                                  synth={"conditions": [{"name": "weight"}]}))
