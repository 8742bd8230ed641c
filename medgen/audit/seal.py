"""Build and log the sealed record of a run (``audit.json``)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from medgen.utils.hashing import canonical_json, sha256_bytes, sha256_file

log = logging.getLogger("medgen.audit")

AUDIT_FILE = "audit.json"
SCHEMA = "medgen-audit/1"
TAG_AUDIT_SHA256 = "medgen.audit.sha256"
TAG_AUDIT_HMAC = "medgen.audit.hmac"
TAG_AUDIT_KEY_FP = "medgen.audit.key_fingerprint"
ENV_AUDIT_KEY_FILE = "MEDGEN_AUDIT_KEY_FILE"
# tags that are not part of what a run *claims*: the seal's own tags, and MLflow's bookkeeping
_UNSEALED_TAG_PREFIXES = ("medgen.audit.",)
_UNSEALED_TAGS = {"mlflow.log-model.history"}


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
            if not k.startswith(_UNSEALED_TAG_PREFIXES) and k not in _UNSEALED_TAGS}
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


def seal_run(run, *, kind: str, lineage: dict[str, Any] | None = None,
             rerun: dict[str, Any] | None = None, audit_key_file: str | os.PathLike | None = None) -> str:
    """Log ``audit.json`` for ``run`` (a :class:`medgen.track.Run`) and tag its sha256.

    Call it last, after every artifact, param, tag and metric of the run is logged: anything
    changed afterwards is reported by :func:`medgen.audit.audit_run`.

    Parameters
    ----------
    kind : str
        What the run did (``train``, ``denoise``, ...): selects the re-run check of the audit.
    lineage : dict
        Digests the run vouches for (input manifests, weights, outputs, ...).
    rerun : dict
        What the audit needs to re-run part of the run (non-identifying; paths relative).
    """
    client = run.client
    data = client.get_run(run.run_id).data
    tags = data.tags
    record = {
        "schema": SCHEMA,
        "run_id": run.run_id,
        "experiment_id": run.experiment_id,
        "kind": kind,
        "config_sha256": tags.get("medgen.config_sha256"),
        "code": {"commit": tags.get("medgen.git.commit"), "dirty": tags.get("medgen.git.dirty"),
                 "diff_sha256": tags.get("medgen.git.diff_sha256")},
        "environment": {"lock_sha256": tags.get("medgen.env.lock_sha256"),
                        "python": tags.get("medgen.python"), "torch": tags.get("medgen.torch"),
                        "cuda": tags.get("medgen.torch.cuda"), "driver": tags.get("medgen.cuda.driver"),
                        "gpu": tags.get("medgen.gpu"),
                        "versions": {k.removeprefix("medgen.version."): v for k, v in tags.items()
                                     if k.startswith("medgen.version.")}},
        "input_manifests": {k.split(".")[2]: v for k, v in tags.items()
                            if k.startswith("medgen.manifest.") and k.endswith(".sha256")},
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
    log.info("sealed run %s (audit.json sha256 %s)", run.run_id, digest[:12])
    return digest


def rel_hint(path: str | os.PathLike | None) -> str | None:
    """``path`` relative to the working directory when it lies inside it (else None): where an
    auditor standing in the same project folder finds the data again, without absolute paths."""
    if path is None:
        return None
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return None
