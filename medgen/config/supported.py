"""Every name medgen accepts, in one place (CAREamics' ``config/support`` habit).

Configs type their fields with these enums (through :func:`medgen.config.fields.choice`, which adds
aliases and "did you mean" errors) and the registries register their built-ins under them, so a
name cannot drift between a YAML file, a registry and the docs. ``tests/config`` checks that each
registry's built-ins and each enum agree.

Third-party plugins may add models, tasks, degradations and engines through entry points; those
names are accepted by the registries without being listed here.
"""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10: the same behaviour (str members, str() is the value)
    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


class SupportedTask(StrEnum):
    """Training tasks (``task.name``); each has its own config section (``medgen.train.config``)."""

    DENOISE = "denoise"
    SR = "sr"
    SYNTH = "synth"
    TRANSLATE = "translate"


class SupportedModel(StrEnum):
    """Built-in model families (``model.name``; ``medgen.models.registry``)."""

    VAE = "vae"
    UNET = "unet"
    VAE_GEN = "vae-gen"
    LDM = "ldm"
    RRDB_SR = "rrdb_sr"
    PIX2PIX = "pix2pix"
    CYCLEGAN = "cyclegan"


class TrainMode(StrEnum):
    """Denoising supervision: clean targets (simulated noise) or blind-spot self-supervision."""

    SUPERVISED = "supervised"
    SELF_SUPERVISED = "self-supervised"


class SupportedEngine(StrEnum):
    """Batch-inference engines (``--engine``)."""

    LOCAL = "local"
    DASK = "dask"


class SupportedDeviceKind(StrEnum):
    """Device kinds (``device``, ``--device``); ``cuda:N`` picks a GPU by index."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class SupportedAmp(StrEnum):
    """Mixed precision on CUDA (never on CPU)."""

    AUTO = "auto"
    OFF = "off"
    BF16 = "bf16"
    FP16 = "fp16"


class SupportedOutputFormat(StrEnum):
    """Output formats of the inference commands (``auto``: the input's)."""

    AUTO = "auto"
    NIFTI = "nifti"
    DICOM = "dicom"


class SupportedObjective(StrEnum):
    """Diffusion training objectives (``synth.diffusion.objective``)."""

    DDPM = "ddpm"
    RFLOW = "rflow"


class SupportedSampler(StrEnum):
    """Diffusion samplers (``synth.diffusion.sampler``, ``--sampler``)."""

    DDPM = "ddpm"
    DDIM = "ddim"
    RFLOW = "rflow"


class SupportedProfile(StrEnum):
    """Through-plane slice profiles of thick-slice simulation (``sr.profile``).

    ``rect``: the slab average of real thick-slice CT (alias ``rectangular``, ``box``);
    ``gaussian``: a Gaussian of FWHM = slice spacing (typical of MR slice selection).
    """

    GAUSSIAN = "gaussian"
    RECT = "rect"


PROFILE_ALIASES = {"rectangular": SupportedProfile.RECT, "box": SupportedProfile.RECT}


class SupportedDegradation(StrEnum):
    """Built-in degradations of presets (``medgen.transforms.catalog``)."""

    GAUSSIAN = "gaussian"
    RICIAN = "rician"
    CT_LOWDOSE = "ct_lowdose"
    KSPACE_SPIKE = "kspace_spike"
    GIBBS = "gibbs"
    MOTION = "motion"
    GHOSTING = "ghosting"
    BIAS_FIELD = "bias_field"
    THICK_SLICE = "thick_slice"
    KSPACE_TRUNCATION = "kspace_truncation"


class PresetModality(StrEnum):
    """What a degradation preset is for (``modality:`` in a preset file)."""

    ANY = "any"
    CT = "CT"
    MR = "MR"


class NoiseUnits(StrEnum):
    """Units of a preset's noise levels (``units:`` in a preset file).

    ``window``: a fraction of the normalised intensity window (the image as the model sees it,
    0..1); ``HU``: Hounsfield units, applied to CT in physical units before normalisation.
    """

    WINDOW = "window"
    HU = "HU"


class SupportedStepKind(StrEnum):
    """Pipeline step kinds (``steps[].kind``; ``medgen.pipeline.spec``)."""

    SAMPLE_DATA = "sample-data"
    DEID = "deid"
    MANIFEST = "manifest"
    DEGRADE = "degrade"
    TRAIN = "train"
    DENOISE = "denoise"
    UPSCALE = "upscale"
    TRANSLATE = "translate"
    SYNTHESIZE = "synthesize"
    EVALUATE = "evaluate"
    AUDIT = "audit"


__all__ = [
    "PROFILE_ALIASES",
    "StrEnum",
    "NoiseUnits",
    "PresetModality",
    "SupportedAmp",
    "SupportedDegradation",
    "SupportedDeviceKind",
    "SupportedEngine",
    "SupportedModel",
    "SupportedObjective",
    "SupportedOutputFormat",
    "SupportedProfile",
    "SupportedSampler",
    "SupportedStepKind",
    "SupportedTask",
    "TrainMode",
]
