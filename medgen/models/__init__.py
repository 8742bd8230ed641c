"""Model registry, denoisers and the pickle-free checkpoint format.

Torch-free at import: configs and the registry load without torch; :func:`build_model`,
:func:`predict` and the checkpoint functions import it on first use.

>>> from medgen.models import build_model, predict, save_checkpoint, load_checkpoint
>>> model = build_model({"name": "unet", "spatial_dims": 3, "channels": [8, 16]})  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from medgen.models.base import BaseModelConfig
from medgen.models.card import IntensityNorm, ModelCard
from medgen.models.denoise.config import (
    BlindSpotConfig,
    PatchDiscriminatorConfig,
    UNetConfig,
    VAEConfig,
    VAELossConfig,
)
from medgen.models.registry import (
    MODELS,
    ModelConfig,
    ModelSpec,
    build_model,
    config_sha256,
    load_model_config,
    model_spec,
    parse_model_config,
    register_model,
)

_LAZY = {
    "predict": "medgen.models.module",
    "MedgenModule": "medgen.models.module",
    "save_checkpoint": "medgen.models.checkpoint",
    "load_checkpoint": "medgen.models.checkpoint",
    "load_card": "medgen.models.checkpoint",
    "load_train_state": "medgen.models.checkpoint",
    "load_ema_state": "medgen.models.checkpoint",
    "read_state_dict": "medgen.models.checkpoint",
    "weights_sha256": "medgen.models.checkpoint",
    "state_dict_sha256": "medgen.models.checkpoint",
    "capture_rng_state": "medgen.models.checkpoint",
    "restore_rng_state": "medgen.models.checkpoint",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.models' has no attribute '{name}'")


__all__ = [
    "MODELS",
    "BaseModelConfig",
    "BlindSpotConfig",
    "IntensityNorm",
    "ModelCard",
    "ModelConfig",
    "ModelSpec",
    "PatchDiscriminatorConfig",
    "UNetConfig",
    "VAEConfig",
    "VAELossConfig",
    "build_model",
    "config_sha256",
    "load_model_config",
    "model_spec",
    "parse_model_config",
    "register_model",
    *sorted(_LAZY),
]
