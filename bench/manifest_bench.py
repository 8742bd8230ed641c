"""Benchmark: `medgen manifest build` over >= 1,000 small DICOM files.

Baselines measured in the same run, on the same files:
  * floor  - reading every header with pydicom (stop_before_pixels) and sha256 of every file,
             nothing else: the least any manifest builder must do;
  * medgen - the real CLI (`python -m medgen manifest build`), interpreter start-up included.

Files: 50 series x 20 slices made from pydicom's real CT_small.dcm (positions, UIDs and
identifiers varied), i.e. 1,000 files of ~39 kB.  Target (issue 2): medgen < 10 s here.
Usage: python bench/manifest_bench.py [--series 50 --slices 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_tree(root: Path, n_series: int, n_slices: int) -> int:
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    n = 0
    for s in range(n_series):
        series_uid = generate_uid()
        study_uid = generate_uid()
        folder = root / f"series{s:03d}"
        folder.mkdir(parents=True)
        for k in range(n_slices):
            ds = base.copy()
            ds.PatientID = f"BENCH{s // 2:04d}"
            ds.PatientName = f"BENCH^PATIENT{s // 2:04d}"
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid()
            ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 5.0 * k]
            ds.InstanceNumber = k + 1
            ds.save_as(folder / f"IM{k:04d}.dcm")
            n += 1
    return n


def floor_baseline(root: Path) -> float:
    import pydicom

    t0 = time.perf_counter()
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            pydicom.dcmread(p, stop_before_pixels=True)
            hashlib.sha256(p.read_bytes()).hexdigest()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--series", type=int, default=50)
    ap.add_argument("--slices", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = make_tree(tmp / "src", args.series, args.slices)
        (tmp / "key").write_text("ab" * 32)
        env = dict(os.environ, MEDGEN_KEY_FILE=str(tmp / "key"))
        floor = floor_baseline(tmp / "src")
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "medgen", "manifest", "build", str(tmp / "src"),
                            "-o", str(tmp / "m.jsonl"), "-q"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            sys.exit(f"medgen failed: {r.stderr}")
        n_rec = sum(1 for _ in open(tmp / "m.jsonl"))
    result = {"files": n, "records": n_rec, "floor_s": round(floor, 3), "medgen_s": round(wall, 3),
              "medgen_files_per_s": round(n / wall, 1), "ratio_medgen_vs_floor": round(wall / floor, 2),
              "target_s": 10.0, "target_met": wall < 10.0}
    print(f"{'what':<34}{'seconds':>10}{'files/s':>10}")
    print(f"{'floor (header read + sha256)':<34}{floor:>10.2f}{n / floor:>10.0f}")
    print(f"{'medgen manifest build (CLI)':<34}{wall:>10.2f}{n / wall:>10.0f}")
    print(f"ratio medgen/floor = {wall / floor:.2f}x; {n} files -> {n_rec} records; "
          f"target < 10 s: {'met' if wall < 10 else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
