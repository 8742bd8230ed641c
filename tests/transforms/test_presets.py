"""Named presets load into seeded MONAI pipelines; bad names and keys give one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen.errors import ConfigError
from medgen.transforms import load_preset, preset_names, presets_dir, replay

REQUIRED = ["mri-rician-mild", "mri-rician-strong", "gaussian-mild", "gaussian-strong",
            "ct-lowdose-25pct", "ct-lowdose-10pct", "mri-motion", "mri-ghosting",
            "thick-slice-x2", "thick-slice-x4"]


def _image(name: str, shape):
    rng = np.random.default_rng(0)
    x = rng.random(shape).astype(np.float32)
    return (x * 200 - 100).astype(np.float32) if name.startswith("ct-") else x


def test_required_presets_exist():
    assert set(REQUIRED) <= set(preset_names())


@pytest.mark.parametrize("name", REQUIRED)
def test_preset_runs_and_replays(name):
    shape = (1, 24, 24, 8) if not name.startswith("ct-") else (1, 24, 24, 2)
    img = _image(name, shape)
    pipe = load_preset(name, keys="noisy", source_key="image", seed=5)
    assert pipe.preset_name == name and pipe.preset.degradations
    s = pipe({"image": img})
    assert np.array_equal(s["image"], img)  # clean key untouched
    assert s["degradations"] and not np.array_equal(s["noisy"][..., :1], img[..., :1])
    assert np.array_equal(replay(json.dumps(s["degradations"]), img), s["noisy"])
    # same seed, same everything; another seed, other noise
    s2 = load_preset(name, keys="noisy", seed=5)({"image": img})
    assert s2["degradations"] == s["degradations"] and np.array_equal(s2["noisy"], s["noisy"])
    s3 = load_preset(name, keys="noisy", seed=6)({"image": img})
    assert s3["degradations"][0]["seed"] != s["degradations"][0]["seed"]


def test_thick_slice_presets_change_spacing():
    from monai.data import MetaTensor

    mt = MetaTensor(torch.rand(1, 8, 8, 16), affine=torch.diag(torch.tensor([1.0, 1.0, 1.0, 1.0])))
    for name, f in (("thick-slice-x2", 2), ("thick-slice-x4", 4)):
        s = load_preset(name, seed=0)({"image": mt})
        assert s["noisy"].shape[-1] == 16 // f
        assert np.allclose(s["noisy"].pixdim.numpy(), [1.0, 1.0, f])
        assert s["degradations"][0]["geometry"]["index_scale"][-1] == f


def test_unknown_preset_did_you_mean():
    with pytest.raises(ConfigError, match="did you mean 'mri-rician-mild'"):
        load_preset("mri-rician-mlid")


def test_preset_from_path_env_and_validation(tmp_path, monkeypatch):
    good = tmp_path / "mine.yaml"
    good.write_text("description: test\ndegradations:\n  - name: gaussian\n    params: {sigma: 0.2}\n")
    s = load_preset(good, keys="image", source_key=None, seed=1)({"image": np.zeros((1, 8, 8), np.float32)})
    assert abs(float(s["image"].std()) - 0.2) < 0.05
    bad_param = tmp_path / "bad.yaml"
    bad_param.write_text("degradations:\n  - name: gaussian\n    params: {sgima: 0.2}\n")
    with pytest.raises(ConfigError, match="did you mean 'sigma'"):
        load_preset(bad_param)
    bad_name = tmp_path / "bad2.yaml"
    bad_name.write_text("degradations:\n  - name: rican\n")
    with pytest.raises(ConfigError, match="did you mean 'rician'"):
        load_preset(bad_name)
    bad_key = tmp_path / "bad3.yaml"
    bad_key.write_text("degradation:\n  - name: rician\n")
    with pytest.raises(ConfigError, match="did you mean 'degradations'"):
        load_preset(bad_key)
    with pytest.raises(ConfigError, match="not found"):
        load_preset(tmp_path / "missing.yaml")
    # $MEDGEN_CONFIGS points at another configs root
    (tmp_path / "transforms").mkdir()
    (tmp_path / "transforms" / "site-noise.yaml").write_text(good.read_text())
    monkeypatch.setenv("MEDGEN_CONFIGS", str(tmp_path))
    assert presets_dir() == tmp_path / "transforms"
    assert preset_names() == ["site-noise"]
    assert load_preset("site-noise").preset.description == "test"


def test_one_of_group_applies_exactly_one_and_replays(tmp_path):
    """A ``one_of`` group applies one member per sample; over seeds both members occur, and the
    recorded degradation replays the sample exactly."""
    p = tmp_path / "mix.yaml"
    p.write_text("degradations:\n  - one_of:\n      - {name: gaussian, params: {sigma: [0.01, 0.1]}}\n"
                 "      - {name: rician, params: {sigma: [0.01, 0.1]}}\n    weights: [1, 1]\n")
    img = np.random.default_rng(0).random((1, 12, 12, 6)).astype(np.float32)
    seen = set()
    for seed in range(12):
        s = load_preset(p, keys="noisy", seed=seed)({"image": img})
        assert len(s["degradations"]) == 1
        seen.add(s["degradations"][0]["name"])
        assert np.array_equal(replay(json.dumps(s["degradations"]), img), s["noisy"])
    assert seen == {"gaussian", "rician"}
    assert load_preset(p).preset.names() == {"gaussian", "rician"}


def test_one_of_bad_weights_is_a_config_error(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("degradations:\n  - one_of:\n      - {name: gaussian}\n    weights: [1, 2]\n")
    with pytest.raises(ConfigError, match="weights has 2 entries"):
        load_preset(p)
