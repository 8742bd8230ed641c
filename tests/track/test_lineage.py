"""Lineage lives once (medgen.track.lineage): an honest dirty flag, data roots that never put an
absolute path in a record, and their resolution at audit time."""

from __future__ import annotations

import json
import subprocess

from medgen.track import lineage


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(repo), "PATH": "/usr/bin:/bin"})


def test_dirty_flag_ignores_what_medgen_writes_but_not_code(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    _git(repo, "add", "code.py")
    _git(repo, "commit", "-q", "-m", "init")
    # a store, its lock and ready files, its artifacts and the local root index: outputs
    for f in ("mlflow.db", "mlflow.db.lock", "mlflow.db.medgen-ready", "sub/x.db.lock",
              "mlartifacts/e/1/a.txt", ".medgen/roots/r.json", "custom.db"):
        (repo / f).parent.mkdir(parents=True, exist_ok=True)
        (repo / f).write_text("out")
    tags, diff = lineage.git_state(repo, exclude=[repo / "custom.db"])
    assert tags["medgen.git.dirty"] == "false" and tags["medgen.git.untracked"] == 0 and diff == b""
    (repo / "new_module.py").write_text("y = 2\n")  # untracked code: dirty
    tags, _ = lineage.git_state(repo, exclude=[repo / "custom.db"])
    assert tags["medgen.git.dirty"] == "true" and tags["medgen.git.untracked"] == 1
    (repo / "new_module.py").unlink()
    (repo / "code.py").write_text("x = 2\n")  # a modified tracked file: dirty, diff recorded
    tags, diff = lineage.git_state(repo)
    assert tags["medgen.git.dirty"] == "true" and b"x = 2" in diff
    assert tags["medgen.git.diff_sha256"] == lineage.sha256_bytes(diff)
    assert lineage.git_state(tmp_path / "not-a-repo")[0]["medgen.git.commit"] == "unknown"


def test_lineage_tags_round_trip():
    env, lock = lineage.environment_state()
    tags = {**env, **lineage.seed_tags({"seed": 3, "data": 5}),
            "medgen.git.commit": lineage.git_commit() or "unknown"}
    rec = lineage.lineage_from_tags({k: str(v) for k, v in tags.items()})
    assert rec["environment"]["lock_sha256"] == lineage.sha256_bytes(lock.encode())
    assert rec["environment"]["versions"]["medgen"] == lineage.package_version("medgen")
    assert rec["seeds"] == {"medgen.seed": "3", "medgen.seed.data": "5"}
    assert lineage.differences_from_now(rec["code"], rec["environment"]) == []
    moved = {**rec["environment"], "versions": {"numpy": "0.0.1"}}
    assert lineage.differences_from_now({}, moved)[0].startswith("package numpy: run 0.0.1, now ")


def test_data_roots_record_refs_and_resolve(tmp_path, monkeypatch):
    from medgen.track.phi import PHIGuard

    work, data = tmp_path / "work", tmp_path / "data"
    (work / "inside").mkdir(parents=True)
    (data / "DOE^JOHN").mkdir(parents=True)
    monkeypatch.chdir(work)
    roots = lineage.DataRoots()
    g = PHIGuard()
    assert roots.ref(data / "m.jsonl", "manifest", guard=g) == {"root": "manifest", "path": "m.jsonl"}
    assert roots.ref(data / "DOE^JOHN", "subject", folder=True, guard=g)["path"] == "."
    assert roots.ref(data / "DOE^JOHN" / "x.nii.gz", "manifest", guard=g)["path"] is None
    assert roots.ref(data / "ok" / "x.nii.gz", "manifest", guard=g)["path"] == "ok/x.nii.gz"
    roots.add("local", work / "inside")
    rec = roots.record(g)
    assert rec == {"local": {"relative": "inside"}, "manifest": {"relative": None},
                   "subject": {"relative": None}}
    assert str(tmp_path) not in json.dumps(rec)
    uri = "sqlite:///" + str(tmp_path / "store" / "mlflow.db")
    idx = roots.write_index("r1", uri)
    assert idx == tmp_path / "store" / ".medgen" / "roots" / "r1.json"
    found = lineage.resolve_roots(rec, "r1", uri)
    assert found["manifest"] == (data, "the local root index")
    over = lineage.resolve_roots(rec, "r1", uri, {"manifest": str(tmp_path)})
    assert over["manifest"] == (tmp_path, "--data-root")
    monkeypatch.chdir(work)
    assert lineage.resolve_roots(rec, "other", uri)["local"][1] == "the recorded relative path"
    assert lineage.resolve_ref({"root": "manifest", "path": "../escape"}, found) is None
    assert lineage.resolve_ref({"root": "manifest", "path": "m.jsonl"}, found) == data / "m.jsonl"
