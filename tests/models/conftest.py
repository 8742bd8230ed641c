"""Fixtures for model tests: the tiny configs shipped in configs/tiny/."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = sorted((ROOT / "configs" / "tiny").glob("*.yaml"))
FULL = sorted((ROOT / "configs" / "model").glob("*.yaml"))
DENOISERS = ("vae", "unet")


def _family(path: Path) -> str | None:
    data = yaml.safe_load(path.read_text()) or {}
    return (data.get("model") or data).get("name")


DENOISE_TINY = [p for p in TINY if _family(p) in DENOISERS]


@pytest.fixture(params=DENOISE_TINY, ids=lambda p: p.stem)
def tiny_cfg(request):
    """Tiny configs of the denoising families (this package's own models)."""
    from medgen.models import load_model_config

    return load_model_config(request.param)


@pytest.fixture(params=TINY, ids=lambda p: p.stem)
def any_tiny_cfg(request):
    """Every tiny config, whatever its family (the contract and checkpoint tests hold for all)."""
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
