"""Normalisation is recorded in the sample and inverts exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medgen.transforms import NormalizeIntensityd, denormalize, load_preset, normalize


def test_percentile_normalisation_shared_by_keys_and_inverted():
    rng = np.random.default_rng(0)
    clean = (rng.random((1, 16, 16, 8)) * 800 + 100).astype(np.float32)
    s = load_preset("gaussian-mild", seed=0)({"image": clean})  # noisy copy in native units
    t = NormalizeIntensityd(["image", "noisy"], mode="percentile", lower=1, upper=99, ref_key="image")
    out = t(s)
    rec = out["normalization"]
    lo, hi = np.percentile(clean.astype(np.float64), [1, 99])
    assert rec["a_min"] == pytest.approx(lo) and rec["a_max"] == pytest.approx(hi)
    assert rec["keys"] == ["image", "noisy"] and rec["mode"] == "percentile"
    assert float(np.percentile(out["image"], 1)) == pytest.approx(0.0, abs=1e-3)
    assert float(np.percentile(out["image"], 99)) == pytest.approx(1.0, abs=1e-3)
    back = t.inverse(out)
    assert np.allclose(back["image"], clean, rtol=1e-5, atol=1e-3)
    assert t.card() == {"mode": "percentile", "b_min": 0.0, "b_max": 1.0, "clip": False,
                        "lower": 1.0, "upper": 99.0}


def test_ct_window_and_zscore_on_tensors():
    from monai.data import MetaTensor

    hu = MetaTensor(torch.linspace(-1000, 1000, 2 * 8 * 8).reshape(2, 8, 8),
                    affine=torch.diag(torch.tensor([0.7, 0.7, 1.0, 1.0])))
    t = NormalizeIntensityd("ct", mode="window", center=40, width=400, clip=True)
    out = t({"ct": hu})
    assert isinstance(out["ct"], MetaTensor) and torch.allclose(out["ct"].affine, hu.affine)
    assert float(out["ct"].min()) == 0.0 and float(out["ct"].max()) == 1.0
    assert out["normalization"]["a_min"] == -160 and out["normalization"]["a_max"] == 240
    mid = denormalize(torch.tensor([0.5]), out["normalization"])
    assert float(mid) == pytest.approx(40.0)
    z = NormalizeIntensityd("x", mode="zscore")({"x": hu.as_tensor()})
    assert abs(float(z["x"].mean())) < 1e-5 and abs(float(z["x"].std(unbiased=False)) - 1) < 1e-4
    again = normalize(denormalize(z["x"], z["normalization"]), z["normalization"])
    assert torch.allclose(again, z["x"], atol=1e-5)


def test_unknown_mode():
    from medgen.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'window'"):
        NormalizeIntensityd("x", mode="windw")
