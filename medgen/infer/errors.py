"""Errors of the inference core, by what the batch job does with them.

* :class:`UnsuitableInputError` - the input cannot go through this model (channels, a 2D image
  through a 3D model, a 4D series, an output grid that does not fit): the item is quarantined.
* :class:`TransientInferenceError` - out of memory even after every step-down: retried with
  backoff (memory may free up), then failed.

Everything else is classified in :func:`medgen.infer.attempt.classify`.
"""

from __future__ import annotations

from medgen.errors import MedgenError


class UnsuitableInputError(MedgenError):
    """The input cannot go through this model (channels, dimensions). Quarantined, not retried."""


class TransientInferenceError(MedgenError):
    """Out of memory even after every step-down; retried (memory may free up)."""
