"""Eight processes (multiprocessing spawn) start runs on a FRESH embedded sqlite store at the same
moment: the store is created once under the file lock, no process fails, nothing is corrupted."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3


def _worker(workdir: str, i: int, go, results) -> None:
    import os

    os.chdir(workdir)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from medgen.track import ensure_store, start_run

    go.wait(60)  # all eight hit the fresh store together
    try:
        ensure_store()
        with start_run("medgen-concurrent", f"worker-{i}") as run:
            run.log_params({"worker": i})
            for step in range(5):
                run.log_metrics({"loss": 1.0 / (step + 1), "worker": float(i)}, step=step)
            run.log_text(f"worker {i}\n", "out/worker.txt")
        results.put(run.run_id)
    except Exception as exc:  # reported to the parent instead of a silent hang
        results.put(f"worker {i} failed: {type(exc).__name__}: {exc}")


def test_eight_spawned_writers_on_fresh_store(tmp_path):
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), i, go, results)) for i in range(8)]
    for p in procs:
        p.start()
    go.set()
    run_ids = [results.get(timeout=240) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert not [r for r in run_ids if r.startswith("worker")], run_ids
    assert [p.exitcode for p in procs] == [0] * 8
    assert len(set(run_ids)) == 8

    db = tmp_path / "mlflow.db"
    con = sqlite3.connect(db)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()

    from medgen.track import client_for

    client = client_for(f"sqlite:///{db}")
    exps = [e for e in client.search_experiments() if e.name == "medgen-concurrent"]
    assert len(exps) == 1  # created once despite eight racing creators
    runs = client.search_runs([exps[0].experiment_id], max_results=100)
    assert len(runs) == 8
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(int(r.data.params["worker"]) for r in runs) == list(range(8))
    for r in runs:
        hist = client.get_metric_history(r.info.run_id, "loss")
        assert [m.step for m in sorted(hist, key=lambda m: m.step)] == [0, 1, 2, 3, 4]
        assert [a.path for a in client.list_artifacts(r.info.run_id, "out")] == ["out/worker.txt"]
