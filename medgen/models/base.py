"""Base model config (torch-free) shared by every model family in the registry.

A family's config subclasses :class:`BaseModelConfig`, narrows ``name`` to a ``Literal`` (the
discriminator of :data:`medgen.models.registry.ModelConfig`) and implements :meth:`size_divisor`.
This module never imports torch so training configs can be validated (and ``medgen --help`` run)
without it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from medgen.config import StrictModel


class BaseModelConfig(StrictModel):
    """Fields every model family has.

    Attributes
    ----------
    name : str
        Registry name of the family (a ``Literal`` in each subclass).
    spatial_dims : {2, 3}
        2 for slice-wise models, 3 for volumetric models.
    in_channels, out_channels : int
        Channels of the input and of the output tensor.
    patch_size : list of int, optional
        Patch (training crop / sliding-window ROI) size the model is meant for; one entry per
        spatial dimension, each divisible by :meth:`size_divisor`.
    """

    name: str
    spatial_dims: Literal[2, 3] = 3
    in_channels: int = Field(1, ge=1, le=64)
    out_channels: int = Field(1, ge=1, le=64)
    patch_size: list[int] | None = None

    def size_divisor(self) -> int:
        """Every spatial size fed to ``forward`` must be a multiple of this (``predict`` pads)."""
        return 1

    def check_patch_size(self, patch_size: list[int] | tuple[int, ...]) -> None:
        """Raise ``ValueError`` unless ``patch_size`` suits this model (length and divisibility).

        Trainers call it on their own patch size so the error names the right key.
        """
        ps = list(patch_size)
        if len(ps) != self.spatial_dims:
            raise ValueError(
                f"patch_size {ps} has {len(ps)} entries but spatial_dims is {self.spatial_dims}")
        div = self.size_divisor()
        bad = [p for p in ps if p < 1 or p % div]
        if bad:
            raise ValueError(
                f"patch_size {ps}: every entry must be a positive multiple of {div} "
                f"(2**depth of this '{self.name}' model)")

    @model_validator(mode="after")
    def _check_patch(self):
        if self.patch_size is not None:
            self.check_patch_size(self.patch_size)
        return self
