"""Paired evaluation: outputs vs clean references (and the degraded inputs as a baseline).

Files are matched by their path relative to each root (outputs mirror their inputs' tree).
PSNR uses the reference's intensity range; SSIM uses MONAI's metric with a window that fits small
volumes. Values are in the references' physical units (HU for CT).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _pairs(reference: Path, outputs: Path) -> list[tuple[str, Path, Path]]:
    from medgen.io.dicom_read import iter_files, looks_like_nifti

    out = []
    for f in iter_files(outputs):
        if looks_like_nifti(f):
            rel = f.relative_to(outputs).as_posix()
            ref = reference / rel
            if ref.exists():
                out.append((rel, ref, f))
    return sorted(out)


def evaluate_paired(reference: str | Path, outputs: str | Path, inputs: str | Path | None = None,
                    *, mae: bool = False) -> dict:
    """Per-item and mean PSNR/SSIM (and MAE) of ``outputs`` vs ``reference``; with ``inputs``
    (the degraded volumes) the same for the inputs, so the gain is visible."""
    from medgen.io import read_volume
    from medgen.train.validation import psnr_ssim

    reference, outputs = Path(reference), Path(outputs)
    rows = []
    for rel, ref_p, out_p in _pairs(reference, outputs):
        ref = read_volume(ref_p).array.astype(np.float32)
        out = read_volume(out_p).array.astype(np.float32)
        if ref.shape != out.shape:
            rows.append({"item": rel, "error": f"shape {out.shape} != reference {ref.shape}"})
            continue
        y = torch.from_numpy(ref)[None, None]
        row = {"item": rel}
        row["psnr"], row["ssim"] = psnr_ssim(torch.from_numpy(out)[None, None], y, 3)
        if mae:
            row["mae"] = float(np.abs(out - ref).mean())
        if inputs is not None and (Path(inputs) / rel).exists():
            inp = read_volume(Path(inputs) / rel).array.astype(np.float32)
            row["psnr_input"], row["ssim_input"] = psnr_ssim(torch.from_numpy(inp)[None, None], y, 3)
            if mae:
                row["mae_input"] = float(np.abs(inp - ref).mean())
        rows.append(row)
    good = [r for r in rows if "error" not in r]
    summary = {"n": len(good), "n_errors": len(rows) - len(good)}
    for k in ("psnr", "ssim", "mae", "psnr_input", "ssim_input", "mae_input"):
        vals = [r[k] for r in good if k in r]
        if vals:
            summary[k] = float(np.mean(vals))
    if "psnr_input" in summary:
        summary["psnr_gain"] = summary["psnr"] - summary["psnr_input"]
        summary["ssim_gain"] = summary["ssim"] - summary["ssim_input"]
    return {"summary": summary, "items": rows}
