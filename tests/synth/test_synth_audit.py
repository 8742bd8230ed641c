"""The synthesis auditor (kind ``synthesize``): a tracked synthesis run audits PASS with its samples
regenerated bit-identically; a changed sample file or a record naming another generator FAILs."""

from __future__ import annotations

import json

from medgen.manifest import Manifest
from medgen.synth.sampling import synthesize


def test_synthesis_run_audit_and_rerun(trained_vae, tmp_path, monkeypatch):
    from medgen.audit import audit_run

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = synthesize(trained_vae.last, 3, tmp_path / "set", conditions=["side=left"], seed=3,
                     batch=2, memorization=False, tracking_uri=uri, device="cpu")
    rep = audit_run(res.run_id, tracking_uri=uri, rerun=2)
    assert rep.passed, rep.failures
    text = " | ".join(rep.checks)
    assert f"{res.n_written} synthetic record(s) name this run and the sealed generator" in text
    assert text.count("re-generated bit-identical") == 2
    assert f"{res.n_written} file(s) of manifest 'synthetic' re-hashed: unchanged" in text

    m = Manifest.load(res.manifest)
    sample = res.dst / m.records[0].files[0].path
    orig = sample.read_bytes()
    sample.write_bytes(orig[:-1] + bytes([orig[-1] ^ 1]))
    try:
        rep = audit_run(res.run_id, tracking_uri=uri)
    finally:
        sample.write_bytes(orig)
    assert any(f"file '{m.records[0].files[0].path}' (synthetic) was changed" in x
               for x in rep.failures), rep.failures

    # a record rewritten to name another generator: the manifest digest no longer matches
    text = res.manifest.read_text()
    wsha = m.records[0].extra["weights_sha256"]
    res.manifest.write_text(text.replace(wsha, "0" * 64, 1))
    try:
        rep = audit_run(res.run_id, tracking_uri=uri)
    finally:
        res.manifest.write_text(text)
    assert any("manifest 'synthetic' digest" in x for x in rep.failures), rep.failures
    assert json.loads(res.manifest.read_text().splitlines()[0])
