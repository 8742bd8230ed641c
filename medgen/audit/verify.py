"""``medgen audit RUN_ID``: check a sealed run against what MLflow and the disk hold now.

The host does what every sealed run shares (seal, signature, state of params/tags/metrics/
artifacts, input manifests and their files, code and package differences), then hands the run to
the auditor registered for its kind (:mod:`medgen.audit.plugins`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medgen.audit.report import AuditReport
from medgen.audit.seal import (
    AUDIT_FILE,
    TAG_AUDIT_HMAC,
    TAG_AUDIT_KEY_FP,
    TAG_AUDIT_SHA256,
    collect_state,
    load_audit_key,
    signature,
)
from medgen.utils.hashing import canonical_json, sha256_file

log = logging.getLogger("medgen.audit")

#: the root a bare ``--data-root DIR`` names (the training / job data)
DEFAULT_ROOT = "data"


@dataclass
class AuditOptions:
    """What the person auditing gave: re-run size, input manifests, data roots, signing key."""

    rerun: int = 0
    manifests: dict[str, str] = field(default_factory=dict)
    data_roots: dict[str, str] = field(default_factory=dict)
    audit_key_file: str | None = None


@dataclass
class AuditContext:
    """Everything an :class:`~medgen.audit.plugins.Auditor` sees of the run it audits.

    Attributes
    ----------
    client, run : the MLflow client and run entity
    record : dict
        The verified ``audit.json`` (only handed to auditors once its digest matched).
    workdir : Path
        A temporary folder for downloads and re-runs (removed afterwards).
    roots : dict
        ``root name -> (folder or None, where it was found)``.
    manifests : dict
        ``role -> medgen.manifest.Manifest`` (digest verified) or None.
    """

    client: Any
    run: Any
    record: dict
    workdir: Path
    tracking_uri: str
    report: AuditReport
    options: AuditOptions
    roots: dict = field(default_factory=dict)
    manifests: dict = field(default_factory=dict)
    visited: set = field(default_factory=set)

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def path(self, ref: dict | None) -> Path | None:
        """Local path of a sealed ``{"root", "path"}`` reference (None when unknown)."""
        from medgen.track.lineage import resolve_ref

        return resolve_ref(ref, self.roots)

    def root(self, name: str) -> Path | None:
        return self.roots.get(name, (None, ""))[0]

    def artifact(self, artifact_path: str, run_id: str | None = None) -> Path:
        """Download an artifact of this run (or of ``run_id``) into the work folder."""
        from mlflow.artifacts import download_artifacts

        rid = run_id or self.run_id
        dst = self.workdir / "artifacts" / rid
        dst.mkdir(parents=True, exist_ok=True)
        return Path(download_artifacts(run_id=rid, artifact_path=artifact_path, dst_path=str(dst),
                                       tracking_uri=self.tracking_uri))

    def audit_linked(self, run_id: str, *, rerun: int | None = None) -> AuditReport:
        """Audit a run this one depends on (pipeline step, earlier attempt) with the same
        options; a run already audited in this audit is not audited twice."""
        if run_id in self.visited:
            rep = AuditReport(run_id)
            rep.ok("already audited above")
            return rep
        opts = AuditOptions(self.options.rerun if rerun is None else rerun, {},
                            dict(self.options.data_roots), self.options.audit_key_file)
        return _audit(self.client, self.tracking_uri, run_id, opts, self.visited)


def audit_run(run_id: str, *, tracking_uri: str | None = None, rerun: int = 0,
              manifests: dict[str, str] | None = None,
              data_root: str | os.PathLike | dict[str, str] | None = None,
              audit_key_file: str | None = None) -> AuditReport:
    """Check a sealed run. Returns the report (``passed`` False on any finding).

    ``data_root``: a folder (the root named ``data``) or ``{root name: folder}``. Raises
    :class:`medgen.track.store.RunNotFoundError` (malformed id, run not in the store) or
    :class:`~medgen.track.store.StoreNotFoundError`; reading never creates a store.
    """
    from medgen.track.store import check_run_id, client_for, open_store_for_run

    check_run_id(run_id)
    uri = open_store_for_run(tracking_uri, run_id)
    roots = (dict(data_root) if isinstance(data_root, dict)
             else {DEFAULT_ROOT: os.fspath(data_root)} if data_root else {})
    opts = AuditOptions(rerun, dict(manifests or {}), roots, audit_key_file)
    return _audit(client_for(uri), uri, run_id, opts, set())


def _get_run(client, uri: str, run_id: str):
    from mlflow.exceptions import MlflowException

    from medgen.track.store import retry, run_not_found

    try:
        return retry(lambda: client.get_run(run_id))
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise run_not_found(run_id, uri) from None
        raise


def _audit(client, uri: str, run_id: str, opts: AuditOptions, visited: set) -> AuditReport:
    visited.add(run_id)
    run = _get_run(client, uri, run_id)
    report = AuditReport(run_id)
    with tempfile.TemporaryDirectory(prefix="medgen-audit-") as tmp:
        record = _verified_record(client, uri, run, Path(tmp), opts, report)
        if record is None:
            return report
        report.kind = record.get("kind", "")
        _diff_state(record["state"], collect_state(client, run_id), report)
        _code_env(record, report)
        ctx = AuditContext(client, run, record, Path(tmp), uri, report, opts, visited=visited)
        _resolve_roots(ctx)
        _load_manifests(ctx)
        _run_auditor(ctx)
    return report


def _verified_record(client, uri, run, tmp: Path, opts: AuditOptions,
                     report: AuditReport) -> dict | None:
    """``audit.json`` once its digest (and signature, when signed) verified; else None."""
    from mlflow.artifacts import download_artifacts

    tags = run.data.tags
    sealed_sha = tags.get(TAG_AUDIT_SHA256)
    if not sealed_sha:
        report.fail("run was never sealed (no audit.json digest tag)")
        return None
    try:
        local = download_artifacts(run_id=run.info.run_id, artifact_path=AUDIT_FILE,
                                   dst_path=str(tmp), tracking_uri=uri)
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        report.fail("audit.json artifact is missing")
        return None
    if sha256_file(local) != sealed_sha:
        report.fail("audit.json was changed after the run was sealed")
        return None
    record = json.loads(Path(local).read_text())
    report.ok("audit.json matches its sealed digest")
    key = load_audit_key(opts.audit_key_file)
    if tags.get(TAG_AUDIT_HMAC):
        if key is None:
            report.warn("run is signed but no audit key was given; signature not checked")
        elif key.fingerprint != tags.get(TAG_AUDIT_KEY_FP):
            report.fail("signed with another audit key (fingerprint differs)")
        elif signature(key, canonical_json(record)) != tags[TAG_AUDIT_HMAC]:
            report.fail("audit signature does not verify")
        else:
            report.ok("audit signature verifies")
    if record.get("run_id") != run.info.run_id:
        report.fail("audit.json belongs to another run")
        return None
    return record


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
        if set(a) == set(b) and all(a[k] == b[k] for k in a):
            report.ok(f"{len(a)} {label}s unchanged")
    a, b = sealed.get("metrics", {}), now.get("metrics", {})
    for k in sorted(set(a) | set(b)):
        if k not in b or k not in a or a[k]["history_sha256"] != b[k]["history_sha256"]:
            report.fail(f"metric '{k}' history was changed after the run was sealed")
    if set(a) == set(b) and all(a[k]["history_sha256"] == b[k]["history_sha256"] for k in a):
        report.ok(f"{len(a)} metric histories unchanged")


def _code_env(record: dict, report: AuditReport) -> None:
    from medgen.track.lineage import differences_from_now

    code = record.get("code", {})
    report.differences_from_now.extend(differences_from_now(code, record.get("environment", {})))
    if code.get("commit") and not any(d.startswith("code:") for d in report.differences_from_now):
        report.ok(f"code commit {code['commit'][:12]} (dirty: {code.get('dirty')})")


def _resolve_roots(ctx: AuditContext) -> None:
    from medgen.track.lineage import resolve_roots

    ctx.roots = resolve_roots(ctx.record.get("roots", {}), ctx.run_id, ctx.tracking_uri,
                              ctx.options.data_roots)
    for name, (folder, source) in sorted(ctx.roots.items()):
        if folder is not None:
            ctx.report.ok(f"data root '{name}' found (from {source})")


def _manifest_file(ctx: AuditContext, role: str, info: dict) -> Path | None:
    """The input manifest of ``role``: given, at its recorded place, or the run's copy."""
    given = ctx.options.manifests.get(role)
    if given:
        return Path(given)
    local = ctx.path(info.get("manifest"))
    if local is not None and local.is_file():
        return local
    if info.get("artifact"):
        return ctx.artifact(info["artifact"])
    return None


def _load_manifests(ctx: AuditContext) -> None:
    """Load each sealed manifest, check its digest against the seal, re-hash its files."""
    from medgen.errors import MedgenError
    from medgen.manifest import Manifest
    from medgen.manifest.ops import validate_manifest

    report = ctx.report
    for role, info in ctx.record.get("manifests", {}).items():
        digest = ctx.record.get("input_manifests", {}).get(role)
        ctx.manifests[role] = None
        path = _manifest_file(ctx, role, info)
        if path is None:
            report.fail(f"manifest '{role}' not available: pass --manifest {role}=PATH")
            continue
        data = info.get("data")
        root = ctx.root(data) if data else None
        if data and root is None:
            report.fail(f"data of manifest '{role}' not found: pass --data-root {data}=DIR")
            continue
        try:
            m = Manifest.load(path, root)
            # the digest sealed is the manifest's (of its records) or the sha256 of its file
            same = digest in (m.digest, sha256_file(path))
            rep = validate_manifest(m) if same else None
        except MedgenError as exc:
            report.fail(f"manifest '{role}': {exc}")
            continue
        if rep is None:
            report.fail(f"manifest '{role}' digest {m.digest[:12]} differs from the sealed "
                        f"{str(digest)[:12]}")
            continue
        for p in rep.missing:
            report.fail(f"file '{p}' ({role}) is missing")
        for p in rep.changed:
            report.fail(f"file '{p}' ({role}) was changed (sha256 differs from the manifest)")
        if rep.passed:
            report.ok(f"{rep.ok} file(s) of manifest '{role}' re-hashed: unchanged")
        ctx.manifests[role] = m


def _run_auditor(ctx: AuditContext) -> None:
    from medgen.audit.plugins import get_auditor

    kind = ctx.record.get("kind", "")
    auditor = get_auditor(kind)
    if auditor is not None:
        ctx.report.add(auditor.check(ctx))
    if not ctx.options.rerun:
        return
    found = auditor.rerun(ctx, ctx.options.rerun) if auditor is not None else None
    if found is None:
        ctx.report.warn(f"no re-run check for runs of kind '{kind}'")
    else:
        ctx.report.add(found)
