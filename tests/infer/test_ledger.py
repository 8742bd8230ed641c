"""13.6: the ledger is always valid JSONL (a torn line is repaired on resume), and outputs and
ledgers get the same permissions (0666 & ~umask)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from medgen.infer.job import Job
from medgen.infer.ledger import Ledger
from medgen.infer.predictor import PredictorSpec
from medgen.infer.settings import InferenceSettings

from .infer_helpers import write_phantom

CPU1 = InferenceSettings(device="cpu", threads=1)


def _every_line_parses(path: Path) -> list[dict]:
    """What ``jq -c . ledger.jsonl`` checks: every line is one JSON value, newline-terminated."""
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]


def test_a_torn_last_line_is_repaired_on_resume(tmp_path, tiny_ckpt):
    src = tmp_path / "src"
    for i in range(3):
        write_phantom(src / f"s{i}.nii.gz", seed=i)
    dst = tmp_path / "dst"
    spec = PredictorSpec.make(tiny_ckpt, CPU1)
    assert Job(spec, src, dst).run().ok == 3
    ledger = dst / "ledger.jsonl"
    lines = _every_line_parses(ledger)
    # a kill in the middle of a write leaves a cut line without its newline
    whole = json.dumps({**lines[-1], "attempt": 2}, sort_keys=True)
    with open(ledger, "ab") as fh:
        fh.write(whole[: len(whole) // 2].encode())
    assert Ledger(ledger).bad_lines == 1  # reading never modifies
    assert not ledger.read_bytes().endswith(b"\n")
    s = Job(spec, src, dst).run()
    assert (s.skipped, s.exit_code) == (3, 0)  # the torn line did not change what is done
    assert _every_line_parses(ledger) == lines
    # an older medgen closed a torn line with a newline: an invalid line inside the file
    with open(ledger, "ab") as fh:
        fh.write(b'{"item": "x", "sta\n')
    write_phantom(src / "s3.nii.gz", seed=3)
    s = Job(spec, src, dst).run()
    assert (s.ok, s.skipped) == (1, 3)
    again = _every_line_parses(ledger)
    assert len(again) == 4 and again[:3] == lines


def test_appending_without_a_repair_never_glues_onto_a_torn_line(tmp_path):
    p = tmp_path / "ledger.jsonl"
    p.write_text(json.dumps({"item": "a", "status": "ok"}) + "\n" + '{"item": "b", "sta')
    led = Ledger(p)
    assert set(led.latest) == {"a"} and led.bad_lines == 1
    led.append({"item": "c", "status": "failed"})
    assert [e["item"] for e in _every_line_parses(p)] == ["a", "c"]


def test_outputs_and_ledgers_share_the_umask_rule(tmp_path, tiny_ckpt, ct5n_dir):
    """Run the CLI under umask 027 and 077: every file the job writes has 0666 & ~umask, every
    folder 0777 & ~umask (not the 0600 of temporary names) - except the item-id key, 0600."""
    import shutil

    src = tmp_path / "src"
    write_phantom(src / "mr" / "a.nii.gz", seed=1)
    shutil.copytree(ct5n_dir, src / "ct")
    for umask in (0o027, 0o077):
        dst = tmp_path / f"dst-{umask:o}"
        code = (f"import os, sys; os.umask({umask}); from medgen.cli import app; "
                f"sys.argv = ['medgen', 'denoise', '--model', {str(tiny_ckpt)!r}, {str(src)!r}, "
                f"{str(dst)!r}, '--no-track', '--quiet', '--threads', '1']; app()")
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert res.returncode == 0, res.stderr[-2000:]
        modes = {p.relative_to(dst).as_posix(): stat.S_IMODE(p.stat().st_mode)
                 for p in dst.rglob("*")}
        files = {k: m for k, m in modes.items() if (dst / k).is_file()}
        dirs = {k: m for k, m in modes.items() if (dst / k).is_dir()}
        assert {"ledger.jsonl", "summary.json", "output_manifest.json", "mr/a.nii.gz",
                "ct/IM00001.dcm"} <= set(files)
        assert files.pop(".medgen-item-key") == 0o600
        assert set(files.values()) == {0o666 & ~umask}, files
        assert set(dirs.values()) == {0o777 & ~umask}, dirs
