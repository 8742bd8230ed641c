"""Engines: one protocol, one registry with "did you mean", one attempt path for all of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medgen.cli import app
from medgen.errors import ConfigError
from medgen.infer.attempt import run_item
from medgen.infer.engines import ENGINES, Engine, check_engine_name, make_engine
from medgen.infer.job import Job
from medgen.infer.predictor import PredictorSpec
from medgen.infer.settings import InferenceSettings

CPU1 = InferenceSettings(device="cpu", threads=1)
INFER = Path(__file__).resolve().parents[2] / "medgen" / "infer"


def test_unknown_engine_suggests_the_nearest_name(tmp_path, tiny_ckpt, nifti_tree):
    with pytest.raises(ConfigError, match=r"--engine: unknown engine 'dsak' \(did you mean 'dask'\?\)"):
        check_engine_name("dsak")
    with pytest.raises(ConfigError, match=r"did you mean 'local'"):
        make_engine("locl")
    assert {"local", "dask"} <= set(ENGINES.names())
    assert isinstance(make_engine("local"), Engine) and isinstance(make_engine("dask"), Engine)
    # on the command line: exit 2, one line, before the model is fetched or DST is made
    store = tmp_path / "never.db"
    res = CliRunner().invoke(app, ["denoise", "--model", "runs:/0123abcd/checkpoints/best",
                                   str(nifti_tree), str(tmp_path / "out"), "--engine", "dsak",
                                   "--tracking-uri", f"sqlite:///{store}", "--quiet"])
    assert res.exit_code == 2
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert lines == ["error: --engine: unknown engine 'dsak' (did you mean 'dask'?); known: dask, local"]
    assert not store.exists() and not (tmp_path / "out").exists()


class SerialEngine:
    """A third-party engine in ten lines: every item through :func:`run_item` in this process."""

    name = "serial"

    def __init__(self, **_):
        pass

    def run(self, host, items, progress=None):
        for it in items:
            records = run_item(host.predictor, it, host.ctx, host.latest(it.id))
            for i, r in enumerate(records):
                host.record(r, progress, final=i == len(records) - 1)


def test_a_registered_engine_runs_the_same_attempt_path(tmp_path, tiny_ckpt, mixed_tree):
    ENGINES.register("serial", SerialEngine, overwrite=True)
    spec = PredictorSpec.make(tiny_ckpt, CPU1)
    try:
        local = Job(spec, mixed_tree, tmp_path / "local").run(engine="local")
        serial = Job(spec, mixed_tree, tmp_path / "serial").run(engine="serial")
    finally:
        ENGINES._items.pop("serial", None)
    assert (local.ok, local.quarantined) == (serial.ok, serial.quarantined) == (3, 4)

    def outputs(root):
        skip = {"ledger.jsonl", "summary.json", "quarantine.jsonl", ".medgen-job.lock",
                ".medgen-item-key", "output_manifest.json"}
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name not in skip}

    assert outputs(tmp_path / "local") == outputs(tmp_path / "serial")
    assert len(outputs(tmp_path / "local")) == 7


def _calls(path: Path) -> set[str]:
    """Dotted names of the calls made in a module (``ctx.sink.write``, ``a.load``...)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            out.add(".".join(reversed(parts)))
    return out


def test_only_the_attempt_module_loads_predicts_and_writes():
    """The attempt path is single: no engine (nor the job) reads inputs, writes outputs or
    classifies errors itself - the copy the local engine used to carry is gone."""
    for f in sorted(INFER.rglob("*.py")):
        calls = _calls(f)
        mine = {c for c in calls if c.endswith(("sink.write", "source.load", "classify",
                                                 "source.fingerprint"))}
        if f.name == "attempt.py":
            assert {c.rsplit(".", 2)[-2] + "." + c.rsplit(".", 1)[-1] if "." in c else c
                    for c in mine} >= {"sink.write", "source.load", "classify"}
        elif f.name not in ("auditor.py",):  # the auditor re-hashes inputs to match sealed rows
            assert not mine, (f.name, mine)
    local = (INFER / "engines" / "local.py").read_text()
    assert "class Pipeline" not in local and "def attempt_item" not in local
