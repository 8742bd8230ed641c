"""``medgen config check`` and ``medgen config upgrade``."""

from __future__ import annotations

import yaml

from tests.config.conftest import REPO, medgen

V1 = """# an old config
version: 1
task: denoise
mode: self-supervised
model: {name: unet, spatial_dims: 3, channels: [4, 8]}
data: {manifest: MANIFEST, patch_size: [16, 16, 16]}
blindspot: {fraction: 0.05}
"""


def test_upgrade_prints_the_current_shape(tmp_path, manifests):
    old = tmp_path / "old.yaml"
    old.write_text(V1.replace("MANIFEST", str(manifests["split"])))
    rep, out, err = medgen("config", "upgrade", old, cwd=tmp_path)
    assert rep["code"] == 0 and rep["heavy"] == [], err
    new = yaml.safe_load(out)
    assert list(new)[:2] == ["version", "task"] and new["version"] == 2
    assert new["task"] == {"name": "denoise", "mode": "self-supervised",
                           "blindspot": {"fraction": 0.05}}
    (tmp_path / "new.yaml").write_text(out)
    rep, out, err = medgen("config", "check", tmp_path / "new.yaml", cwd=tmp_path)
    assert rep["code"] == 0 and "ok: new.yaml: training config v2 (task denoise" in out, err
    assert "deprecated" not in err


def test_upgrade_never_overwrites_its_input(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text(V1)
    before = old.read_text()
    rep, out, err = medgen("config", "upgrade", old, "-o", old, cwd=tmp_path)
    assert rep["code"] == 2 and "refusing to overwrite the input" in err
    assert old.read_text() == before


def test_old_config_still_trains_config_check_with_one_note(tmp_path, manifests):
    old = tmp_path / "old.yaml"
    old.write_text(V1.replace("MANIFEST", str(manifests["split"])))
    rep, out, err = medgen("config", "check", old, cwd=tmp_path)
    assert rep["code"] == 0, err
    notes = [ln for ln in err.splitlines() if "deprecated" in ln]
    assert len(notes) == 1 and "medgen config upgrade old.yaml" in notes[0]


def test_check_names_the_bad_key(tmp_path):
    rep, out, err = medgen("config", "check", REPO / "configs" / "train" / "sr-tiny.yaml",
                           "--set", "task.profile=rectangular", "--set", "data.manifest=/no.jsonl",
                           cwd=tmp_path)
    assert rep["code"] == 2 and err.strip() == "error: data.manifest: no.jsonl: manifest not found"
    rep, out, err = medgen("config", "check", REPO / "pipelines" / "denoise-mri.yaml", cwd=tmp_path)
    assert rep["code"] == 0 and "pipeline 'denoise-mri', 8 steps, rough estimate" in out, err
