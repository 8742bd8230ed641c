"""Training: one trainer for denoisers (and, later, SR GANs and generators).

``medgen train CONFIG.yaml [--set k=v]`` -> :func:`medgen.train.trainer.train`.
"""

from medgen.train.config import TrainConfig

__all__ = ["TrainConfig"]
