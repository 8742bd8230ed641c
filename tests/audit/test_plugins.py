"""Audits as plugins: the host imports none of the packages that make runs; built-ins resolve to
their packages; a third-party auditor installed as an entry point (``medgen.auditors``) is found
and its checks and re-runs count - against a real sqlite store and a real ``mlflow server``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from .conftest import clean_env

PLUGIN = '''
from medgen.audit import fail, ok


class ThresholdAuditor:
    """Third-party kind 'thirdparty-score': the sealed score must stay above its threshold."""

    def check(self, ctx):
        lin = ctx.record["lineage"]
        if lin["score"] >= lin["threshold"]:
            yield ok(f"score {lin['score']} above {lin['threshold']}")
        else:
            yield fail(f"score {lin['score']} below {lin['threshold']}")

    def rerun(self, ctx, n):
        return [ok(f"third-party re-run of {n} item(s)")]
'''

DRIVER = '''
import json, sys
from medgen.audit import audit_run, get_auditor, seal_run
from medgen.track import start_run

uri = sys.argv[1]
out = {"auditor": type(get_auditor("thirdparty-score")).__module__}
for name, score in (("good", 0.9), ("bad", 0.1)):
    with start_run("thirdparty", name, tracking_uri=uri) as run:
        run.log_metrics({"score": score})
        seal_run(run, kind="thirdparty-score", lineage={"score": score, "threshold": 0.5})
    rep = audit_run(run.run_id, tracking_uri=uri, rerun=2)
    out[name] = {"passed": rep.passed, "checks": rep.checks, "failures": rep.failures,
                 "warnings": rep.warnings}
print(json.dumps(out))
'''


def test_host_imports_no_run_maker():
    code = ("import sys, medgen.audit, medgen.audit.verify; "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('medgen.')}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stdout.replace("'", '"')))
    assert not loaded & {"train", "infer", "synth", "pipeline", "models", "cli"}, loaded


def test_builtin_auditors_live_in_their_packages():
    from medgen.audit import Auditor, get_auditor

    where = {"train": "medgen.train.auditor", "train-attempt": "medgen.train.auditor",
             "infer": "medgen.infer.auditor", "synthesize": "medgen.synth.auditor",
             "pipeline": "medgen.pipeline.auditor"}
    for kind, module in where.items():
        a = get_auditor(kind)
        assert isinstance(a, Auditor) and type(a).__module__ == module
    assert get_auditor("no-such-kind") is None


def test_register_auditor_in_code(tmp_path, monkeypatch):
    from medgen.audit import AUDITORS, audit_run, fail, register_auditor, seal_run
    from medgen.track import start_run

    class Refuses:
        def check(self, ctx):
            yield fail("refused by an in-code auditor")

        def rerun(self, ctx, n):
            return None  # nothing to re-run: the host says so

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    register_auditor("incode-kind", Refuses)
    try:
        with start_run("incode") as run:
            seal_run(run, kind="incode-kind")
        rep = audit_run(run.run_id, rerun=1)
    finally:
        AUDITORS._items.pop("incode-kind")
    assert not rep.passed and rep.failures == ["refused by an in-code auditor"]
    assert rep.warnings == ["no re-run check for runs of kind 'incode-kind'"]


@pytest.fixture
def third_party(tmp_path):
    """A package installed the way pip installs one: module + dist-info with entry_points.txt."""
    site = tmp_path / "site"
    (site / "thirdparty_audit.py").parent.mkdir(parents=True)
    (site / "thirdparty_audit.py").write_text(textwrap.dedent(PLUGIN))
    info = site / "thirdparty_audit-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-audit\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[medgen.auditors]\nthirdparty-score = thirdparty_audit:ThresholdAuditor\n")
    (tmp_path / "driver.py").write_text(DRIVER)
    return site


def _drive(third_party, uri, cwd):
    import os

    env = clean_env(PYTHONPATH=os.pathsep.join([str(third_party), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, str(third_party.parent / "driver.py"), uri],
                       capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def _check(out):
    assert out["auditor"] == "thirdparty_audit"
    assert out["good"]["passed"], out["good"]
    assert "score 0.9 above 0.5" in out["good"]["checks"]
    assert "third-party re-run of 2 item(s)" in out["good"]["checks"]
    assert not out["bad"]["passed"] and out["bad"]["failures"] == ["score 0.1 below 0.5"]


def test_entry_point_auditor_sqlite(third_party, tmp_path):
    _check(_drive(third_party, f"sqlite:///{tmp_path / 'store.db'}", tmp_path))


def test_entry_point_auditor_server(third_party, mlflow_server, tmp_path):
    uri, _ = mlflow_server
    _check(_drive(third_party, uri, tmp_path))
