"""The audit of pipeline runs (kind ``pipeline``), a plugin of :mod:`medgen.audit`.

A pipeline's parent run is sealed last, with every step's run id and the digest of that step
run's own seal (``audit.json``) at that moment. Its audit re-audits each step run in turn (with
the same ``--rerun N``), so a pipeline PASSes only if every step does; a step run that was
tampered with, or re-sealed after the pipeline sealed it, makes the pipeline FAIL.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from medgen.audit import AuditContext, Finding, fail, ok, warn
from medgen.utils.hashing import sha256_json


def seal_pipeline(runner, parent, results) -> str:
    """Seal the pipeline's parent run: steps, their run ids and their seal digests."""
    import json

    from medgen.audit import TAG_AUDIT_SHA256, seal_run
    from medgen.track.lineage import DataRoots

    steps: dict[str, Any] = {}
    for r in results:
        audit_sha = None
        if r.run_id:
            audit_sha = parent.client.get_run(r.run_id).data.tags.get(TAG_AUDIT_SHA256)
        outputs = json.loads(json.dumps(r.outputs, default=str))
        steps[r.name] = {"kind": r.kind, "status": r.status, "run_id": r.run_id,
                         "audit_sha256": audit_sha, "outputs_sha256": sha256_json(outputs)}
    roots = DataRoots()
    roots.add("workdir", runner.workdir)
    return seal_run(parent, kind="pipeline", lineage={"steps": steps}, roots=roots)


class PipelineAuditor:
    """A pipeline is audited through its steps' runs."""

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        from medgen.audit import TAG_AUDIT_SHA256

        steps = ctx.record.get("lineage", {}).get("steps", {})
        n = 0
        for name, st in steps.items():
            rid = st.get("run_id")
            if st.get("status") == "failed":
                yield warn(f"step '{name}' failed when the pipeline ran (as recorded)")
            if not rid:
                continue
            label = f"step '{name}' (run {rid})"
            try:
                tags = ctx.client.get_run(rid).data.tags
            except Exception:  # noqa: BLE001 - MLflow: not found
                yield fail(f"{label} is not in the store")
                continue
            if st.get("audit_sha256") != tags.get(TAG_AUDIT_SHA256):
                yield fail(f"{label} was re-sealed or unsealed after the pipeline sealed it")
            parent = tags.get("mlflow.parentRunId")
            if st.get("status") != "skipped" and parent != ctx.run_id:
                yield fail(f"{label} is not a nested run of this pipeline")
            ctx.report.include(label, ctx.audit_linked(rid))
            n += 1
        yield ok(f"{n} step run(s) of the pipeline re-audited")

    def rerun(self, ctx: AuditContext, n: int) -> list[Finding]:
        return [ok(f"step runs re-audited with --rerun {n}")]
