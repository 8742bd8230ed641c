"""Small manifests (generated phantoms): unsplit (fresh from build), split, and split without val."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

_REPORT = """
import json, sys, time
t0 = time.perf_counter()
from medgen.cli import main
sys.argv = ["medgen"] + json.loads(sys.argv[1])
code = 0
try:
    main()
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
heavy = sorted(m for m in ("torch", "monai", "mlflow") if m in sys.modules)
print("__REPORT__" + json.dumps({"code": code, "heavy": heavy,
                                 "seconds": time.perf_counter() - t0}))
"""


def medgen(*args, cwd, timeout=600):
    """Run the CLI in a fresh interpreter; returns (report, stdout without it, stderr).

    ``report``: exit code, the heavy modules imported by then, seconds from the command's start
    (after the interpreter started)."""
    r = subprocess.run([sys.executable, "-c", _REPORT, json.dumps([str(a) for a in args])],
                       capture_output=True, text=True, cwd=cwd, timeout=timeout)
    lines = r.stdout.splitlines()
    rep = next((json.loads(ln[len("__REPORT__"):]) for ln in reversed(lines)
                if ln.startswith("__REPORT__")), None)
    assert rep is not None, r.stderr[-2000:]
    out = "\n".join(ln for ln in lines if not ln.startswith("__REPORT__"))
    return rep, out, r.stderr


@pytest.fixture(scope="session")
def manifests(tmp_path_factory):
    """{"unsplit": path, "split": path, "noval": path} over 4 phantom subjects."""
    import numpy as np

    from medgen.data import brain_phantom
    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.keys import Key
    from medgen.manifest.build import build_manifest
    from medgen.manifest.ops import split_manifest

    root = tmp_path_factory.mktemp("phantoms")
    for i in range(4):
        arr = brain_phantom((24, 28, 20), seed=i) * 1000
        write_nifti(Volume(arr.astype(np.float32), Volume.make_affine([1, 1, 1.2]), {}),
                    root / f"sub-{i:02d}_T1w.nii.gz")
    m = build_manifest(root, Key(b"k" * 32, "test")).manifest
    out = {"unsplit": root / "fresh.jsonl", "split": root / "split.jsonl",
           "noval": root / "noval.jsonl"}
    m.write(out["unsplit"])
    split_manifest(m, {"train": 0.5, "val": 0.5}, seed=0).write(out["split"])
    split_manifest(m, {"train": 1.0}, seed=0).write(out["noval"])
    return out


@pytest.fixture
def tiny_yaml(tmp_path):
    """Write a tiny denoise config (version 2) pointing at ``manifest``; returns its path."""

    def make(manifest, **extra) -> Path:
        import yaml

        cfg = {
            "version": 2, "task": {"name": "denoise"}, "seed": 0, "deterministic": True,
            "output_dir": str(tmp_path / "runs"), "checkpoint_every": 1,
            "model": {"name": "unet", "spatial_dims": 3, "channels": [4, 8], "num_res_units": 1},
            "data": {"manifest": str(manifest), "patch_size": [16, 16, 16], "batch_size": 1},
            "optim": {"max_steps": 1},
            "val": {"every_steps": 1, "max_volumes": 1, "images": False},
            "tracking": {"enabled": False},
            **extra,
        }
        p = tmp_path / "tiny.yaml"
        p.write_text(yaml.safe_dump(cfg))
        return p

    return make
