"""Synthetic training sets: sampling pipeline, export, memorization check and quality report.

* :func:`medgen.synth.sampling.synthesize` - generate N samples from a checkpoint (per-sample
  seeds), check them for memorization, export NIfTI/DICOM and a ``synthetic: true`` manifest;
* :func:`medgen.synth.memorization.check_memorization` - nearest-training-sample distances against a
  calibrated threshold;
* :func:`medgen.synth.quality.quality_report` - MMD, MS-SSIM diversity, histogram distance,
  classifier two-sample test and (with a local extractor) FID, on two lists of volumes.

Torch-free at import.
"""

from medgen.synth.config import SynthTrainConfig

__all__ = ["SynthTrainConfig"]
