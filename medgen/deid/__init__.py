"""De-identification of DICOM, NIfTI and BIDS sidecars, driven by DICOM PS3.15 Table E.1-1.

Public API::

    from medgen.deid import deidentify, verify
    from medgen.keys import load_key

    report = deidentify("in/", "out/", key=load_key("medgen.key"),
                        options=("retain-long-modified-dates",), workers=2)
    assert verify("out/", original="in/", options=report.options).ok

See docs/deid.md for the profile, the action-resolution rules and the audit log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["DeidReport", "VerifyReport", "deidentify", "option_names", "verify"]

if TYPE_CHECKING:  # pragma: no cover
    from medgen.deid.run import DeidReport
    from medgen.deid.verifier import VerifyReport


def deidentify(src, dst, *, key, options=(), workers: int = 1, pixel_rules=None,
               verify: bool = True, audit=None, progress=None, ocr: bool = True,
               blank_unsure: bool = False) -> DeidReport:
    """De-identify ``src`` into ``dst``; see :func:`medgen.deid.run.deidentify`."""
    from medgen.deid.run import deidentify as _run

    return _run(src, dst, key=key, options=options, workers=workers, pixel_rules=pixel_rules,
                verify=verify, audit=audit, progress=progress, ocr=ocr,
                blank_unsure=blank_unsure)


def verify(dst, original=None, options=(), pixels: bool = False) -> VerifyReport:
    """Independent scan of ``dst``; see :func:`medgen.deid.verifier.verify`."""
    from medgen.deid.verifier import verify as _verify

    return _verify(dst, original=original, options=options, pixels=pixels)


def option_names() -> list[str]:
    from medgen.deid.table import option_names as _o

    return _o()


def __getattr__(name: str):
    if name == "DeidReport":
        from medgen.deid.run import DeidReport

        return DeidReport
    if name == "VerifyReport":
        from medgen.deid.verifier import VerifyReport

        return VerifyReport
    raise AttributeError(name)
