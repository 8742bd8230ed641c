"""The Dask engine on a real LocalCluster gives the local engine's bytes and ledger semantics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medgen.infer.job import Job, Ledger
from medgen.infer.predictor import InferenceSettings, PredictorSpec

CPU1 = InferenceSettings(device="cpu", threads=1)


def _outputs(root):
    skip = {"ledger.jsonl", "summary.json", "quarantine.jsonl", ".medgen-job.lock"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def _statuses(dst):
    return {k: (e["status"], e.get("out"), e.get("error")) for k, e in
            Ledger(dst / "ledger.jsonl").latest.items()}


def test_dask_join_scheduler_byte_identical_to_local(mixed_tree, tmp_path, tiny_ckpt):
    """Join a running scheduler over TCP (``--scheduler``) with 2 workers; the workers are threads
    of this process (starting worker processes costs ~10 s each on this 2-core machine; the
    process variant, started by ``--workers 2``, is the slow test below)."""
    from distributed import LocalCluster

    spec = PredictorSpec.make(tiny_ckpt, CPU1)
    local = Job(spec, mixed_tree, tmp_path / "local").run(engine="local")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp",
                      dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        dask = Job(spec, mixed_tree, tmp_path / "dask").run(
            engine="dask", scheduler=cluster.scheduler_address)
    assert (local.ok, local.quarantined) == (dask.ok, dask.quarantined) == (4, 3)
    assert local.job_digest == dask.job_digest and local.input_digest == dask.input_digest
    a, b = _outputs(tmp_path / "local"), _outputs(tmp_path / "dask")
    assert sorted(a) == sorted(b) and len(a) >= 9  # 2 NIfTI + 6 DICOM files + output manifest
    for k in a:
        assert a[k] == b[k], k  # byte-identical, output manifest included
    assert _statuses(tmp_path / "local") == _statuses(tmp_path / "dask")
    led = Ledger(tmp_path / "dask" / "ledger.jsonl").latest
    assert {e["engine"] for e in led.values()} == {"dask"}
    # resume with the other engine: nothing to redo
    again = Job(spec, mixed_tree, tmp_path / "dask").run(engine="local")
    assert (again.ok, again.skipped) == (0, 7)


@pytest.mark.slow
def test_dask_cli_process_workers_byte_identical(mixed_tree, tmp_path, tiny_ckpt):
    spec = PredictorSpec.make(tiny_ckpt.resolve(), CPU1)
    Job(spec, mixed_tree, tmp_path / "local").run()
    cmd = [sys.executable, "-m", "medgen", "denoise", "--model", str(tiny_ckpt), str(mixed_tree),
           str(tmp_path / "dask"), "--engine", "dask", "--workers", "2", "--no-track",
           "--threads", "1", "--quiet"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert res.returncode == 3, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["engine"] == "dask"
    assert _outputs(tmp_path / "local") == _outputs(tmp_path / "dask")
    workers = {e.get("worker") for e in Ledger(tmp_path / "dask" / "ledger.jsonl").latest.values()}
    assert len(workers) >= 1 and None not in workers
