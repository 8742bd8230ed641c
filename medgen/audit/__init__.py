"""Sealed run records and one-command audits.

MLflow records runs but verifies nothing: a finished run's params stay immutable but its tags,
metrics and artifacts can still be changed. At the end of every run medgen builds ``audit.json``
(digests of the config, code, environment, input manifests, weights, outputs, and of every
param, tag, metric history and artifact as they were) and stores its sha256 in the tag
``medgen.audit.sha256`` (optionally an HMAC with an audit key kept outside MLflow).
``medgen audit RUN_ID`` recomputes everything and names whatever changed since.
"""

from medgen.audit.seal import TAG_AUDIT_HMAC, TAG_AUDIT_SHA256, collect_state, seal_run
from medgen.audit.verify import AuditReport, audit_run

__all__ = ["TAG_AUDIT_HMAC", "TAG_AUDIT_SHA256", "AuditReport", "audit_run", "collect_state", "seal_run"]
