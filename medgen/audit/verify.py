"""``medgen audit RUN_ID``: check a sealed run against what MLflow and the disk hold now."""

from __future__ import annotations

import html
import json
import logging
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.audit.seal import (
    AUDIT_FILE,
    TAG_AUDIT_HMAC,
    TAG_AUDIT_KEY_FP,
    TAG_AUDIT_SHA256,
    collect_state,
    load_audit_key,
    signature,
)
from medgen.registry import Registry
from medgen.utils.hashing import canonical_json, sha256_file

log = logging.getLogger("medgen.audit")

#: kind -> callable(ctx: AuditContext, n: int) -> list of (ok: bool, message)
RERUNNERS: Registry = Registry("audit_rerunners")


@dataclass
class AuditReport:
    run_id: str
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    differences_from_now: list[str] = field(default_factory=list)

    def fail(self, msg: str) -> None:
        self.passed = False
        self.failures.append(msg)

    def ok(self, msg: str) -> None:
        self.checks.append(msg)

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "result": "PASS" if self.passed else "FAIL",
                "failures": self.failures, "warnings": self.warnings, "checks": self.checks,
                "differences_from_now": self.differences_from_now}

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        from medgen.utils.atomic import atomic_write_text

        out = Path(out_dir)
        d = self.to_dict()
        jp = atomic_write_text(out / "audit_report.json", json.dumps(d, indent=1) + "\n")
        color = "#1a7f37" if self.passed else "#cf222e"

        def ul(items):
            return "<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>" if items else "<p>none</p>"

        page = (f"<!doctype html><meta charset='utf-8'><title>medgen audit {html.escape(self.run_id)}</title>"
                f"<body style='font-family:sans-serif;max-width:60em;margin:2em auto'>"
                f"<h1>Audit of run {html.escape(self.run_id)}: <span style='color:{color}'>{d['result']}</span></h1>"
                f"<h2>Failures</h2>{ul(self.failures)}<h2>Warnings</h2>{ul(self.warnings)}"
                f"<h2>Differences from now (code, environment)</h2>{ul(self.differences_from_now)}"
                f"<h2>Checks passed</h2>{ul(self.checks)}</body>")
        hp = atomic_write_text(out / "audit_report.html", page)
        return jp, hp


@dataclass
class AuditContext:
    client: Any
    run: Any
    record: dict
    workdir: Path
    manifests: dict  # role -> medgen.manifest.Manifest (verified digest) or None
    tracking_uri: str
    report: AuditReport


def _diff_state(sealed: dict, now: dict, report: AuditReport) -> None:
    for kind, label in (("params", "param"), ("tags", "tag"), ("artifacts", "artifact")):
        a, b = sealed.get(kind, {}), now.get(kind, {})
        for k in sorted(set(a) | set(b)):
            if k not in b:
                report.fail(f"{label} '{k}' was removed after the run was sealed")
            elif k not in a:
                report.fail(f"{label} '{k}' was added after the run was sealed")
            elif a[k] != b[k]:
                report.fail(f"{label} '{k}' was changed after the run was sealed")
        if all(k in b and a[k] == b[k] for k in a) and set(a) == set(b):
            report.ok(f"{len(a)} {label}s unchanged")
    a, b = sealed.get("metrics", {}), now.get("metrics", {})
    for k in sorted(set(a) | set(b)):
        if k not in b or k not in a or a[k]["history_sha256"] != b[k]["history_sha256"]:
            report.fail(f"metric '{k}' history was changed after the run was sealed")
    if set(a) == set(b) and all(a[k]["history_sha256"] == b[k]["history_sha256"] for k in a):
        report.ok(f"{len(a)} metric histories unchanged")


def _now_code_env(record: dict, report: AuditReport) -> None:
    code = record.get("code", {})
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    if code.get("commit") and head and head != code["commit"]:
        report.differences_from_now.append(f"code: run used commit {code['commit'][:12]}, now {head[:12]}")
    elif code.get("commit"):
        report.ok(f"code commit {code['commit'][:12]} (dirty: {code.get('dirty')})")
    import importlib.metadata

    for pkg, ver in sorted(record.get("environment", {}).get("versions", {}).items()):
        try:
            now = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            now = "not installed"
        if now != ver:
            report.differences_from_now.append(f"package {pkg}: run {ver}, now {now}")


def _load_inputs(ctx_client, run_id: str, record: dict, workdir: Path, manifest_paths: dict,
                 data_root: str | None, report: AuditReport) -> dict:
    """Find each input manifest (given, or the run's artifact), check its digest, re-hash files."""
    from mlflow.artifacts import download_artifacts

    from medgen.manifest import Manifest
    from medgen.manifest.ops import validate_manifest

    out = {}
    inputs = record.get("rerun", {}).get("inputs", {})
    for role, digest in record.get("input_manifests", {}).items():
        if role not in inputs and role not in manifest_paths:
            continue  # a digest only (e.g. a batch job's item list): checked by the kind's own check
        info = inputs.get(role, {})
        path = manifest_paths.get(role)
        if path is None and info.get("manifest_hint") and Path(info["manifest_hint"]).exists():
            path = info["manifest_hint"]
        if path is None and info.get("artifact"):
            path = download_artifacts(run_id=run_id, artifact_path=info["artifact"],
                                      dst_path=str(workdir / "manifests" / role),
                                      tracking_uri=ctx_client._tracking_client.tracking_uri)
        if path is None:
            report.fail(f"input manifest '{role}' not available: pass --manifest {role}=PATH")
            out[role] = None
            continue
        root = data_root or info.get("root_hint")
        m = Manifest.load(path, root)
        if m.digest != digest:
            report.fail(f"input manifest '{role}' digest {m.digest[:12]} differs from the sealed {digest[:12]}")
            out[role] = None
            continue
        if m.root is None or not Path(m.root).exists():
            report.fail(f"input data of '{role}' not found: pass --data-root")
            out[role] = None
            continue
        rep = validate_manifest(m)
        for p in rep.missing:
            report.fail(f"input file '{p}' ({role}) is missing")
        for p in rep.changed:
            report.fail(f"input file '{p}' ({role}) was changed (sha256 differs from the manifest)")
        if rep.passed:
            report.ok(f"{rep.ok} input file(s) of '{role}' re-hashed: unchanged")
        out[role] = m
    return out


def audit_run(run_id: str, *, tracking_uri: str | None = None, rerun: int = 0,
              manifests: dict[str, str] | None = None, data_root: str | None = None,
              audit_key_file: str | None = None) -> AuditReport:
    """Check a sealed run. Returns the report (``passed`` False on any finding)."""
    from mlflow.artifacts import download_artifacts

    from medgen.track import client_for, ensure_store

    uri = ensure_store(tracking_uri)
    client = client_for(uri)
    report = AuditReport(run_id)
    run = client.get_run(run_id)
    tags = run.data.tags
    sealed_sha = tags.get(TAG_AUDIT_SHA256)
    if not sealed_sha:
        report.fail("run was never sealed (no audit.json digest tag)")
        return report
    with tempfile.TemporaryDirectory(prefix="medgen-audit-") as tmp:
        tmp = Path(tmp)
        try:
            local = download_artifacts(run_id=run_id, artifact_path=AUDIT_FILE, dst_path=str(tmp),
                                       tracking_uri=uri)
        except Exception:
            report.fail("audit.json artifact is missing")
            return report
        if sha256_file(local) != sealed_sha:
            report.fail("audit.json was changed after the run was sealed")
            return report
        record = json.loads(Path(local).read_text())
        report.ok("audit.json matches its sealed digest")
        key = load_audit_key(audit_key_file)
        if tags.get(TAG_AUDIT_HMAC):
            if key is None:
                report.warnings.append("run is signed but no audit key was given; signature not checked")
            elif key.fingerprint != tags.get(TAG_AUDIT_KEY_FP):
                report.fail("signed with another audit key (fingerprint differs)")
            elif signature(key, canonical_json(record)) != tags[TAG_AUDIT_HMAC]:
                report.fail("audit signature does not verify")
            else:
                report.ok("audit signature verifies")
        _diff_state(record["state"], collect_state(client, run_id), report)
        _now_code_env(record, report)
        ms = _load_inputs(client, run_id, record, tmp, dict(manifests or {}), data_root, report)
        kind = record.get("kind", "")
        ctx = AuditContext(client, run, record, tmp, ms, uri, report)
        if kind == "infer":
            from medgen.infer.auditor import check_inputs  # also registers the inference re-runner

            for ok, msg in check_inputs(ctx):
                (report.ok if ok else report.fail)(msg)
        if rerun:
            if kind in RERUNNERS:
                for ok, msg in RERUNNERS.get(kind)(ctx, rerun):
                    (report.ok if ok else report.fail)(msg)
            else:
                report.warnings.append(f"no re-run check for runs of kind '{kind}'")
    return report


def _rerun_train(ctx: AuditContext, n: int):
    """Re-run the first training step(s) and compare with the smoke digest the run recorded."""
    import torch

    from medgen.config import load_config
    from medgen.models import state_dict_sha256
    from medgen.train.config import TrainConfig
    from medgen.train.trainer import Trainer

    smoke = ctx.record.get("rerun", {}).get("smoke")
    m = ctx.manifests.get("train")
    if not smoke or m is None:
        return [(False, "training smoke re-run impossible: no smoke digest or no input manifest")]
    from mlflow.artifacts import download_artifacts

    cfg_path = download_artifacts(run_id=ctx.run.info.run_id, artifact_path="config/resolved.yaml",
                                  dst_path=str(ctx.workdir / "cfg"), tracking_uri=ctx.tracking_uri)
    steps = int(smoke["steps"])
    cfg = load_config(TrainConfig, cfg_path, [
        f"data.manifest={m.path}", f"data.root={m.root}", f"output_dir={ctx.workdir / 'rerun'}",
        "tracking.enabled=false", "val.every_steps=1000000"])
    t = Trainer(cfg, run_name="audit-rerun")
    t.fit(stop_after=steps)
    got = state_dict_sha256({k: v.detach().cpu() for k, v in t.model.state_dict().items()})
    if smoke.get("deterministic") and torch.device(cfg.device if cfg.device != "auto" else "cpu").type == "cpu":
        if got == smoke["weights_sha256"]:
            return [(True, f"training re-run of {steps} step(s): weights bit-identical")]
        return [(False, f"training re-run of {steps} step(s): weights differ from the recorded ones")]
    return [(True, f"training re-run of {steps} step(s) done; run was not deterministic on CPU, "
                   "weights compared by hash are not expected to match")]


RERUNNERS.register("train", _rerun_train)
