"""Translation on the batch-inference core: ``medgen translate --model MODEL SRC DST
[--direction a2b|b2a]``.

:class:`TranslatePredictor` is the per-item strategy; everything else (discovery, ledger, resume,
retries, atomic outputs, engines, tracking) is the shared core. It differs from the denoiser in:

* the generator: ``a2b`` (pix2pix, cyclegan) or ``b2a`` (cyclegan only);
* intensities: the input is normalised with its own domain's setting (A: the card's ``intensity``,
  B: the model's ``intensity_b``) and the output mapped back with the other domain's. A fixed
  target mapping (``window`` / ``range``, e.g. HU for a synthetic CT) is inverted exactly; a
  per-volume one (``percentile`` / ``zscore``) cannot be known for a volume that was never
  acquired, so the input's own record is inverted (outputs land in the input's intensity range,
  what harmonisation between scanners wants);
* outputs are marked synthetic: NIfTI ``descrip`` ``SYNTHETIC medgen translate ...``; DICOM
  derived series with ImageType ``DERIVED\\SECONDARY\\SYNTHETIC``, a "SYNTHETIC" series
  description and ImageComments, in the source's study and frame of reference (so a synthetic CT
  overlays its MR), with the target domain's modality when the model declares ``modality_b``.

The geometry is the input's (translation never changes the grid).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from medgen.errors import ConfigError
from medgen.infer.predictor import VolumePredictor
from medgen.io.volume import Volume

log = logging.getLogger("medgen.infer")

__all__ = ["DIRECTIONS", "TranslatePredictor"]

DIRECTIONS = ("a2b", "b2a")
_FIXED = ("window", "range")


class TranslatePredictor(VolumePredictor):
    """``medgen translate``'s per-item step (options: ``direction`` - ``a2b`` or ``b2a``)."""

    task = "translate"
    verb = "translated"

    def __init__(self, model, card, settings=None, *, weights_sha256: str | None = None,
                 options: Mapping[str, Any] | None = None):
        opts = dict(options or {})
        opts.setdefault("direction", "a2b")
        super().__init__(model, card, settings, weights_sha256=weights_sha256, options=opts)
        direction = str(self.options["direction"])
        if direction not in DIRECTIONS:
            raise ConfigError("--direction", f"'{direction}': a2b or b2a")
        if not hasattr(model, "generator"):
            raise ConfigError("--model", "not a translation model (pix2pix or cyclegan)")
        try:
            model.generator(direction)
        except ValueError as exc:
            raise ConfigError("--direction", str(exc)) from None
        self.direction = direction
        self.model.direction = direction
        norm_a = card.intensity
        norm_b = getattr(self.config, "intensity_b", None) or norm_a
        self.norm_in, self.norm_out = (norm_a, norm_b) if direction == "a2b" else (norm_b, norm_a)
        mod_b = getattr(self.config, "modality_b", None)
        mod_a = card.modality if card.modality != "any" else None
        self.out_modality = mod_b if direction == "a2b" else mod_a

    def normalise(self, x):
        from medgen.transforms.intensity import normalize

        rec = self.norm_in.transform("image").compute(x)
        return normalize(x, rec), rec

    def denormalise(self, y, record: Mapping[str, Any]):
        from medgen.transforms.intensity import denormalize

        if self.norm_out is self.norm_in or self.norm_out.mode not in _FIXED:
            return denormalize(y, record)
        return denormalize(y, self.norm_out.transform("image").compute(y))

    def output_meta(self, vol: Volume) -> dict[str, Any]:
        name = getattr(self.card, "model_name", "model")
        meta: dict[str, Any] = {
            "synthetic": True, "synthetic_keep_study": True,
            "output_descrip": f"SYNTHETIC medgen translate {self.direction} {name} "
                              f"{(self.weights_sha256 or '')[:12]}"}
        if self.out_modality:
            meta["modality"] = self.out_modality
        return meta

    def derivation(self) -> str:
        name = getattr(self.card, "model_name", "model")
        w = (self.weights_sha256 or "")[:12]
        return f"translated {self.direction} by medgen {name} (weights sha256 {w}); synthetic image"

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["intensity_out"] = self.norm_out.model_dump(mode="json")
        d["direction"] = self.direction
        return d
