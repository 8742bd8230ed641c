"""What each built-in degradation accepts, without torch: names, parameters, their defaults and
allowed values, and how its noise level is measured.

:mod:`medgen.transforms.degradations` registers the functions against these entries; preset
files (:mod:`medgen.transforms.presets`) are validated against them when a config is loaded, in
a fraction of a second and before torch or MONAI is imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medgen.config.supported import (
    PROFILE_ALIASES,
    NoiseUnits,
    SupportedDegradation,
    SupportedProfile,
)

D = SupportedDegradation


@dataclass(frozen=True)
class DegradationInfo:
    """One degradation's parameters.

    Attributes
    ----------
    name : str
        Registry name.
    defaults : dict
        Recipe parameters and their defaults (what presets may set).
    modality : str
        "any", "MR" or "CT".
    description : str
        One line for docs and ``--help``.
    list_params : tuple of str
        Parameters whose value is a list (a two-number list is then not a range).
    choices : dict
        Parameter -> allowed string values.
    aliases : dict
        Parameter -> {alias: canonical value}.
    noise_param : str or None
        The parameter that is a noise standard deviation (checked against the preset's units).
    units : NoiseUnits or None
        Fixed units of the whole degradation (``ct_lowdose`` works on HU images), else None.
    """

    name: str
    defaults: dict[str, Any]
    modality: str = "any"
    description: str = ""
    list_params: tuple[str, ...] = ()
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)
    aliases: dict[str, dict[str, str]] = field(default_factory=dict)
    noise_param: str | None = None
    units: NoiseUnits | None = None


_PROFILES = tuple(p.value for p in SupportedProfile)

CATALOG: dict[str, DegradationInfo] = {i.name: i for i in [
    DegradationInfo(D.GAUSSIAN, {"sigma": 0.05, "relative": False}, "any",
                    "additive Gaussian noise (MONAI RandGaussianNoise, fixed std + seed)",
                    noise_param="sigma"),
    DegradationInfo(D.RICIAN, {"sigma": 0.05, "relative": False}, "MR",
                    "Rician noise of MR magnitude images (MONAI RandRicianNoise, fixed std + seed)",
                    noise_param="sigma"),
    DegradationInfo(D.CT_LOWDOSE, {"dose": 0.25, "i0": 1.0e5, "electronic_sigma": 0.0,
                                   "pixel_mm": None, "n_angles": 0, "slice_axis": -1,
                                   "mode": "simulate", "projection_scale": 1}, "CT",
                    "low-dose CT: Poisson(+Gaussian) counts on a parallel-beam projection, FBP",
                    choices={"mode": ("simulate", "insert")}, units=NoiseUnits.HU),
    DegradationInfo(D.KSPACE_SPIKE, {"intensity": [0.95, 1.10]}, "MR",
                    "k-space spike / herringbone (MONAI KSpaceSpikeNoise)"),
    DegradationInfo(D.GIBBS, {"alpha": [0.3, 0.6]}, "MR", "Gibbs ringing (MONAI GibbsNoise)"),
    DegradationInfo(D.MOTION, {"n_movements": 1, "max_rotation_deg": 3.0,
                               "max_translation_vox": 3.0, "pe_axis": 0}, "MR",
                    "rigid motion between k-space phase-encode lines"),
    DegradationInfo(D.GHOSTING, {"num_ghosts": [2, 6], "intensity": [0.3, 0.8], "pe_axis": 0,
                                 "restore": 0.02}, "MR",
                    "periodic k-space line modulation along phase-encode"),
    DegradationInfo(D.BIAS_FIELD, {"degree": 3, "coeff_range": [-0.3, 0.3]}, "MR",
                    "smooth multiplicative Legendre bias field", ("coeff_range",)),
    DegradationInfo(D.THICK_SLICE, {"factor": 2.0, "axis": -1, "profile": "gaussian",
                                    "resample": "thick"}, "any",
                    "slice-profile averaging then resampling to thick slices",
                    choices={"profile": _PROFILES, "resample": ("thick", "original")},
                    aliases={"profile": {k: v.value for k, v in PROFILE_ALIASES.items()}}),
    DegradationInfo(D.KSPACE_TRUNCATION, {"factor": 2.0, "axes": None, "mode": "zerofill"}, "MR",
                    "in-plane k-space truncation (MR low resolution)", ("axes",),
                    choices={"mode": ("zerofill", "crop")}),
]}

#: Degradations that change the voxel grid (not noise: SR's ``task.degradation`` refuses them).
GEOMETRIC = frozenset({D.THICK_SLICE.value, D.KSPACE_TRUNCATION.value})

#: Plausible noise standard deviations per unit (upper end of a preset's range): below the low
#: bound the noise is invisible, above the high bound it buries the anatomy. CT quantum noise in
#: soft tissue is ~5-60 HU; MR/normalised presets use a few percent of the intensity window.
PLAUSIBLE_SIGMA = {NoiseUnits.WINDOW: (1e-3, 0.5), NoiseUnits.HU: (1.0, 500.0)}

__all__ = ["CATALOG", "GEOMETRIC", "PLAUSIBLE_SIGMA", "DegradationInfo"]
