"""Inference settings are typed: every bad value is one line, exit 2, before any work starts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medgen.cli import app
from medgen.errors import ConfigError
from medgen.infer.settings import InferenceSettings, inference_settings, job_settings

BAD = [
    (["--engine", "dsak"], "--engine: unknown engine 'dsak' (did you mean 'dask'?)"),
    (["--device", "gpu"], "--device: 'gpu': use auto, cpu, cuda or cuda:N"),
    (["--device", "cuda:x"], "--device: 'cuda:x'"),
    (["--roi", "96,a"], "--roi: '96,a': integers like 96 or 96,96,64"),
    (["--roi", "0"], "--roi: window sizes must be between 1 and 65536"),
    (["--roi", "8,8,8,8"], "--roi: one, two (2D models) or three window sizes"),
    (["--overlap", "1.5"], "--overlap: Input should be less than 1"),
    (["--sw-batch-size", "0"], "--sw-batch-size: Input should be greater than or equal to 1"),
    (["--output-format", "png"], "--output-format: Input should be 'auto', 'nifti' or 'dicom'"),
    (["--amp", "fp8"], "--amp: Input should be 'auto', 'bf16', 'fp16' or 'off'"),
    (["--channels-last", "maybe"], "--channels-last: Input should be 'auto', 'on' or 'off'"),
    (["--weights", "best"], "--weights: Input should be 'auto', 'model' or 'ema'"),
    (["--retries", "-1"], "--retries: Input should be greater than or equal to 0"),
    (["--threads", "0"], "--threads: Input should be greater than or equal to 1"),
    (["--scheduler", "tcp://h:1"], "--scheduler joins a Dask cluster: use it with --engine dask"),
    (["--engine", "dask", "--scheduler", "h:1"], "--scheduler: 'h:1': a scheduler address"),
    (["--root", "."], "--root is the root of a manifest's files: SRC must be a manifest"),
]


@pytest.mark.parametrize("args,line", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_value_is_one_line_and_exit_2_before_any_work(args, line, tmp_path, tiny_ckpt,
                                                           nifti_tree):
    dst = tmp_path / "out"
    res = CliRunner().invoke(app, ["denoise", "--model", str(tiny_ckpt), str(nifti_tree),
                                   str(dst), "--no-track", "--quiet", *args])
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and line in lines[0], lines
    assert not dst.exists()  # nothing was made


def test_bad_model_and_src_are_refused_before_any_work(tmp_path, nifti_tree, tiny_ckpt):
    for model, src, why in [
        (str(tmp_path / "nope"), nifti_tree, "--model: 'nope' is not a checkpoint folder (not found)"),
        (str(nifti_tree), nifti_tree, "--model: 'src' is not a checkpoint folder (no config.json)"),
        ("runs:/abc", nifti_tree, "--model: runs:/ URIs look like runs:/<run_id>/checkpoints/best"),
        (str(tiny_ckpt), tmp_path / "missing", "SRC: not found"),
    ]:
        res = CliRunner().invoke(app, ["denoise", "--model", model, str(src), str(tmp_path / "o"),
                                       "--no-track", "--quiet"])
        assert res.exit_code == 2 and why in res.output, res.output
        assert len([x for x in res.output.splitlines() if x.strip()]) == 1


def test_several_bad_values_share_one_line():
    with pytest.raises(ConfigError) as e:
        job_settings(model="runs:/a/b", src=Path("."), dst=Path("o"), engine="locall",
                     predictor={"overlap": 2, "device": "tpu"})
    text = str(e.value)
    assert "\n" not in text
    assert "did you mean 'local'" in text and "--overlap" in text and "--device" in text


def test_settings_are_frozen_picklable_and_hash_what_changes_voxels():
    import pickle

    s = inference_settings(roi_size="96,96,64", device="CPU", threads=2)
    assert s.roi_size == (96, 96, 64) and s.device == "cpu"
    assert pickle.loads(pickle.dumps(s)) == s
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="frozen"):
        s.overlap = 0.5
    assert s.replace(overlap=0.5).overlap == 0.5
    fields = InferenceSettings().output_fields()
    assert "device" not in fields and "threads" not in fields  # a job resumes on another node
    assert fields["planner"]["version"] >= 2 and fields["roi_size"] == "auto"
    assert s.output_fields()["planner"] is None  # --roi fixes the window
    json.dumps(s.to_dict())


def test_bad_values_fail_without_importing_torch(tmp_path, nifti_tree, tiny_ckpt):
    """Validation is cheap: a bad option never pays for torch, MONAI or MLflow."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from medgen.cli import app\n"
        f"r = CliRunner().invoke(app, ['denoise', '--model', {str(tiny_ckpt)!r}, {str(nifti_tree)!r},"
        f" {str(tmp_path / 'o')!r}, '--roi', '0', '--no-track'])\n"
        "heavy = [m for m in ('torch', 'monai', 'mlflow') if m in sys.modules]\n"
        "print(r.exit_code, heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "2 []", out.stdout + out.stderr[-2000:]
