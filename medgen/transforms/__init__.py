"""Degradation library: MONAI dictionary transforms that record what they did, so that every
degraded sample can be replayed exactly, plus intensity normalisation with an inverse.

Quick use::

    from medgen.transforms import load_preset, replay
    pipe = load_preset("mri-rician-mild", keys="noisy", source_key="image", seed=0)
    s = pipe({"image": clean})             # clean: (C, I, J, K) or (C, H, W), numpy or torch
    s["noisy"], s["degradations"]          # degraded copy + [{"name", "keys", "params", "seed"}]
    again = replay(s, clean)               # bit-identical to s["noisy"]

See ``docs/transforms.md`` for the degradations, their parameters and references.
"""

from medgen.transforms.degradations import (
    DEGRADATIONS,
    RECORD_KEY,
    Degradationd,
    DegradationSpec,
    EncodeRecordsd,
    RandDegradationd,
    describe,
    records_of,
    replay,
    sample_params,
)
from medgen.transforms.functional import apply_geometry, geometry_matrix
from medgen.transforms.intensity import NORM_KEY, NormalizeIntensityd, denormalize, normalize
from medgen.transforms.presets import (
    PresetConfig,
    build_pipeline,
    load_preset,
    preset_names,
    preset_path,
    presets_dir,
)

__all__ = [
    "DEGRADATIONS",
    "NORM_KEY",
    "RECORD_KEY",
    "DegradationSpec",
    "Degradationd",
    "EncodeRecordsd",
    "NormalizeIntensityd",
    "PresetConfig",
    "RandDegradationd",
    "apply_geometry",
    "build_pipeline",
    "denormalize",
    "describe",
    "geometry_matrix",
    "load_preset",
    "normalize",
    "preset_names",
    "preset_path",
    "presets_dir",
    "records_of",
    "replay",
    "sample_params",
]
