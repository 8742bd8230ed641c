"""Registry, configs and cross-field validation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from medgen.config import StrictModel, load_config
from medgen.errors import ConfigError
from medgen.models import (
    MODELS,
    ModelConfig,
    UNetConfig,
    VAEConfig,
    build_model,
    load_model_config,
    parse_model_config,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = sorted((ROOT / "configs" / "tiny").glob("*.yaml"))
FULL = sorted((ROOT / "configs" / "model").glob("*.yaml"))


class TrainLike(StrictModel):
    model: ModelConfig


def test_registered_families():
    assert {"vae", "unet"} <= set(MODELS.names())
    assert MODELS.get("vae").config_cls is VAEConfig
    assert "synth" in MODELS.get("vae").tasks


def test_tiny_configs_cover_families_in_2d_and_3d():
    cfgs = [load_model_config(p) for p in TINY]
    got = {(c.name, c.spatial_dims) for c in cfgs}
    assert {(n, d) for n in ("vae", "unet") for d in (2, 3)} <= got
    # every family that ships tiny configs ships both a 2D and a 3D one, and all are registered
    for name in {c.name for c in cfgs}:
        assert name in MODELS.names()
        assert {(name, 2), (name, 3)} <= got, f"{name}: tiny 2D and 3D configs"


@pytest.mark.parametrize("path", FULL, ids=lambda p: p.stem)
def test_full_size_configs_validate(path):
    cfg = load_model_config(path)
    if cfg.name in ("vae", "unet"):
        assert cfg.patch_size is not None
    if cfg.patch_size is not None:
        cfg.check_patch_size(cfg.patch_size)


def test_discriminated_union_in_a_training_config():
    cfg = TrainLike.model_validate(
        {"model": {"name": "vae", "spatial_dims": 3, "channels": [8, 16, 16], "norm_num_groups": 4}})
    assert isinstance(cfg.model, VAEConfig)
    assert cfg.model.size_divisor() == 4
    cfg = TrainLike.model_validate({"model": {"name": "unet", "spatial_dims": 2}})
    assert isinstance(cfg.model, UNetConfig) and cfg.model.spatial_dims == 2


def test_unknown_model_name_suggests_nearest():
    with pytest.raises(ConfigError, match=r"unknown models 'vea'.*did you mean 'vae'"):
        parse_model_config({"name": "vea", "spatial_dims": 3})
    with pytest.raises(ConfigError, match="did you mean 'unet'"):
        build_model({"name": "unte"})
    # inside a training config loaded the way the CLI does it
    with pytest.raises(ConfigError, match=r"unknown model 'vea' \(did you mean 'vae'\?\)"):
        load_config(TrainLike, data={"model": {"name": "vea"}})


def test_unknown_key_is_reported_with_suggestion():
    with pytest.raises(ConfigError, match="latent_channel"):
        parse_model_config({"name": "vae", "latent_channel": 3})
    with pytest.raises(ConfigError, match="did you mean 'latent_channels'"):
        load_config(TrainLike, data={"model": {"name": "vae", "latent_channel": 3}})


@pytest.mark.parametrize("bad, msg", [
    ({"name": "vae", "channels": [8, 16], "norm_num_groups": 3}, "divisible by norm_num_groups"),
    ({"name": "vae", "channels": [8, 16], "num_res_blocks": [1, 1, 1], "norm_num_groups": 4},
     "num_res_blocks has 3 entries"),
    ({"name": "vae", "channels": [8, 16, 16], "norm_num_groups": 4, "patch_size": [16, 16, 18]},
     "multiple of 4"),
    ({"name": "vae", "spatial_dims": 2, "channels": [8, 16], "norm_num_groups": 4,
      "patch_size": [16, 16, 16]}, "spatial_dims is 2"),
    ({"name": "vae", "in_channels": 2, "out_channels": 1, "residual": True}, "in_channels == out"),
    ({"name": "unet", "channels": [8, 16, 32], "strides": [2]}, "strides needs"),
    ({"name": "unet", "channels": [8, 16, 32], "patch_size": [18, 18, 18]}, "multiple of 4"),
    ({"name": "unet", "channels": [8, 16, 32], "strides": [2, 3], "patch_size": [16, 16, 16]},
     "multiple of 6"),
    ({"name": "unet", "spatial_dims": 4}, "spatial_dims"),
    ({"name": "unet", "kernel_size": 4}, "odd"),
])
def test_cross_field_validation(bad, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_model_config(bad)


def test_union_rejects_bad_values_with_field_path():
    with pytest.raises(ValidationError) as exc:
        TrainLike.model_validate({"model": {"name": "unet", "channels": [8, 16, 32],
                                            "patch_size": [18, 18, 18]}})
    assert "multiple of 4" in str(exc.value)


def test_overrides_on_model_yaml():
    path = ROOT / "configs" / "tiny" / "vae-tiny-3d.yaml"
    cfg = load_model_config(path, overrides=["channels=[4,8,8]", "latent_channels=3"])
    assert cfg.channels == [4, 8, 8] and cfg.latent_channels == 3
    with pytest.raises(ConfigError, match="vae-tiny-3d.yaml"):
        load_model_config(path, overrides=["channels=[4,6]"])  # 6 not divisible by 4 groups


def test_configs_import_without_torch():
    import subprocess
    import sys

    code = ("import sys, medgen.models as m; m.parse_model_config({'name': 'vae'}); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_plugin_family_validates_through_the_union(monkeypatch):
    """A family registered at run time (as an entry-point plugin would be) works everywhere."""
    from typing import Literal

    import torch

    from medgen.models import BaseModelConfig, ModelSpec

    class ToyConfig(BaseModelConfig):
        name: Literal["toy"] = "toy"
        gain: float = 2.0

    def build_toy(cfg):
        return torch.nn.Conv3d(cfg.in_channels, cfg.out_channels, 1)

    monkeypatch.setitem(MODELS._items, "toy", ModelSpec("toy", ToyConfig, build_toy))
    cfg = TrainLike.model_validate({"model": {"name": "toy", "gain": 3.0}})
    assert isinstance(cfg.model, ToyConfig) and cfg.model.gain == 3.0
    with pytest.raises(ValidationError, match="did you mean 'gain'"):
        TrainLike.model_validate({"model": {"name": "toy", "gian": 3.0}})
    model = build_model({"name": "toy"})
    assert model.config.name == "toy" and isinstance(model, torch.nn.Conv3d)
    with pytest.raises(ValueError, match="has name 'toy'"):
        from medgen.models import register_model

        register_model(ModelSpec("other", ToyConfig, build_toy))
