"""Fixtures for model tests: the tiny configs shipped in configs/tiny/."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = sorted((ROOT / "configs" / "tiny").glob("*.yaml"))
FULL = sorted((ROOT / "configs" / "model").glob("*.yaml"))


@pytest.fixture(params=TINY, ids=lambda p: p.stem)
def tiny_cfg(request):
    from medgen.models import load_model_config

    return load_model_config(request.param)


@pytest.fixture
def card_dict():
    return {
        "model_name": "vae",
        "task": "denoise",
        "intended_use": "Research denoising of T1-weighted brain MR magnitude images.",
        "modality": "MR",
        "expected_spacing_mm": [1.0, 1.0, 1.0],
        "intensity": {"mode": "percentile", "lower": 0.5, "upper": 99.5},
        "training_manifest_sha256": "a" * 64,
        "metrics": {"val/psnr": 31.5, "val/ssim": 0.91},
        "limitations": ["Not for diagnostic use.", "Trained on one scanner model."],
    }
