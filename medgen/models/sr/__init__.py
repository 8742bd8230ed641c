"""Super-resolution: the RRDB generator (2D/3D, per-axis factors), its losses, the HR -> LR
degradation model and interpolation baselines. See ``docs/super_resolution.md``."""

from medgen.models.sr.config import SRDiscriminatorConfig, SRGeneratorConfig, SRTrainConfig

__all__ = ["SRDiscriminatorConfig", "SRGeneratorConfig", "SRTrainConfig"]
