"""The result of an audit: checks passed, failures, warnings, differences from now; JSON + HTML."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Finding:
    """One line of an audit: ``status`` is ``ok``, ``fail`` or ``warn``."""

    status: str
    message: str


def ok(message: str) -> Finding:
    return Finding("ok", message)


def fail(message: str) -> Finding:
    return Finding("fail", message)


def warn(message: str) -> Finding:
    return Finding("warn", message)


@dataclass
class AuditReport:
    run_id: str
    kind: str = ""
    passed: bool = True
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)
    differences_from_now: list[str] = field(default_factory=list)
    #: audits of other runs this one depends on (pipeline steps, earlier training attempts)
    linked: dict[str, dict] = field(default_factory=dict)

    def fail(self, msg: str) -> None:
        self.passed = False
        self.failures.append(msg)

    def ok(self, msg: str) -> None:
        self.checks.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)

    def add(self, findings) -> None:
        """Record findings (a plugin's ``check``/``rerun`` result; ``(ok, msg)`` pairs too)."""
        for f in findings or ():
            if isinstance(f, tuple):
                f = Finding("ok" if f[0] else "fail", f[1])
            {"ok": self.ok, "fail": self.fail, "warn": self.warn}[f.status](f.message)

    def include(self, label: str, other: AuditReport) -> None:
        """Fold the audit of a linked run into this one: its failures fail this audit."""
        self.linked[label] = other.to_dict()
        for msg in other.failures:
            self.fail(f"{label}: {msg}")
        for msg in other.warnings:
            self.warn(f"{label}: {msg}")
        if other.passed:
            self.ok(f"{label}: PASS ({len(other.checks)} checks)")

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "kind": self.kind, "result": "PASS" if self.passed else "FAIL",
                "failures": self.failures, "warnings": self.warnings, "checks": self.checks,
                "differences_from_now": self.differences_from_now, "linked": self.linked}

    def write(self, out_dir: str | os.PathLike) -> tuple[Path, Path]:
        """``audit_report.json`` and ``audit_report.html`` in ``out_dir`` (atomic)."""
        from medgen.utils.atomic import atomic_write_text

        out = Path(out_dir)
        d = self.to_dict()
        jp = atomic_write_text(out / "audit_report.json", json.dumps(d, indent=1) + "\n")
        color = "#1a7f37" if self.passed else "#cf222e"

        def ul(items):
            return ("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>"
                    if items else "<p>none</p>")

        rid = html.escape(self.run_id)
        page = (f"<!doctype html><meta charset='utf-8'><title>medgen audit {rid}</title>"
                f"<body style='font-family:sans-serif;max-width:60em;margin:2em auto'>"
                f"<h1>Audit of run {rid} ({html.escape(self.kind)}): "
                f"<span style='color:{color}'>{d['result']}</span></h1>"
                f"<h2>Failures</h2>{ul(self.failures)}<h2>Warnings</h2>{ul(self.warnings)}"
                f"<h2>Differences from now (code, environment)</h2>{ul(self.differences_from_now)}"
                f"<h2>Checks passed</h2>{ul(self.checks)}</body>")
        hp = atomic_write_text(out / "audit_report.html", page)
        return jp, hp
