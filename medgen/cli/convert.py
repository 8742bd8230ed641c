"""``medgen convert SRC DST`` and ``medgen info SRC``."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def convert(
    src: Path = typer.Argument(..., exists=True, help="DICOM series folder, DICOM file or NIfTI file."),
    dst: Path = typer.Argument(..., help="Output: *.nii / *.nii.gz, or a folder for a DICOM series."),
    allow_uneven: bool = typer.Option(False, "--allow-uneven", help="Resample series with missing slices / uneven spacing."),
    digest: str = typer.Option("convert", "--digest", help="What made the data (for derived DICOM UIDs)."),
):
    """Convert between DICOM and NIfTI, keeping world geometry."""
    from medgen.cli._common import fail
    from medgen.errors import MedgenError
    from medgen.io import read_volume, write_volume

    try:
        vol = read_volume(src, root=src if src.is_dir() else src.parent, allow_uneven=allow_uneven)
        out = write_volume(vol, dst, digest=digest, derivation="format conversion by medgen")
    except MedgenError as exc:
        fail(exc, 3)
    typer.echo(json.dumps({"input": vol.describe(), "output": {"format": out["format"], "path": str(dst)}}))


def info(src: Path = typer.Argument(..., exists=True, help="DICOM series folder, DICOM file or NIfTI file.")):
    """Print a volume's PHI-free description (shape, spacing, orientation, modality)."""
    from medgen.cli._common import fail
    from medgen.errors import MedgenError
    from medgen.io import read_volume

    try:
        vol = read_volume(src, root=src if src.is_dir() else src.parent)
    except MedgenError as exc:
        fail(exc, 3)
    typer.echo(json.dumps(vol.describe()))
