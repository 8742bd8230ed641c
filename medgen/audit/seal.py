"""Build and log the sealed record of a run (``audit.json``)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from medgen.utils.hashing import canonical_json, sha256_bytes, sha256_file

log = logging.getLogger("medgen.audit")

AUDIT_FILE = "audit.json"
SCHEMA = "medgen-audit/2"
TAG_AUDIT_SHA256 = "medgen.audit.sha256"
TAG_AUDIT_HMAC = "medgen.audit.hmac"
TAG_AUDIT_KEY_FP = "medgen.audit.key_fingerprint"
ENV_AUDIT_KEY_FILE = "MEDGEN_AUDIT_KEY_FILE"
#: tags that are not part of what a run *claims*: the seal's own tags, MLflow's bookkeeping, and
#: forward links a later run adds (``medgen.resume.successor``: proven by the successor's seal,
#: which names this run and its seal digest)
UNSEALED_TAG_PREFIXES = ("medgen.audit.",)
UNSEALED_TAGS = {"mlflow.log-model.history", "medgen.resume.successor"}


def _list_files(client, run_id: str, path: str | None = None) -> list[str]:
    out = []
    for a in client.list_artifacts(run_id, path):
        if a.is_dir:
            out.extend(_list_files(client, run_id, a.path))
        else:
            out.append(a.path)
    return out


def collect_state(client, run_id: str) -> dict[str, Any]:
    """Digests of everything a run holds now: params, tags, metric histories, artifact files."""
    from mlflow.artifacts import download_artifacts

    run = client.get_run(run_id)
    params = {k: sha256_bytes(v.encode()) for k, v in run.data.params.items()}
    tags = {k: sha256_bytes(v.encode()) for k, v in run.data.tags.items()
            if not k.startswith(UNSEALED_TAG_PREFIXES) and k not in UNSEALED_TAGS}
    metrics = {}
    for key in run.data.metrics:
        hist = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        metrics[key] = {"n": len(hist), "last": hist[-1][1] if hist else None,
                        "history_sha256": sha256_bytes(canonical_json([[s, v] for s, v in hist]))}
    artifacts = {}
    with tempfile.TemporaryDirectory(prefix="medgen-audit-") as tmp:
        for path in _list_files(client, run_id):
            if path == AUDIT_FILE:
                continue
            local = download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp,
                                       tracking_uri=client._tracking_client.tracking_uri)
            artifacts[path] = sha256_file(local)
    return {"params": params, "tags": tags, "metrics": metrics, "artifacts": artifacts}


def load_audit_key(path: str | os.PathLike | None = None):
    """The audit (signing) key: ``path`` or ``$MEDGEN_AUDIT_KEY_FILE``; None when neither is set."""
    from medgen.keys import load_key

    p = path or os.environ.get(ENV_AUDIT_KEY_FILE)
    return load_key(p) if p else None


def signature(key, data: bytes) -> str:
    return hmac.new(key.secret, b"medgen-audit\x00" + data, hashlib.sha256).hexdigest()


def seal_run(run, *, kind: str, lineage: Mapping[str, Any] | None = None,
             rerun: Mapping[str, Any] | None = None, roots=None,
             manifests: Mapping[str, Mapping[str, Any]] | None = None,
             audit_key_file: str | os.PathLike | None = None) -> str:
    """Log ``audit.json`` for ``run`` (a :class:`medgen.track.Run`) and tag its sha256.

    Call it last, after every artifact, param, tag and metric of the run is logged: anything
    changed afterwards is reported by :func:`medgen.audit.audit_run`.

    Parameters
    ----------
    kind : str
        What the run did (``train``, ``infer``, ``pipeline``, ...): selects its auditor
        (:mod:`medgen.audit.plugins`).
    lineage : dict
        Digests the run vouches for (weights, outputs, linked runs, ...).
    rerun : dict
        What the kind's auditor needs to re-run part of the run (paths as data-root references,
        see :class:`medgen.track.lineage.DataRoots`; never absolute paths).
    roots : medgen.track.lineage.DataRoots
        The folders the run's inputs live under: recorded by name (absolute folders only in the
        local root index, outside MLflow).
    manifests : dict
        ``role -> {"manifest": ref, "data": root name, "artifact": artifact path or None}``: the
        manifests of the data the run read or wrote (its digest in tag
        ``medgen.manifest.<role>.sha256``); the audit loads each, checks it against the sealed
        digest and re-hashes its files one by one.
    """
    from medgen.track.lineage import lineage_from_tags

    client = run.client
    tags = client.get_run(run.run_id).data.tags
    record = {
        "schema": SCHEMA,
        "run_id": run.run_id,
        "experiment_id": run.experiment_id,
        "kind": kind,
        "sealed_at": int(time.time()),
        "config_sha256": tags.get("medgen.config_sha256"),
        **lineage_from_tags(tags),
        "input_manifests": {k.split(".")[2]: v for k, v in tags.items()
                            if k.startswith("medgen.manifest.") and k.endswith(".sha256")},
        "roots": roots.record(run.guard) if roots is not None else {},
        "manifests": dict(manifests or {}),
        "lineage": dict(lineage or {}),
        "rerun": dict(rerun or {}),
        "state": collect_state(client, run.run_id),
    }
    digest = run.log_json(record, AUDIT_FILE, on_phi="raise", canonical=True)
    tags_out = {TAG_AUDIT_SHA256: digest}
    key = load_audit_key(audit_key_file)
    if key is not None:
        tags_out[TAG_AUDIT_HMAC] = signature(key, canonical_json(record))
        tags_out[TAG_AUDIT_KEY_FP] = key.fingerprint
    run.set_tags(tags_out)
    if roots is not None:
        roots.write_index(run.run_id, run.tracking_uri)
    log.info("sealed run %s (audit.json sha256 %s)", run.run_id, digest[:12])
    return digest
