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


def check_inputs(ctx: AuditContext):
    """Re-hash the job's inputs on disk against the input sha256 sealed for every item."""
    from medgen.infer.job import discover_items

    rr = ctx.record.get("rerun", {})
    src = rr.get("src_hint")
    if not src or not Path(src).exists():
        return [(False, "inputs of the job not found from here (run the audit where the job ran)")]
    sealed = _sealed_outputs(ctx)
    items = {i.id: i for i in discover_items(src, None, output_format=rr.get("output_format", "auto"),
                                              root=rr.get("root_hint"))}
    out = []
    for iid, row in sorted(sealed.items()):
        it = items.get(iid)
        if it is None:
            out.append((False, f"input of item {iid} is missing"))
        elif it.input_sha256() != row.get("input_sha256"):
            out.append((False, f"input of item {iid} ({it.rel}) was changed"))
    if not out:
        out.append((True, f"{len(sealed)} input item(s) re-hashed: unchanged"))
    return out


def rerun_items(ctx: AuditContext, n: int):
    """Rebuild the job's predictor from the same checkpoint and settings, run ``n`` of its items
    into a temporary folder and compare every output file's sha256 with the sealed output manifest
    (bit-exact: deterministic CPU inference writes identical bytes)."""
    from medgen.infer.job import Job
    from medgen.infer.predictor import InferenceSettings, PredictorSpec, resolve_model

    rr = ctx.record.get("rerun", {})
    if not rr.get("src_hint") or not Path(rr["src_hint"]).exists():
        return [(False, "inference re-run impossible: the job's inputs are not found from here")]
    if not rr.get("model_hint"):
        return [(False, "inference re-run impossible: model location unknown")]
    sealed = _sealed_outputs(ctx)
    if not sealed:
        return [(False, "inference re-run impossible: the job produced no outputs")]
    settings = dict(rr.get("settings") or {})
    if settings.get("roi_size"):
        settings["roi_size"] = tuple(settings["roi_size"])
    settings["device"] = "cpu" if settings.get("device", "auto") in ("auto", "cpu") else settings["device"]
    ckpt = resolve_model(rr["model_hint"], tracking_uri=ctx.tracking_uri)
    spec = PredictorSpec.make(ckpt.resolve(), InferenceSettings(**settings), rr.get("factory"),
                              rr.get("options") or {})
    job = Job(spec, rr["src_hint"], ctx.workdir / "rerun", output_format=rr.get("output_format", "auto"),
              root=rr.get("root_hint"), task=rr.get("task", "infer"))
    items = job.prepare()
    chosen = sorted(i.id for i in items if i.id in sealed)[: max(1, n)]
    job.items = [i for i in items if i.id in chosen]
    try:
        job.run()
    finally:
        job.close()
    out = []
    for iid in chosen:
        want = {f["path"]: f["sha256"] for f in sealed[iid]["files"]}
        got_e = job.ledger.latest.get(iid) if job.ledger else None
        got = {o["path"]: o["sha256"] for o in (got_e or {}).get("outputs") or []}
        if got == want:
            out.append((True, f"item {iid}: re-run output bit-identical ({len(want)} file(s))"))
        else:
            out.append((False, f"item {iid}: re-run output differs from the sealed output manifest"))
    return out


RERUNNERS.register("infer", rerun_items)
