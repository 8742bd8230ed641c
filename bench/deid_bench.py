"""Benchmark ``medgen deid`` against dicognito and dicom-anonymizer on real-size images.

    python bench/deid_bench.py [--n 300] [--benchlibs /tmp/benchlibs] [--repeat 2]

Three sets of files, each made from a real image nobody on the team wrote, copied N times with
varied names, IDs, dates and UIDs (flat folders: dicom-anonymizer does not recurse):

* ``ct512``  - pydicom's ``693_UNCI.dcm``, a real 512x512 CT slice (uncompressed);
* ``ct256``  - the same slice's real pixels resampled to 256x256 (2x2 block mean), the header
  kept (Rows/Columns/PixelSpacing updated);
* ``mf512``  - pydicom's ``eCT_Supplemental.dcm``, a real enhanced multi-frame CT (2 frames of
  512x512).

Each tool runs in its own subprocess on the same input (one process each; medgen with its
defaults: verification on), runs are interleaved (medgen, dicognito, dicom-anonymizer, medgen,
...) and the fastest of ``--repeat`` is kept, so the ratios survive a loaded machine. Wall time
includes start-up; peak RSS of the process tree by psutil polling. Also measured: ``medgen deid
verify OUT --original IN`` (the standalone verifier) against the de-identification's time, and
medgen's peak RSS on N/4 files (memory flat in N). The baselines are NEVER medgen dependencies:

    pip install --no-deps --target /tmp/benchlibs dicognito dicom-anonymizer tqdm
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _base(kind: str):
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    if kind == "mf512":
        return pydicom.dcmread(get_testdata_file("eCT_Supplemental.dcm"))
    ds = pydicom.dcmread(get_testdata_file("693_UNCI.dcm"))
    if kind == "ct256":
        a = ds.pixel_array
        small = a.astype(np.float64).reshape(256, 2, 256, 2).mean(axis=(1, 3)).round()
        ds.PixelData = small.astype(a.dtype).tobytes()
        ds.Rows = ds.Columns = 256
        if "PixelSpacing" in ds:
            ds.PixelSpacing = [float(v) * 2 for v in ds.PixelSpacing]
    return ds


def generate(folder: Path, n: int, kind: str = "ct512") -> str:
    """Write ``n`` copies of the set's real image; return its size description."""
    base = _base(kind)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        ds = base.copy()
        pat = i // 10
        ds.PatientName = f"Doe{pat}^John{pat}"
        ds.PatientID = f"MRN{pat:07d}"
        ds.AccessionNumber = f"ACC{i:08d}"
        ds.StudyDate = f"2019{1 + pat % 12:02d}{1 + pat % 28:02d}"
        ds.InstitutionName = "Bench General Hospital"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{pat}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{pat}.1"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{pat}.1.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(folder / f"img{i:05d}.dcm", enforce_file_format=True)
    frames = int(base.get("NumberOfFrames", 1) or 1)
    return f"{base.Rows}x{base.Columns}x{frames} frame(s) {base.Modality}"


def measure(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB of the process tree, return code)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss
                                             for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.01)
    dt = time.perf_counter() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode not in (0, 3):
        print(f"  ! {cmd[2] if len(cmd) > 2 else cmd[0]} exited {proc.returncode}: "
              f"{err.strip().splitlines()[-1:] }", file=sys.stderr)
    return dt, peak / 2**20, proc.returncode


def importable(mod: str, env: dict[str, str]) -> bool:
    r = subprocess.run([sys.executable, "-c", f"import {mod}"], env=env, capture_output=True)
    return r.returncode == 0


def count(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file() and "_deid" not in p.parts)


def _runs(py: str, src: Path, tmp: Path, menv: dict, benv: dict) -> list[tuple]:
    return [
        ("medgen deid (1 process)", [py, "-m", "medgen", "deid", str(src), str(tmp / "o1")],
         menv, "medgen", tmp / "o1"),
        ("dicognito", [py, "-m", "dicognito", "--quiet", "--output-directory",
                       str(tmp / "o3"), str(src)], benv, "dicognito", tmp / "o3"),
        ("dicom-anonymizer", [py, "-c", "import sys; from dicomanonymizer.anonymizer "
                              "import main; sys.exit(main())", str(src), str(tmp / "o4")],
         benv, "dicomanonymizer", tmp / "o4"),
    ]


def bench_set(kind: str, a, tmp: Path, menv: dict, benv: dict) -> None:
    src, small = tmp / f"in_{kind}", tmp / f"in_{kind}_quarter"
    desc = generate(src, a.n, kind)
    generate(small, max(a.n // 4, 1), kind)
    size = sum(p.stat().st_size for p in src.rglob("*.dcm")) / 2**20
    print(f"\n## {kind}: {a.n} files of {desc} ({size:.1f} MiB)")
    py = sys.executable
    runs = _runs(py, src, tmp, menv, benv)
    avail = {name: importable(mod, env) for name, _c, env, mod, _o in runs}
    best: dict[str, tuple[float, float, int]] = {}
    vbest = None
    for _ in range(a.repeat):
        for name, cmd, env, _mod, out in runs:
            if not avail[name]:
                continue
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            dt, rss, _rc = measure(cmd, env)
            prev = best.get(name)
            if prev is None or dt < prev[0]:
                best[name] = (dt, max(rss, prev[1] if prev else 0), count(out))
            if name.startswith("medgen"):
                vdt, _vr, vrc = measure([py, "-m", "medgen", "deid", "verify", str(out),
                                         "--original", str(src)], menv)
                if vrc == 0:
                    vbest = vdt if vbest is None else min(vbest, vdt)
    dcg = best.get("dicognito")
    print(f"{'tool':28s} {'files':>6s} {'seconds':>8s} {'files/s':>8s} {'peak RSS MiB':>13s} "
          f"{'x dicognito':>11s}")
    for name, *_ in runs:
        if name not in best:
            print(f"{name:28s} {'not installed':>40s}")
            continue
        dt, rss, n_out = best[name]
        ratio = f"{dcg[0] / dt:.2f}" if dcg else "n/a"
        print(f"{name:28s} {n_out:6d} {dt:8.2f} {a.n / dt:8.1f} {rss:13.1f} {ratio:>11s}")
    md = best.get("medgen deid (1 process)")
    if md and vbest:
        print(f"verifier: medgen deid verify --original {vbest:.2f} s = {vbest / md[0]:.2f} x the "
              "de-identification's time (goal <= 0.5)")
    if md:
        _dt, rss_s, _ = measure([py, "-m", "medgen", "deid", str(small), str(tmp / "o5")], menv)
        print(f"memory: medgen peak RSS {rss_s:.1f} MiB at {max(a.n // 4, 1)} files vs "
              f"{md[1]:.1f} MiB at {a.n} files (ratio {md[1] / rss_s:.2f})")
        shutil.rmtree(tmp / "o5", ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="medgen deid benchmark")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--benchlibs", default=os.environ.get("MEDGEN_BENCHLIBS", "/tmp/benchlibs"))
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs per tool, interleaved; the fastest is reported (shared machines)")
    ap.add_argument("--sets", default="ct512,ct256,mf512")
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="deid-bench-"))
    try:
        from medgen.keys import create_key_file

        keyf = tmp / "bench.key"
        create_key_file(keyf)
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        base_env["OMP_NUM_THREADS"] = "1"
        menv = {**base_env, "MEDGEN_KEY_FILE": str(keyf)}
        if "PYTHONPATH" in os.environ:  # a worktree run: medgen from there
            menv["PYTHONPATH"] = os.environ["PYTHONPATH"]
        benv = {**base_env, "PYTHONPATH": a.benchlibs}
        print(f"# python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), best of {a.repeat} "
              "interleaved runs, one process per tool")
        for kind in a.sets.split(","):
            bench_set(kind, a, tmp, menv, benv)
            for p in tmp.iterdir():
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
