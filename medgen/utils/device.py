"""The one place that turns ``--device`` / ``--amp`` strings into torch devices and autocast dtypes.

Train, infer and synth all go through here, so ``auto`` means the same thing everywhere:

* device ``auto`` -> the current CUDA device when CUDA is available, else the CPU; ``cpu``;
  ``cuda`` (the current CUDA device) or ``cuda:N`` (checked against the visible count). Anything
  else is a :class:`~medgen.errors.ConfigError` (exit 2) naming the option.
* AMP only on CUDA (no speed-up for convolutions on the CPU): ``auto`` -> bf16 where the GPU
  supports it, else fp16; ``bf16``; ``fp16``; ``off`` -> full precision.

:func:`check_device_text` and :func:`check_amp_text` validate the strings without importing torch,
so settings objects can refuse a bad value before any heavy set-up starts.
"""

from __future__ import annotations

import contextlib
import re
from typing import TYPE_CHECKING, Any

from medgen.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import torch

AMP_MODES = ("auto", "bf16", "fp16", "off")
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d{1,3})?)$")


def check_device_text(spec: str | None, *, where: str = "--device") -> str:
    """Normalise and validate a device string without importing torch; returns it lower-cased."""
    text = (spec or "auto").strip().lower()
    if not _DEVICE_RE.match(text):
        raise ConfigError(where, f"'{spec}': use auto, cpu, cuda or cuda:N")
    return text


def check_amp_text(amp: str | None, *, where: str = "--amp") -> str:
    """Validate an AMP mode string (``auto``, ``bf16``, ``fp16``, ``off``) without torch."""
    text = (amp or "auto").strip().lower()
    if text not in AMP_MODES:
        from medgen.registry import suggest

        raise ConfigError(where, f"'{amp}'{suggest(text, AMP_MODES)}: use {', '.join(AMP_MODES)}")
    return text


def resolve_device(spec: str | None, *, where: str = "--device") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; checks that ``cuda:N`` exists."""
    import torch

    text = check_device_text(spec, where=where)
    if text == "auto":
        return (torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available()
                else torch.device("cpu"))
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(where, f"'{text}' asked for but CUDA is not available "
                          "(use --device cpu or auto)")
    dev = torch.device(text)
    idx = dev.index if dev.index is not None else torch.cuda.current_device()
    if idx >= torch.cuda.device_count():
        raise ConfigError(where, f"'{text}': only {torch.cuda.device_count()} GPU(s) visible")
    return torch.device("cuda", idx)


def resolve_amp(amp: str | None, device: torch.device | str) -> Any:
    """The autocast dtype for ``amp`` on ``device`` (None: full precision; always None on CPU)."""
    import torch

    mode = check_amp_text(amp)
    dev_type = device.type if hasattr(device, "type") else torch.device(str(device)).type
    if dev_type != "cuda" or mode == "off":
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: torch.device | str, dtype: Any):
    """``torch.autocast`` on CUDA with ``dtype``; a no-op context on the CPU or without a dtype."""
    dev_type = device.type if hasattr(device, "type") else str(device).split(":")[0]
    if dtype is None or dev_type != "cuda":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type="cuda", dtype=dtype)
