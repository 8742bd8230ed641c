"""Model card validation: required inference settings, digests only, no identifiers."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from medgen.models import IntensityNorm, ModelCard


def test_valid_card_defaults(card_dict):
    card = ModelCard.model_validate(card_dict)
    assert card.schema_version == 1
    assert card.medgen_version == __import__("medgen").__version__
    assert card.created_at is None  # no wall clock by default: identical trainings, identical cards
    stamped = ModelCard.model_validate({**card_dict, "created_at": "2026-01-02T03:04:05Z"})
    assert stamped.created_at == "2026-01-02T03:04:05Z"
    with pytest.raises(ValidationError):
        ModelCard.model_validate({**card_dict, "created_at": "yesterday"})
    assert card.intensity.mode == "percentile"
    assert ModelCard.model_validate_json(card.model_dump_json()) == card


@pytest.mark.parametrize("field, value", [
    ("intended_use", "Denoiser for /data/patients/DOE^JOHN/series1"),
    ("intended_use", "trained on C:\\hospital\\exports"),
    ("intended_use", "series 1.2.840.113619.2.55.3.604688119"),
    ("intended_use", "scans acquired 2019-03-14 at site A"),
    ("limitations", ["contact jane.doe@hospital.org"]),
    ("training_manifest_sha256", "abc123"),
    ("training_manifest_sha256", "/data/manifest.jsonl"),
    ("lineage", {"source": "/mnt/pacs/export"}),
    ("metrics", {"/home/user/psnr": 1.0}),
    ("modality", "MRI scanner 3T"),
    ("task", "diagnose"),
    ("expected_spacing_mm", [1.0, 0.0, 1.0]),
    ("git_commit", "not-a-sha"),
])
def test_identifying_or_bad_values_rejected(card_dict, field, value):
    with pytest.raises(ValidationError):
        ModelCard.model_validate({**card_dict, field: value})


def test_unknown_key_rejected(card_dict):
    with pytest.raises(ValidationError, match="extra"):
        ModelCard.model_validate({**card_dict, "patient_name": "x"})


def test_intensity_norm_mirrors_the_transform():
    import numpy as np
    import torch

    from medgen.transforms.intensity import NormalizeIntensityd, denormalize

    for kw in [{"mode": "percentile", "lower": 1.0, "upper": 99.0},
               {"mode": "window", "center": 40.0, "width": 400.0, "clip": True},
               {"mode": "range", "a_min": 0.0, "a_max": 4095.0}, {"mode": "zscore"}]:
        t = NormalizeIntensityd(["image"], **kw)
        norm = IntensityNorm.model_validate(t.card())
        t2 = norm.transform(["image"])
        assert t2.card() == t.card()
        img = torch.from_numpy(np.random.default_rng(0).normal(100, 30, (8, 8, 8)).astype("float32"))
        a, b = t({"image": img}), t2({"image": img})
        assert torch.equal(a["image"], b["image"])
        if not kw.get("clip"):
            assert torch.allclose(denormalize(b["image"], b["normalization"]), img, atol=1e-3)
    with pytest.raises(ValidationError, match="needs center, width"):
        IntensityNorm(mode="window")
    with pytest.raises(ValidationError, match="does not take"):
        IntensityNorm(mode="zscore", center=3.0)
