"""Shared helpers for the audit tests: tiny phantom data sets and ``medgen`` subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

TINY_TRAIN = """version: 2
task: {{name: denoise}}
seed: 0
deterministic: true
checkpoint_every: 1
output_dir: runs
model: {{name: unet, spatial_dims: 3, channels: [4, 8], num_res_units: 1}}
data: {{manifest: {manifest}, patch_size: [16, 16, 16], batch_size: 2}}
optim: {{max_steps: {steps}}}
val: {{every_steps: {val}, images: false}}
tracking: {{experiment: medgen-train}}
"""


def phantom_manifest(folder: Path, n: int = 3) -> Path:
    """``n`` brain phantoms (NIfTI) under ``folder/vols`` and a train/val manifest ``folder/m.jsonl``."""
    from medgen.data import brain_phantom
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest

    for i in range(n):
        write_nifti(Volume(brain_phantom((20, 20, 16), seed=i) * 100, np.eye(4), {}),
                    folder / "vols" / f"sub-{i}.nii.gz")
    m = split_manifest(build_manifest(folder / "vols", Key(b"a" * 32, "t")).manifest,
                       {"train": 0.67, "val": 0.33}, seed=0)
    m.write(folder / "m.jsonl")
    return folder / "m.jsonl"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a ``medgen`` subprocess: no tracking URI or run id inherited."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}
    env.update(extra)
    return env


def medgen(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    return subprocess.run([sys.executable, "-m", "medgen", *args], capture_output=True, text=True,
                          cwd=cwd, env=env or clean_env(), timeout=timeout)
