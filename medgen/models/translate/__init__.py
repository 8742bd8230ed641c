"""Image-to-image translation: Pix2Pix (paired) and CycleGAN (unpaired) generators, 2D and 3D.

Configs (torch-free) live in :mod:`medgen.models.translate.config`; the networks, discriminators
and adversarial losses in :mod:`medgen.models.translate.nets` (imports torch/MONAI).
"""

from medgen.models.translate.config import (
    CycleGANConfig,
    Pix2PixConfig,
    TranslateDiscriminatorConfig,
    TranslateTrainConfig,
)

__all__ = ["CycleGANConfig", "Pix2PixConfig", "TranslateDiscriminatorConfig", "TranslateTrainConfig"]
