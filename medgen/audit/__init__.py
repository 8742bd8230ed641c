"""Sealed run records and one-command audits.

MLflow records runs but verifies nothing: a finished run's params stay immutable but its tags,
metrics and artifacts can still be changed. At the end of every run medgen builds ``audit.json``
(digests of the config, code, environment, input manifests, weights, outputs, and of every
param, tag, metric history and artifact as they were) and stores its sha256 in the tag
``medgen.audit.sha256`` (optionally an HMAC with an audit key kept outside MLflow).
``medgen audit RUN_ID`` recomputes everything and names whatever changed since.

This package is a host: it checks what every run shares and hands the rest to the
:class:`Auditor` registered for the run's kind (:mod:`medgen.audit.plugins`); it imports none of
the packages that make runs.
"""

from medgen.audit.plugins import AUDITORS, Auditor, get_auditor, register_auditor
from medgen.audit.report import AuditReport, Finding, fail, ok, warn
from medgen.audit.seal import TAG_AUDIT_HMAC, TAG_AUDIT_SHA256, collect_state, seal_run
from medgen.audit.verify import AuditContext, AuditOptions, audit_run

__all__ = ["AUDITORS", "TAG_AUDIT_HMAC", "TAG_AUDIT_SHA256", "AuditContext", "AuditOptions",
           "AuditReport", "Auditor", "Finding", "audit_run", "collect_state", "fail",
           "get_auditor", "ok", "register_auditor", "seal_run", "warn"]
