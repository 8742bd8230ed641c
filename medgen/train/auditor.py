"""The audit of training runs (kinds ``train`` and ``train-attempt``), a plugin of
:mod:`medgen.audit`.

* ``check``: a resumed run re-proves its whole chain (:mod:`medgen.train.provenance`): every
  earlier attempt is audited in turn (its record unchanged since it was sealed, its seal the one
  this run recorded), trained with the same config (up to a recorded ``optim.max_steps``
  extension) and data, points at its successor, and recorded the checkpoint this run resumed
  from.
* ``rerun``: the first training step is re-run from the sealed config and inputs; on CPU with
  ``deterministic: true`` its weights must be bit-identical to the digest recorded at step 1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from medgen.audit import AuditContext, Finding, fail, ok, warn
from medgen.train.provenance import EXTENSIBLE, TAG_CHECKPOINT, TAG_SUCCESSOR, config_changes


def _hidden_path(value) -> bool:
    """A path the PHI guard replaced by ``PATH-<hmac>``: the key is random per run, so two runs'
    placeholders for the same path differ. Such values are not compared (the data behind them is:
    by manifest digest)."""
    return isinstance(value, str) and value.startswith("PATH-")


def _config(ctx: AuditContext, run_id: str) -> dict:
    import yaml

    return yaml.safe_load(ctx.artifact("config/resolved.yaml", run_id).read_text())


class TrainAuditor:
    """Checks and re-runs of training runs."""

    def check(self, ctx: AuditContext) -> Iterator[Finding]:
        if ctx.record.get("kind") == "train-attempt":
            yield from _attempt(ctx)
            return
        attempts = ctx.record.get("lineage", {}).get("attempts") or []
        if not attempts:
            yield ok("one training attempt (not resumed)")
            return
        final_cfg = _config(ctx, ctx.run_id)
        ids = [a["run_id"] for a in attempts] + [ctx.run_id]
        for i, att in enumerate(attempts):
            yield from _earlier(ctx, i, att, ids[i + 1], final_cfg)
        yield from _resumed_from(ctx, attempts[-1]["run_id"])

    def rerun(self, ctx: AuditContext, n: int) -> list[Finding]:
        if ctx.record.get("kind") == "train-attempt":
            return [warn("an interrupted attempt is re-run through the run that resumed it")]
        return _smoke(ctx)


def _attempt(ctx: AuditContext) -> Iterator[Finding]:
    lin = ctx.record.get("lineage", {})
    if lin.get("superseded_by"):
        yield ok(f"attempt ended {lin.get('status')} before its first checkpoint; training "
                 f"restarted from step 0 in run {lin['superseded_by']}")
        return
    succ = lin.get("successor")
    try:
        ctx.client.get_run(succ)
    except Exception:  # noqa: BLE001 - MLflow: not found
        yield fail(f"the run that resumed this attempt ({succ}) is not in the store")
        return
    step = (lin.get("checkpoint") or {}).get("step")
    yield ok(f"attempt ended {lin.get('status')}; resumed at step {step} by run {succ} "
             f"(audit that run for the model)")


def _earlier(ctx: AuditContext, i: int, att: dict, successor: str,
             final_cfg: dict) -> Iterator[Finding]:
    from medgen.audit import TAG_AUDIT_SHA256

    rid = att["run_id"]
    label = f"earlier attempt {i + 1} (run {rid})"
    try:
        prev = ctx.client.get_run(rid)
    except Exception:  # noqa: BLE001 - MLflow: not found
        yield fail(f"{label} is not in the store")
        return
    if att.get("audit_sha256") and prev.data.tags.get(TAG_AUDIT_SHA256) != att["audit_sha256"]:
        yield fail(f"{label} was re-sealed after the run that resumed it (seal digest differs "
                   f"from the one recorded)")
    ctx.report.include(label, ctx.audit_linked(rid, rerun=0))
    if prev.data.tags.get(TAG_SUCCESSOR) != successor:
        yield fail(f"{label} does not point to its successor {successor}")
    bad = [k for k, (a, b) in config_changes(_config(ctx, rid), final_cfg).items()
           if k not in EXTENSIBLE and not (_hidden_path(a) and _hidden_path(b))]
    if bad:
        yield fail(f"{label} trained with another config ('{bad[0]}' differs)")
    want = ctx.record.get("input_manifests", {})
    for role, digest in want.items():
        if prev.data.tags.get(f"medgen.manifest.{role}.sha256") != digest:
            yield fail(f"{label} trained on another '{role}' manifest")
    if not bad:
        yield ok(f"{label}: same config (up to {', '.join(EXTENSIBLE)}) and input manifests")


def _resumed_from(ctx: AuditContext, prev_id: str) -> Iterator[Finding]:
    """The checkpoint this run loaded is one its predecessor recorded writing."""
    lin = ctx.record.get("lineage", {})
    got = lin.get("resumed_from")
    raw = ctx.client.get_run(prev_id).data.tags.get(TAG_CHECKPOINT)
    if not raw or not got:
        yield fail("the resumed checkpoint cannot be tied to the attempt before (no digest)")
        return
    rec = json.loads(raw)
    if got in ({"step": rec["step"], "weights_sha256": rec["weights_sha256"]}, rec.get("prev")):
        ext = lin.get("extended") or {}
        note = "; extended " + ", ".join(f"{k} {a} -> {b}" for k, (a, b) in ext.items()) if ext else ""
        yield ok(f"resumed at step {got['step']} from the checkpoint run {prev_id} "
                 f"recorded{note}")
    else:
        yield fail(f"resumed from a checkpoint run {prev_id} did not record (step/weights digest)")


def _smoke(ctx: AuditContext) -> list[Finding]:
    """Re-run the first training step and compare with the smoke digest the run recorded."""
    from medgen.config import load_config
    from medgen.models import state_dict_sha256
    from medgen.train.config import TrainConfig
    from medgen.train.trainer import Trainer

    smoke = ctx.record.get("rerun", {}).get("smoke")
    if not smoke:
        return [fail("training smoke re-run impossible: no smoke digest recorded")]
    sets = [f"output_dir={ctx.workdir / 'rerun'}", "tracking.enabled=false",
            "val.every_steps=1000000"]
    if smoke.get("device") == "cpu":
        sets.append("device=cpu")  # compare like with like on a machine that has a GPU
    for role, info in ctx.record.get("manifests", {}).items():
        m = ctx.manifests.get(role)
        if m is None:
            return [fail(f"training smoke re-run impossible: input manifest '{role}' unavailable")]
        keys = info.get("config") or {"manifest": "data.manifest", "root": "data.root"}
        sets += [f"{keys['manifest']}={m.path}", f"{keys['root']}={m.root}"]
    cfg = load_config(TrainConfig, ctx.artifact("config/resolved.yaml"), sets)
    steps = int(smoke["steps"])
    t = Trainer(cfg, run_name="audit-rerun", quiet=True)
    t.fit(stop_after=steps)
    got = state_dict_sha256({k: v.detach().cpu() for k, v in t.model.state_dict().items()})
    if smoke.get("deterministic") and t.device.type == "cpu":
        if got == smoke["weights_sha256"]:
            return [ok(f"training re-run of {steps} step(s): weights bit-identical")]
        return [fail(f"training re-run of {steps} step(s): weights differ from the recorded ones")]
    return [ok(f"training re-run of {steps} step(s) done; run was not deterministic on CPU, "
               "weights compared by hash are not expected to match")]
