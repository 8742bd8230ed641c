"""The command line as a person uses it: help speed, version, config errors, conversion."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from medgen.config import load_config
from medgen.config.base import StrictModel
from medgen.errors import ConfigError


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "medgen", *args], capture_output=True, text=True,
                          timeout=120, **kw)


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys, time; t=time.perf_counter(); sys.argv=['medgen','--help'];\n"
            "from medgen.cli import app\n"
            "try:\n    app()\nexcept SystemExit:\n    pass\n"
            "heavy=[m for m in ('torch','monai','mlflow','pydicom','SimpleITK','nibabel','dask') if m in sys.modules]\n"
            "print('HEAVY', heavy, time.perf_counter()-t, file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    line = [x for x in r.stderr.splitlines() if x.startswith("HEAVY")][0]
    assert line.startswith("HEAVY []"), line
    t0 = time.perf_counter()
    r = run("--help")
    assert r.returncode == 0 and "manifest" in r.stdout
    assert time.perf_counter() - t0 < 3.0  # includes interpreter start-up; measured ~0.3 s here


def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.startswith("medgen ")


class Train(StrictModel):
    lr: float = 1e-3
    max_steps: int = 10


class Root(StrictModel):
    version: int = 1
    train: Train = Train()


def test_unknown_key_suggests_nearest(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("version: 1\ntrain:\n  lr: 0.1\n  max_stpes: 3\n")
    with pytest.raises(ConfigError) as ei:
        load_config(Root, p)
    assert "unknown key 'train.max_stpes'" in str(ei.value)
    assert "did you mean 'max_steps'" in str(ei.value)


def test_set_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 0.1\n")
    cfg = load_config(Root, p, ["train.max_steps=7", "train.lr=2e-4"])
    assert cfg.train.max_steps == 7 and cfg.train.lr == pytest.approx(2e-4)
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        load_config(Root, p, ["trian.lr=1"])


def test_convert_and_info(ct5n_dir, tmp_path):
    r = run("convert", str(ct5n_dir), str(tmp_path / "x.nii.gz"))
    assert r.returncode == 0, r.stderr
    r = run("info", str(tmp_path / "x.nii.gz"))
    assert r.returncode == 0 and '"shape": [16, 16, 5]' in r.stdout
    r = run("info", str(ct5n_dir.parent.parent / "98892003" / "MR700"))
    assert r.returncode == 3 and r.stderr.count("\n") == 1 and "mixed orientations" in r.stderr
