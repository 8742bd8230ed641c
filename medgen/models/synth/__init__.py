"""Synthesis generators: ``vae-gen`` (prior sampling of a conditional VAE) and ``ldm`` (MONAI
AutoencoderKL + DiffusionModelUNet). Configs are torch-free; the modules import torch."""

from medgen.models.synth.config import (
    ConditionSpec,
    DiffusionSettings,
    GenVAEConfig,
    LDMConfig,
    condition_width,
    encode_conditions,
)

__all__ = ["ConditionSpec", "DiffusionSettings", "GenVAEConfig", "LDMConfig", "condition_width",
           "encode_conditions"]
