"""Benchmark ``medgen deid`` against dicognito and dicom-anonymizer on the same generated files.

    python bench/deid_bench.py [--n 1000] [--benchlibs /tmp/benchlibs] [--workers 2]

Generates N small DICOM files (copies of pydicom's CT_small / MR_small with varied names, IDs,
dates and UIDs) into a temporary folder, then runs each tool in its own subprocess on the same
input, measuring wall time (files/s, process start-up included) and peak RSS of the process tree
(psutil polling every 10 ms). medgen runs with its defaults (verification on). The baselines are
NEVER medgen dependencies: install them only for the bench, e.g.

    pip install --no-deps --target /tmp/benchlibs dicognito dicom-anonymizer tqdm

and pass ``--benchlibs /tmp/benchlibs`` (added to PYTHONPATH of their subprocesses only). A tool
that is not importable is reported as "not installed". Memory flatness: medgen's peak RSS is also
measured on the first quarter of the files.
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


def generate(folder: Path, n: int) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    bases = [pydicom.dcmread(get_testdata_file(f)) for f in ("CT_small.dcm", "MR_small.dcm")]
    for i in range(n):
        ds = bases[i % 2].copy()
        pat = i // 10
        ds.PatientName = f"Doe{pat}^John{pat}"
        ds.PatientID = f"MRN{pat:07d}"
        ds.AccessionNumber = f"ACC{i:08d}"
        ds.StudyDate = f"2019{1 + pat % 12:02d}{1 + pat % 28:02d}"
        ds.InstitutionName = "Bench General Hospital"
        ds.StudyInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{pat}"
        ds.SeriesInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{pat}.{i % 2}"
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.2.1125.9.{pat}.{i % 2}.{i}"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        folder.mkdir(parents=True, exist_ok=True)  # flat: dicom-anonymizer does not recurse
        ds.save_as(folder / f"img{i:05d}.dcm", enforce_file_format=True)


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="medgen deid benchmark")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--benchlibs", default=os.environ.get("MEDGEN_BENCHLIBS", "/tmp/benchlibs"))
    ap.add_argument("--workers", type=int, default=2, help="extra medgen row with N processes")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs per tool, interleaved; the fastest is reported (shared machines)")
    a = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="deid-bench-"))
    try:
        src, small = tmp / "in", tmp / "in_quarter"
        generate(src, a.n)
        generate(small, a.n // 4)
        from medgen.keys import create_key_file

        keyf = tmp / "bench.key"
        create_key_file(keyf)
        base_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        medgen_env = {**base_env, "MEDGEN_KEY_FILE": str(keyf)}
        bl_env = {**base_env, "PYTHONPATH": a.benchlibs}
        py = sys.executable
        runs = [
            ("medgen deid (1 process)", [py, "-m", "medgen", "deid", str(src), str(tmp / "o1")],
             medgen_env, "medgen", tmp / "o1"),
            (f"medgen deid --workers {a.workers}",
             [py, "-m", "medgen", "deid", str(src), str(tmp / "o2"), "--workers", str(a.workers)],
             medgen_env, "medgen", tmp / "o2"),
            ("dicognito", [py, "-m", "dicognito", "--quiet", "--output-directory",
                           str(tmp / "o3"), str(src)], bl_env, "dicognito", tmp / "o3"),
            ("dicom-anonymizer", [py, "-c", "import sys; from dicomanonymizer.anonymizer "
                                  "import main; sys.exit(main())", str(src), str(tmp / "o4")],
             bl_env, "dicomanonymizer", tmp / "o4"),
        ]
        rows = []
        print(f"# {a.n} files ({sum(p.stat().st_size for p in src.rglob('*.dcm')) / 2**20:.1f} "
              f"MiB), python {sys.version.split()[0]}, {os.cpu_count()} CPU(s), best of "
              f"{a.repeat} interleaved runs")
        avail = {name: importable(mod, env) for name, _c, env, mod, _o in runs}
        best: dict[str, tuple[float, float, int]] = {}
        for _ in range(a.repeat):
            for name, cmd, env, _mod, out in runs:
                if not avail[name]:
                    continue
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                dt, rss, _rc = measure(cmd, env)
                prev = best.get(name)
                n_out = count(out)
                if prev is None or dt < prev[0]:
                    best[name] = (dt, max(rss, prev[1] if prev else 0), n_out)
        for name, *_ in runs:
            if name not in best:
                rows.append((name, None, None, None, 0))
            else:
                dt, rss, n_out = best[name]
                rows.append((name, dt, a.n / dt, rss, n_out))
        dcg = next((r[2] for r in rows if r[0] == "dicognito" and r[2]), None)
        print(f"{'tool':28s} {'files':>6s} {'seconds':>8s} {'files/s':>8s} {'peak RSS MiB':>13s} "
              f"{'x dicognito':>11s}")
        for name, dt, fps, rss, n_out in rows:
            if dt is None:
                print(f"{name:28s} {'not installed':>40s}")
                continue
            ratio = f"{fps / dcg:.2f}" if dcg else "n/a"
            print(f"{name:28s} {n_out:6d} {dt:8.2f} {fps:8.1f} {rss:13.1f} {ratio:>11s}")
        dt_s, rss_s, _ = measure([py, "-m", "medgen", "deid", str(small), str(tmp / "o5")],
                                 medgen_env)
        rss_l = next(r[3] for r in rows if r[0].startswith("medgen deid (1"))
        print(f"memory: medgen peak RSS {rss_s:.1f} MiB at {a.n // 4} files vs {rss_l:.1f} MiB at "
              f"{a.n} files (ratio {rss_l / rss_s:.2f})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
