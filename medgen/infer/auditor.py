"""Audit re-run of batch-inference jobs: recompute N items and compare their output bytes."""

from __future__ import annotations

import json
from pathlib import Path

from medgen.audit.verify import RERUNNERS, AuditContext


def _sealed_outputs(ctx: AuditContext) -> dict:
    from mlflow.artifacts import download_artifacts

    om = download_artifacts(run_id=ctx.run.info.run_id, artifact_path="outputs/output_manifest.json",
                            dst_path=str(ctx.workdir / "om"), tracking_uri=ctx.tracking_uri)
    return {r["item"]: r for r in json.loads(Path(om).read_text())["items"]}


def _by_input(ctx: AuditContext, rr: dict):
    """Items found at the job's source now, by input sha256 (item ids are keyed with the job
    DST's own key, so sealed rows are matched by what their input hashes to)."""
    from medgen.infer.job import discover_items
    from medgen.infer.sources import open_source

    items = discover_items(rr["src_hint"], None, output_format=rr.get("output_format", "auto"),
                           root=rr.get("root_hint"))
    source = open_source(rr["src_hint"], root=rr.get("root_hint"))
    found = {}
    for it in items:
        if not it.error:
            try:
                found.setdefault(source.fingerprint(it), it)
            except Exception:  # noqa: BLE001 - an unreadable input matches nothing
                continue
    return found


def check_inputs(ctx: AuditContext):
    """Re-hash the job's inputs on disk against the input sha256 sealed for every item."""
    rr = ctx.record.get("rerun", {})
    src = rr.get("src_hint")
    if not src or not Path(src).exists():
        return [(False, "inputs of the job not found from here (run the audit where the job ran)")]
    sealed = _sealed_outputs(ctx)
    found = _by_input(ctx, rr)
    out = [(False, f"input of item {iid} is missing or was changed (no input hashes to its "
                   "sealed sha256)")
           for iid, row in sorted(sealed.items()) if row.get("input_sha256") not in found]
    if not out:
        out.append((True, f"{len(sealed)} input item(s) re-hashed: unchanged"))
    return out


def rerun_items(ctx: AuditContext, n: int):
    """Rebuild the job's predictor from the same checkpoint and settings, run ``n`` of its items
    into a temporary folder and compare every output file's sha256 with the sealed output manifest
    (bit-exact: deterministic CPU inference writes identical bytes)."""
    from medgen.infer.job import Job
    from medgen.infer.predictor import PredictorSpec
    from medgen.infer.settings import InferenceSettings
    from medgen.infer.summary import files_by_part
    from medgen.track.models import model_from_reference, resolve_model

    rr = ctx.record.get("rerun", {})
    if not rr.get("src_hint") or not Path(rr["src_hint"]).exists():
        return [(False, "inference re-run impossible: the job's inputs are not found from here")]
    model = model_from_reference(rr)
    if not model:
        return [(False, "inference re-run impossible: model location unknown")]
    sealed = _sealed_outputs(ctx)
    if not sealed:
        return [(False, "inference re-run impossible: the job produced no outputs")]
    settings = dict(rr.get("settings") or {})
    settings["device"] = "cpu" if settings.get("device", "auto") in ("auto", "cpu") else settings["device"]
    ckpt = resolve_model(model, tracking_uri=ctx.tracking_uri)
    spec = PredictorSpec.make(ckpt.resolve(), InferenceSettings(**settings), rr.get("factory"),
                              rr.get("options") or {})
    job = Job(spec, rr["src_hint"], ctx.workdir / "rerun", output_format=rr.get("output_format", "auto"),
              root=rr.get("root_hint"), task=rr.get("task", "infer"))
    items = job.prepare()
    digests = {it.id: job.source.fingerprint(it) for it in items if not it.error}
    chosen = {iid: row for iid, row in sorted(sealed.items())[: max(1, n)]}
    job.items = [it for it in items if digests.get(it.id) in {r["input_sha256"] for r in chosen.values()}]
    try:
        job.run()
    finally:
        job.close()
    now = {r["input_sha256"]: r for r in job.output_manifest()["items"]}
    out = []
    for iid, row in chosen.items():
        want = files_by_part(row)
        got = files_by_part(now[row["input_sha256"]]) if row["input_sha256"] in now else {}
        if got == want:
            out.append((True, f"item {iid}: re-run output bit-identical ({len(want)} file(s))"))
        else:
            out.append((False, f"item {iid}: re-run output differs from the sealed output manifest"))
    return out


RERUNNERS.register("infer", rerun_items)
