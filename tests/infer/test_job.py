"""Batch jobs end to end: discovery, bad items, geometry, resume, retries, kill -9."""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medgen.cli import app
from medgen.errors import ConfigError
from medgen.infer.job import Job, discover_items
from medgen.infer.ledger import Ledger
from medgen.infer.predictor import PredictorSpec, VolumePredictor
from medgen.infer.settings import InferenceSettings
from medgen.utils.atomic import TMP_PREFIX

from .infer_helpers import write_phantom

CPU1 = InferenceSettings(device="cpu", threads=1)
REPO = Path(__file__).resolve().parents[2]


def _ledger_lines(dst: Path) -> list[dict]:
    return [json.loads(x) for x in (dst / "ledger.jsonl").read_text().splitlines() if x.strip()]


def _files(root: Path) -> dict[str, bytes]:
    skip = {"ledger.jsonl", "summary.json", "quarantine.jsonl", ".medgen-job.lock",
            "output_manifest.json", ".medgen-item-key"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def _temps(root: Path) -> list[Path]:
    return list(root.rglob(TMP_PREFIX + "*"))


# --------------------------------------------------------------------------- discovery


def test_discovery_layout_and_output_paths(mixed_tree, tmp_path):
    key = b"k" * 32
    items = {it.rel: it for it in discover_items(mixed_tree, tmp_path / "out", secret=key)}
    assert items["study1/ct5n"].kind == "dicom" and items["study1/ct5n"].out_rel == "study1/ct5n"
    assert len(items["study1/ct5n"].files) == 5  # the RT structure set is not part of the series
    assert items["nifti/a.nii.gz"].out_rel == "nifti/a.nii.gz"
    assert items["nifti/deep/b.nii.gz"].out_rel == "nifti/deep/b.nii.gz"
    assert "not an image (RT Structure Set Storage)" in items["study1/ct5n/rtstruct.dcm"].error
    assert items["bad/truncated"].kind == "dicom"  # header is fine; pixels are cut
    # ids are stable under one key, keyed (another key, other ids) and not paths
    again = {it.rel: it.id for it in discover_items(mixed_tree, tmp_path / "out", secret=key)}
    assert again == {k: v.id for k, v in items.items()}
    assert all(len(i) == 16 and "/" not in i for i in again.values())
    other = {it.rel: it.id for it in discover_items(mixed_tree, tmp_path / "out", secret=b"o" * 32)}
    assert set(other.values()).isdisjoint(again.values())
    # format conversion names
    conv = {it.rel: it for it in discover_items(mixed_tree, tmp_path / "o2", output_format="nifti")}
    assert conv["study1/ct5n"].out_rel == "study1/ct5n.nii.gz"
    conv = {it.rel: it for it in discover_items(mixed_tree, tmp_path / "o3", output_format="dicom")}
    assert conv["nifti/a.nii.gz"].out_rel == "nifti/a" and conv["nifti/a.nii.gz"].out_format == "dicom"


def test_series_folder_shared_with_other_items_gets_its_own_subfolder(tmp_path, ct5n_dir):
    src = tmp_path / "src"
    shutil.copytree(ct5n_dir, src / "pat")
    write_phantom(src / "pat" / "extra.nii.gz")  # a NIfTI inside the series folder
    items = {it.rel: it for it in discover_items(src, tmp_path / "dst")}
    series = items["pat"]
    assert series.out_rel == f"pat/series-{series.id[:8]}"
    assert items["pat/extra.nii.gz"].out_rel == "pat/extra.nii.gz"


def test_output_folder_must_not_overlap_the_input(tmp_path, nifti_tree):
    """DST may not be SRC, contain it, or lie inside it (in any direction, through links too)."""
    for dst in (nifti_tree, tmp_path, nifti_tree / "out", nifti_tree / "sub-00" / "deeper"):
        with pytest.raises(ConfigError, match="DST"):
            discover_items(nifti_tree, dst)
    (tmp_path / "via-link").symlink_to(nifti_tree, target_is_directory=True)
    with pytest.raises(ConfigError, match="DST"):
        discover_items(nifti_tree, tmp_path / "via-link" / "out")
    assert not (nifti_tree / "out").exists()  # refused before anything was created
    assert len(discover_items(nifti_tree, tmp_path / "elsewhere")) == 10


# --------------------------------------------------------------------------- bad items, geometry


def test_bad_items_reported_others_finish_geometry_kept(mixed_tree, tmp_path, tiny_ckpt):
    import SimpleITK as sitk

    dst = tmp_path / "out"
    res = CliRunner().invoke(app, ["denoise", "--model", str(tiny_ckpt), str(mixed_tree), str(dst),
                                   "--no-track", "--threads", "1", "--quiet"])
    assert res.exit_code == 3, res.output
    summary = json.loads([x for x in res.stdout.splitlines() if x.startswith("{")][-1])
    assert (summary["ok"], summary["quarantined"], summary["failed"]) == (3, 4, 0)
    err = res.stderr
    for name, why in [("bad/truncated/IM1.dcm", "pixel data"), ("bad/nan.nii.gz", "NaN"),
                      ("study1/ct5n/rtstruct.dcm", "RT Structure Set"),
                      ("study1/ctsmall", "2D image (128x128x1) refused: this is a 3D model")]:
        line = next(x for x in err.splitlines() if x.startswith("quarantined:") and name in x)
        assert why in line
    assert str(mixed_tree) not in res.output  # no absolute input paths in what is printed
    latest = Ledger(dst / "ledger.jsonl").latest
    assert sorted(e["status"] for e in latest.values()) == ["ok"] * 3 + ["quarantined"] * 4
    assert str(tmp_path) not in (dst / "ledger.jsonl").read_text()  # relative paths only
    q = [json.loads(x) for x in (dst / "quarantine.jsonl").read_text().splitlines()]
    assert {e["rel"] for e in q} == {"bad/truncated", "bad/nan.nii.gz", "study1/ct5n/rtstruct.dcm",
                                     "study1/ctsmall"}

    # NIfTI: same grid as the input, read back by SimpleITK
    for rel in ("nifti/a.nii.gz", "nifti/deep/b.nii.gz"):
        a, b = sitk.ReadImage(str(mixed_tree / rel)), sitk.ReadImage(str(dst / rel))
        assert a.GetSize() == b.GetSize()
        np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-5)
        np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    # DICOM: the derived series has the source series' geometry (SimpleITK/GDCM reads both)
    r = sitk.ImageSeriesReader()
    src_files = r.GetGDCMSeriesFileNames(str(mixed_tree / "study1" / "ct5n"))
    assert len(src_files) == 5
    a = sitk.ReadImage(src_files)
    b = sitk.ReadImage(r.GetGDCMSeriesFileNames(str(dst / "study1" / "ct5n")))
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    ok = latest[next(i for i, e in latest.items() if e.get("out") == "study1/ct5n")]
    assert ok["uids"]["series_instance_uid"].startswith("2.25.")
    assert len(ok["uids"]["sop_instance_uids"]) == 5 and len(ok["outputs"]) == 5
    import pydicom

    ds = pydicom.dcmread(str(dst / "study1" / "ct5n" / "IM00001.dcm"))
    assert ds.SeriesInstanceUID == ok["uids"]["series_instance_uid"]
    assert "DERIVED" in ds.ImageType and "denoised by medgen unet" in ds.DerivationDescription

    # resume: nothing to do, quarantined items stay quarantined (exit 3), no new ledger lines
    n_lines = len(_ledger_lines(dst))
    s = Job(PredictorSpec.make(tiny_ckpt, CPU1), mixed_tree, dst).run()
    assert (s.ok, s.skipped, s.quarantined, s.exit_code) == (0, 7, 4, 3)
    assert len(_ledger_lines(dst)) == n_lines


# --------------------------------------------------------------------------- resume rules


def test_resume_rehashes_outputs_and_inputs_overwrite_forces(nifti_tree, tmp_path, tiny_ckpt):
    dst = tmp_path / "out"
    spec = PredictorSpec.make(tiny_ckpt, CPU1)
    s = Job(spec, nifti_tree, dst).run()
    assert (s.ok, s.exit_code) == (10, 0)
    ref = _files(dst)
    # an output damaged after the run: redone; an input changed: redone; the rest skipped
    victim = dst / "sub-00" / "scan_01.nii.gz"
    victim.write_bytes(victim.read_bytes()[:-10])
    write_phantom(nifti_tree / "sub-02" / "scan_07.nii.gz", seed=77)
    s = Job(spec, nifti_tree, dst).run()
    assert (s.ok, s.skipped) == (2, 8)
    now = _files(dst)
    assert now["sub-00/scan_01.nii.gz"] == ref["sub-00/scan_01.nii.gz"]  # deterministic redo
    assert now["sub-02/scan_07.nii.gz"] != ref["sub-02/scan_07.nii.gz"]
    # other settings = another job digest: everything is redone
    s = Job(PredictorSpec.make(tiny_ckpt, CPU1.replace(overlap=0.5)), nifti_tree, dst).run()
    assert s.ok == 10
    s = Job(spec, nifti_tree, dst, overwrite=True).run()
    assert (s.ok, s.skipped) == (10, 0)
    assert json.loads((dst / "summary.json").read_text())["ok"] == 10
    man = json.loads((dst / "output_manifest.json").read_text())
    assert len(man["items"]) == 10 and all(len(r["files"]) == 1 for r in man["items"])


class FlakyIO(VolumePredictor):
    """Raises a transient I/O error (EIO) on the first ``fail_times`` calls per volume."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.calls: dict[float, int] = {}

    def __call__(self, vol):
        key = float(np.asarray(vol.array, np.float64).sum())
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= self.options["fail_times"]:
            raise OSError(errno.EIO, "Input/output error")
        return super().__call__(vol)


def test_transient_errors_are_retried_with_backoff(tmp_path, tiny_ckpt):
    src = tmp_path / "src"
    write_phantom(src / "a.nii.gz", seed=1)
    write_phantom(src / "b.nii.gz", seed=2)
    spec = PredictorSpec.make(tiny_ckpt, CPU1)
    once = FlakyIO.from_checkpoint(tiny_ckpt, CPU1, options={"fail_times": 1})
    t0 = time.perf_counter()
    s = Job(spec, src, tmp_path / "o1", retries=2, retry_delay=0.2).run(predictor=once)
    assert (s.ok, s.retried, s.exit_code) == (2, 2, 0)
    assert time.perf_counter() - t0 >= 0.2
    lines = _ledger_lines(tmp_path / "o1")
    assert [e["status"] for e in lines].count("failed") == 2
    assert all("retrying" in e["error"] and "Input/output error" in e["error"]
               for e in lines if e["status"] == "failed")
    always = FlakyIO.from_checkpoint(tiny_ckpt, CPU1, options={"fail_times": 99})
    s = Job(spec, src, tmp_path / "o2", retries=2, retry_delay=0.01).run(predictor=always)
    assert (s.failed, s.exit_code) == (2, 3)
    assert len(_ledger_lines(tmp_path / "o2")) == 6  # 3 attempts per item, one line each
    # failed (not quarantined) items are attempted again by the next run
    s = Job(spec, src, tmp_path / "o2").run()
    assert (s.ok, s.exit_code) == (2, 0)


def test_concurrent_job_on_the_same_output_is_refused(tmp_path, tiny_ckpt, nifti_tree):
    dst = tmp_path / "out"
    j1 = Job(PredictorSpec.make(tiny_ckpt, CPU1), nifti_tree, dst)
    j1.prepare()
    try:
        with pytest.raises(ConfigError, match="another medgen job"):
            Job(PredictorSpec.make(tiny_ckpt, CPU1), nifti_tree, dst).prepare()
    finally:
        j1.close()


# --------------------------------------------------------------------------- kill -9


def test_kill_9_at_a_random_point_then_rerun_is_byte_identical(tmp_path, tiny_ckpt):
    src = tmp_path / "src"
    for i in range(10):
        write_phantom(src / f"sub-{i // 4}" / f"scan_{i:02d}.nii.gz", shape=(48, 40, 32), seed=i)
    args = ["--model", str(tiny_ckpt), "--no-track", "--threads", "1", "--quiet", "--roi", "16",
            "--overlap", "0.5"]
    # reference: one uninterrupted run (in-process, same code path and settings)
    ref = tmp_path / "ref"
    settings = CPU1.replace(roi_size=(16, 16, 16), overlap=0.5)
    s = Job(PredictorSpec.make(tiny_ckpt.resolve(), settings), src, ref).run()
    assert s.ok == 10

    dst = tmp_path / "dst"
    cmd = [sys.executable, "-m", "medgen", "denoise", *args, str(src), str(dst)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            cwd=str(tmp_path))
    rng = random.SystemRandom()
    # When to kill: during start-up (a random time after the job took its lock), right after the
    # k-th finished item (k 1-5 of 10), or at a random time inside the items that follow the first
    # (<= 0.25 s; an item takes ~60 ms here, so at least ~5 items are still to do). Waiting up to
    # 0.6 s after the first item used to overshoot the whole job on an idle machine (a CI failure).
    mode = rng.choice(["start-up", "after-k-ok", "mid-item"])
    k = rng.randint(1, 5)
    delay = rng.uniform(0.0, 0.3) if mode == "start-up" else rng.uniform(0.0, 0.25)
    ledger = dst / "ledger.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if mode == "start-up" and (dst / ".medgen-job.lock").exists():
            time.sleep(delay)
            break
        n_ok = ledger.read_text().count('"status":"ok"') if ledger.exists() else 0
        if mode == "after-k-ok" and n_ok >= k:
            break
        if mode == "mid-item" and n_ok >= 1:
            time.sleep(delay)
            break
        time.sleep(0.002)
    assert proc.poll() is None, f"job ended before the kill ({mode}, k={k}, {delay:.2f} s)"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    n_done = sum(1 for e in Ledger(ledger).latest.values() if e["status"] == "ok") \
        if ledger.exists() else 0
    assert n_done < 10, "the kill came after the job had finished"

    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp_path),
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    summary = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert summary["ok"] + summary["skipped"] == 10
    assert summary["skipped"] >= n_done
    assert not _temps(dst), _temps(dst)
    assert _files(dst) == _files(ref)  # every output present and byte-identical
    latest = Ledger(ledger).latest
    assert len(latest) == 10 and all(e["status"] == "ok" for e in latest.values())


def test_manifest_input_ids_paths_and_changed_files(tmp_path, ct5n_dir, tiny_ckpt, key_env):
    from medgen.keys import load_key
    from medgen.manifest.build import build_manifest

    src = tmp_path / "data"
    shutil.copytree(ct5n_dir, src / "ct" / "s1")
    write_phantom(src / "mr" / "a.nii.gz", seed=1)
    write_phantom(src / "mr" / "b.nii.gz", seed=2)
    res = build_manifest(src, load_key())
    mpath = tmp_path / "m" / "data.jsonl"
    res.manifest.write(mpath)
    items = {it.rel: it for it in discover_items(mpath, tmp_path / "out")}
    assert set(items) == {"ct/s1", "mr/a.nii.gz", "mr/b.nii.gz"}
    assert {it.id for it in items.values()} == {r.id for r in res.manifest.records}
    assert items["ct/s1"].out_rel == "ct/s1" and items["mr/a.nii.gz"].out_rel == "mr/a.nii.gz"
    # a file changed after the manifest was built is refused (its recorded sha256 differs)
    write_phantom(src / "mr" / "b.nii.gz", seed=9)
    s = Job(PredictorSpec.make(tiny_ckpt, CPU1), mpath, tmp_path / "out").run()
    assert (s.ok, s.quarantined, s.exit_code) == (2, 1, 3)
    assert "changed since the manifest" in s.failures[0]["error"]
    assert (tmp_path / "out" / "ct" / "s1" / "IM00001.dcm").exists()
    assert (tmp_path / "out" / "mr" / "a.nii.gz").exists()
