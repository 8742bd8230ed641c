"""Noise units of degradation presets are explicit and plausible for their modality (issue 21)."""

from __future__ import annotations

import pytest

from medgen.errors import ConfigError
from medgen.transforms.presets import check_preset


def _preset(tmp_path, text: str):
    p = tmp_path / "custom.yaml"
    p.write_text(text)
    return p


def test_shipped_presets_declare_units():
    import yaml

    from medgen.transforms import preset_names
    from medgen.transforms.presets import preset_path

    for name in preset_names():
        raw = yaml.safe_load(preset_path(name).read_text())
        assert raw.get("units") in ("window", "HU"), name
    assert check_preset("ct-lowdose-25pct").units == "HU"
    assert check_preset("gaussian-mild").units == "window"


def test_ct_gaussian_in_window_units_is_the_default(tmp_path):
    """The issue's trap: a Gaussian preset marked CT used to add its sigma in HU (0.03 HU of noise,
    invisible after normalisation). Without units it is now a fraction of the window."""
    p = _preset(tmp_path, "modality: CT\ndegradations:\n  - {name: gaussian, params: {sigma: 0.03}}\n")
    assert check_preset(p).units == "window"


def test_implausible_sigma_for_hu_is_refused(tmp_path):
    p = _preset(tmp_path, "modality: CT\nunits: HU\n"
                          "degradations:\n  - {name: gaussian, params: {sigma: [0.01, 0.03]}}\n")
    with pytest.raises(ConfigError) as e:
        check_preset(p)
    msg = str(e.value)
    assert "sigma up to 0.03 HU is implausible" in msg and "units: window" in msg


def test_hu_sized_sigma_in_window_units_is_refused(tmp_path):
    p = _preset(tmp_path, "modality: CT\ndegradations:\n  - {name: gaussian, params: {sigma: 20}}\n")
    with pytest.raises(ConfigError, match="implausible for units: window.*units: HU"):
        check_preset(p)
    ok = _preset(tmp_path, "modality: CT\nunits: HU\n"
                           "degradations:\n  - {name: gaussian, params: {sigma: [10, 30]}}\n")
    assert check_preset(ok).units == "HU"


def test_hu_needs_ct(tmp_path):
    p = _preset(tmp_path, "modality: MR\nunits: HU\n"
                          "degradations:\n  - {name: rician, params: {sigma: 20}}\n")
    with pytest.raises(ConfigError, match="units: HU are CT's"):
        check_preset(p)


def test_ct_lowdose_is_hu_only(tmp_path):
    p = _preset(tmp_path, "modality: CT\nunits: window\ndegradations:\n  - {name: ct_lowdose}\n")
    with pytest.raises(ConfigError, match="works in HU"):
        check_preset(p)


def test_one_of_members_are_checked(tmp_path):
    p = _preset(tmp_path, "degradations:\n  - one_of:\n      - {name: gaussian, params: {sigma: [0, 0.1]}}\n"
                          "      - {name: rician, params: {sigma: [0.02, 5.0]}}\n")
    with pytest.raises(ConfigError, match="'rician' sigma up to 5"):
        check_preset(p)


def test_parameter_choices_and_aliases(tmp_path):
    p = _preset(tmp_path, "degradations:\n  - {name: thick_slice, params: {profile: rectangular}}\n")
    assert check_preset(p).degradations[0].params["profile"] == "rect"
    bad = _preset(tmp_path, "degradations:\n  - {name: thick_slice, params: {profile: trapez}}\n")
    with pytest.raises(ConfigError, match="profile 'trapez' is not one of gaussian, rect"):
        check_preset(bad)


def test_unknown_degradation_and_parameter_suggest(tmp_path):
    p = _preset(tmp_path, "degradations:\n  - {name: gausian}\n")
    with pytest.raises(ConfigError, match="did you mean 'gaussian'"):
        check_preset(p)
    p = _preset(tmp_path, "degradations:\n  - {name: gaussian, params: {sigm: 0.1}}\n")
    with pytest.raises(ConfigError, match="did you mean 'sigma'"):
        check_preset(p)


def test_validation_imports_neither_torch_nor_monai():
    import subprocess
    import sys

    code = ("import sys; from medgen.transforms.presets import check_preset; "
            "[check_preset(n) for n in ('ct-lowdose-25pct', 'mri-artefacts', 'thick-slice-x2')]; "
            "print(sorted(m for m in ('torch', 'monai') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_ct_preset_in_window_units_adds_window_sized_noise():
    """End to end through the training sampler: a CT Gaussian preset in window units gives noise
    of its sigma on the normalised patch (the old behaviour gave ~1e-5)."""
    import numpy as np
    import torch

    from medgen.transforms import load_preset

    pipe = load_preset("gaussian-strong", keys="noisy", source_key="image", seed=0)
    assert pipe.preset.units == "window"
    x = torch.full((1, 16, 16, 16), 0.5)
    s = pipe({"image": x})
    sd = float(np.std(np.asarray(s["noisy"]) - 0.5))
    assert 0.04 < sd < 0.11
