"""The Dask engine on a real LocalCluster gives the local engine's bytes and ledger semantics."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medgen.infer.job import Job
from medgen.infer.ledger import Ledger
from medgen.infer.predictor import PredictorSpec
from medgen.infer.settings import InferenceSettings

CPU1 = InferenceSettings(device="cpu", threads=1)


def _outputs(root):
    skip = {"ledger.jsonl", "summary.json", "quarantine.jsonl", ".medgen-job.lock",
            ".medgen-item-key", "output_manifest.json"}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in skip}


def _statuses(dst):
    """Per input (its sha256, or its path for refused files): status, output and error."""
    return {e.get("input_sha256") or e["rel"]: (e["status"], e.get("out"), e.get("error"))
            for e in Ledger(dst / "ledger.jsonl").latest.values()}


def _manifest_by_input(dst):
    from medgen.infer.summary import files_by_part

    man = json.loads((dst / "output_manifest.json").read_text())
    return {r["input_sha256"]: files_by_part(r) for r in man["items"]}


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
    assert (local.ok, local.quarantined) == (dask.ok, dask.quarantined) == (3, 4)
    assert local.job_digest == dask.job_digest
    a, b = _outputs(tmp_path / "local"), _outputs(tmp_path / "dask")
    assert sorted(a) == sorted(b) and len(a) == 7  # 2 NIfTI + 5 DICOM files
    for k in a:
        assert a[k] == b[k], k  # byte-identical
    # the output manifests name items by each DST's keyed ids; their content is the same
    assert _manifest_by_input(tmp_path / "local") == _manifest_by_input(tmp_path / "dask")
    assert _statuses(tmp_path / "local") == _statuses(tmp_path / "dask")
    led = Ledger(tmp_path / "dask" / "ledger.jsonl").latest
    assert {e["engine"] for e in led.values()} == {"dask"}
    # resume with the other engine: nothing to redo
    again = Job(spec, mixed_tree, tmp_path / "dask").run(engine="local")
    assert (again.ok, again.skipped) == (0, 7)
    assert again.input_digest == dask.input_digest


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
