"""Auditors: what each kind of run adds to an audit, as plugins of the audit host.

The host (:func:`medgen.audit.audit_run`) checks what every sealed run has in common: the seal,
the state of params/tags/metrics/artifacts, the input manifests and the data behind them, code
and package differences. What is particular to a kind of run - re-hashing a batch job's inputs,
re-running a training step, re-auditing a pipeline's step runs - lives with the code that makes
that kind of run, as an :class:`Auditor` registered under the ``kind`` the run was sealed with.

The host imports none of them: built-ins are registered here by ``"module:attr"`` strings and
imported on first use (like the model registry); a third-party package adds its own through the
entry-point group ``medgen.auditors``::

    [project.entry-points."medgen.auditors"]
    my-kind = "my_package.audit:MyAuditor"

or, in code, :func:`register_auditor`. An entry may be an :class:`Auditor` instance or a class
(instantiated without arguments).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from medgen.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from medgen.audit.report import Finding

#: :class:`medgen.audit.verify.AuditContext` (not imported: the verifier imports this module)
AuditContext = Any


@runtime_checkable
class Auditor(Protocol):
    """What a kind of run adds to its audit.

    ``check(ctx)`` runs on every audit; ``rerun(ctx, n)`` only with ``--rerun N`` and returns None
    when the kind has nothing to re-run (the host then warns). Both return findings
    (:func:`medgen.audit.ok` / :func:`~medgen.audit.fail` / :func:`~medgen.audit.warn`, or
    ``(passed, message)`` pairs). ``ctx`` (:class:`medgen.audit.AuditContext`) gives the sealed
    record, the MLflow run, resolved data roots and input manifests, artifact download and
    :meth:`~medgen.audit.AuditContext.audit_linked` for runs this one depends on.
    """

    def check(self, ctx: AuditContext) -> Iterable[Finding | tuple[bool, str]]: ...

    def rerun(self, ctx: AuditContext, n: int) -> Iterable[Finding | tuple[bool, str]] | None: ...


#: kind -> Auditor, auditor class or "module:attr" (entry-point group ``medgen.auditors``)
AUDITORS: Registry[Any] = Registry("auditors")

_BUILTIN = {
    "train": "medgen.train.auditor:TrainAuditor",
    "train-attempt": "medgen.train.auditor:TrainAuditor",
    "infer": "medgen.infer.auditor:InferAuditor",
    "synthesize": "medgen.synth.auditor:SynthesisAuditor",
    "pipeline": "medgen.pipeline.auditor:PipelineAuditor",
}
for _kind, _target in _BUILTIN.items():
    AUDITORS.register(_kind, _target)


def register_auditor(kind: str, auditor: Any, *, overwrite: bool = False) -> Any:
    """Register ``auditor`` (instance, class or ``"module:attr"``) for runs sealed as ``kind``."""
    return AUDITORS.register(kind, auditor, overwrite=overwrite)


def _load(entry: Any) -> Any:
    if isinstance(entry, str):
        import importlib

        mod, _, attr = entry.partition(":")
        entry = getattr(importlib.import_module(mod), attr)
    return entry() if isinstance(entry, type) else entry


def get_auditor(kind: str) -> Auditor | None:
    """The auditor of ``kind`` (built-in, registered or an entry point), or None."""
    if kind not in AUDITORS and kind not in AUDITORS.names():
        return None
    auditor = _load(AUDITORS.get(kind))
    if not isinstance(auditor, Auditor):
        from medgen.errors import ConfigError

        raise ConfigError(kind, "registered auditor has no check(ctx) and rerun(ctx, n)")
    return auditor
