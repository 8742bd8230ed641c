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

# Lazy: configs validate presets through ``medgen.transforms.presets``/``catalog`` without torch
# or MONAI; the transforms themselves import them on first use (as ``medgen.models`` does).
_LAZY = {
    **dict.fromkeys(["DEGRADATIONS", "RECORD_KEY", "Degradationd", "DegradationSpec",
                     "EncodeRecordsd", "RandDegradationd", "describe", "records_of", "replay",
                     "sample_params"], "medgen.transforms.degradations"),
    **dict.fromkeys(["apply_geometry", "geometry_matrix"], "medgen.transforms.functional"),
    **dict.fromkeys(["NORM_KEY", "NormalizeIntensityd", "denormalize", "normalize"],
                    "medgen.transforms.intensity"),
    **dict.fromkeys(["PresetConfig", "build_pipeline", "load_preset", "preset_names",
                     "preset_path", "presets_dir"], "medgen.transforms.presets"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'medgen.transforms' has no attribute '{name}'")


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
