"""``medgen translate`` on the batch-inference core: geometry kept (SimpleITK re-read), outputs
marked synthetic and re-read correctly (NIfTI and DICOM), determinism, resume, directions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medgen.cli import app
from medgen.io import Volume

CPU = ["--no-track", "--threads", "1", "--quiet", "--device", "cpu"]


def make_checkpoint(dst: Path, name: str = "cyclegan", *, dims: int = 3, seed: int = 0,
                    intensity_b=None, modality_b=None) -> Path:
    """A tiny real translation checkpoint (safetensors + config + card), seeded random weights."""
    import torch

    from medgen.models import ModelCard, build_model, save_checkpoint

    torch.manual_seed(seed)
    cfg = {"name": name, "spatial_dims": dims, "channels": [4, 8], "num_res_units": 1}
    if intensity_b:
        cfg["intensity_b"] = intensity_b
    if modality_b:
        cfg["modality_b"] = modality_b
    model = build_model(cfg)
    card = ModelCard(model_name=name, task="translate", intended_use="test translation",
                     modality="MR", intensity={"mode": "percentile", "lower": 1.0, "upper": 99.0},
                     patch_size=[16, 16, 8] if dims == 3 else [16, 16])
    return save_checkpoint(dst, model, card=card)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("tr-ckpt")
    return {"cyclegan": make_checkpoint(root / "cyc"),
            "pix2pix": make_checkpoint(root / "p2p", "pix2pix"),
            "sct": make_checkpoint(root / "sct", "pix2pix", modality_b="CT",
                                   intensity_b={"mode": "window", "center": 500.0, "width": 3000.0}),
            "2d": make_checkpoint(root / "c2d", dims=2)}


def _write(path: Path, shape=(20, 18, 10), seed=0) -> Path:
    from medgen.data import brain_phantom
    from medgen.io.nifti import write_nifti

    c, s = np.cos(0.3), np.sin(0.3)
    direction = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])  # oblique
    aff = Volume.make_affine([0.9, 1.1, 2.0], direction, [-12.0, 30.5, 7.25])
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (brain_phantom(shape, seed=seed) * 1000).astype(np.float32)
    write_nifti(Volume(arr, aff, {"modality": "MR"}), path)
    return path


def _same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)


def _run(*args):
    return CliRunner().invoke(app, ["translate", *map(str, args), *CPU])


@pytest.mark.parametrize("which,direction", [("cyclegan", "a2b"), ("cyclegan", "b2a"),
                                             ("pix2pix", "a2b"), ("2d", "a2b")])
def test_nifti_geometry_kept_and_marked_synthetic(tmp_path, ckpts, which, direction):
    import nibabel as nib

    src = tmp_path / "in"
    _write(src / "sub-01" / "t1.nii.gz")
    dst = tmp_path / "out"
    res = _run("--model", ckpts[which], src, dst, "--direction", direction)
    assert res.exit_code == 0, res.output
    out = dst / "sub-01" / "t1.nii.gz"
    a, b = sitk.ReadImage(str(src / "sub-01" / "t1.nii.gz")), sitk.ReadImage(str(out))
    _same_grid(a, b)
    arr = sitk.GetArrayFromImage(b)
    assert np.isfinite(arr).all() and arr.std() > 0
    descrip = nib.load(str(out)).header["descrip"].tobytes().decode().strip("\x00")
    assert descrip.startswith(f"SYNTHETIC medgen translate {direction}")
    line = json.loads((dst / "ledger.jsonl").read_text().splitlines()[-1])
    assert line["status"] == "ok"


def test_deterministic_and_resumable(tmp_path, ckpts):
    src = tmp_path / "in"
    for i in range(2):
        _write(src / f"v{i}.nii.gz", seed=i)
    d1, d2 = tmp_path / "o1", tmp_path / "o2"
    assert _run("--model", ckpts["cyclegan"], src, d1).exit_code == 0
    assert _run("--model", ckpts["cyclegan"], src, d2).exit_code == 0
    for i in range(2):
        assert (d1 / f"v{i}.nii.gz").read_bytes() == (d2 / f"v{i}.nii.gz").read_bytes()
    again = _run("--model", ckpts["cyclegan"], src, d1)
    assert again.exit_code == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["skipped"] == 2
    # the other direction is another job: outputs differ
    d3 = tmp_path / "o3"
    assert _run("--model", ckpts["cyclegan"], src, d3, "--direction", "b2a").exit_code == 0
    assert (d3 / "v0.nii.gz").read_bytes() != (d1 / "v0.nii.gz").read_bytes()


def test_pix2pix_has_no_b2a(tmp_path, ckpts):
    _write(tmp_path / "in" / "x.nii.gz")
    res = _run("--model", ckpts["pix2pix"], tmp_path / "in", tmp_path / "out", "--direction", "b2a")
    assert res.exit_code == 2 and "a2b only" in res.output
    res = _run("--model", ckpts["pix2pix"], tmp_path / "in", tmp_path / "out2", "--direction", "x")
    assert res.exit_code == 2


def test_bad_item_is_isolated(tmp_path, ckpts):
    src = tmp_path / "in"
    _write(src / "good.nii.gz")
    (src / "bad.nii.gz").write_bytes(b"not a nifti file")
    res = _run("--model", ckpts["cyclegan"], src, tmp_path / "out")
    assert res.exit_code == 3
    assert (tmp_path / "out" / "good.nii.gz").is_file()


def test_dicom_series_to_synthetic_ct_in_the_same_study(tmp_path, ckpts, ct5n_dir):
    """A real DICOM series -> a derived series marked SYNTHETIC, in the source's study and frame
    of reference, on the same grid; the target domain's modality and HU window (intensity_b)."""
    import pydicom

    src = tmp_path / "in" / "ser"
    src.mkdir(parents=True)
    for f in sorted(ct5n_dir.iterdir()):
        if f.is_file():
            (src / f.name).write_bytes(f.read_bytes())
    dst = tmp_path / "out"
    res = _run("--model", ckpts["sct"], tmp_path / "in", dst, "--output-format", "dicom",
               "--roi", "16,16,4")
    assert res.exit_code == 0, res.output
    r = sitk.ImageSeriesReader()
    a = sitk.ReadImage(r.GetGDCMSeriesFileNames(str(src)))
    b = sitk.ReadImage(r.GetGDCMSeriesFileNames(str(dst / "ser")))
    _same_grid(a, b)
    srcds = pydicom.dcmread(str(sorted(src.iterdir())[0]), stop_before_pixels=True)
    ds = [pydicom.dcmread(str(f)) for f in sorted((dst / "ser").glob("*.dcm"))]
    d = ds[0]
    assert list(d.ImageType) == ["DERIVED", "SECONDARY", "SYNTHETIC"]
    assert d.SeriesDescription.startswith("SYNTHETIC") and "SYNTHETIC" in d.ImageComments
    assert "translated a2b by medgen pix2pix" in d.DerivationDescription
    assert d.StudyInstanceUID == srcds.StudyInstanceUID
    assert d.FrameOfReferenceUID == srcds.FrameOfReferenceUID
    assert d.SeriesInstanceUID != srcds.SeriesInstanceUID and d.Modality == "CT"
    assert not any(len(x.SeriesDescription) > 64 for x in ds)
    assert np.isfinite(sitk.GetArrayFromImage(b)).all()


def test_output_intensity_uses_the_target_domain(ckpts):
    """a2b with a fixed target mapping (CT window 500/3000) inverts it exactly: normalised 0 and 1
    are -1000 and 2000 HU whatever the input's record; b2a of a percentile model inverts the
    input's own record."""
    import torch

    from medgen.infer.predictor import InferenceSettings
    from medgen.infer.translate import TranslatePredictor

    p = TranslatePredictor.from_checkpoint(ckpts["sct"], InferenceSettings(device="cpu"))
    x = torch.linspace(0, 800, 64).reshape(1, 4, 4, 4)
    _, rec = p.normalise(x)
    out = p.denormalise(torch.tensor([0.0, 1.0]), rec)
    np.testing.assert_allclose(out.numpy(), [-1000.0, 2000.0], atol=1e-3)
    assert p.output_meta(None)["modality"] == "CT"
    q = TranslatePredictor.from_checkpoint(ckpts["cyclegan"], InferenceSettings(device="cpu"),
                                           options={"direction": "b2a"})
    xn, rec = q.normalise(x)
    np.testing.assert_allclose(q.denormalise(xn, rec).numpy(), x.numpy(), rtol=1e-5, atol=1e-3)


def test_evaluate_paired_in_hu_logged_to_mlflow(tmp_path):
    """Outputs vs real CT targets (HU) by relative path, with the identity baseline, in MLflow."""
    import mlflow

    from medgen.io.nifti import write_nifti

    rng = np.random.default_rng(0)
    aff = Volume.make_affine([1.0, 1.0, 1.0])
    ref = np.full((16, 16, 8), -1000.0, np.float32)
    ref[4:12, 4:12] = 40.0
    for d, arr in (("ref", ref), ("out", ref + rng.normal(0, 20, ref.shape)),
                   ("inp", ref + rng.normal(0, 200, ref.shape))):
        write_nifti(Volume(arr.astype(np.float32), aff, {}), tmp_path / d / "s1" / "ct.nii.gz")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = CliRunner().invoke(app, ["evaluate", "paired", "--reference", str(tmp_path / "ref"),
                                   "--outputs", str(tmp_path / "out"), "--inputs",
                                   str(tmp_path / "inp"), "--hu", "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert s["n"] == 1 and 10 < s["mae_hu"] < 25 and s["mae_input_hu"] > 100
    assert s["psnr"] > s["psnr_input"] and s["psnr_gain"] > 0
    run = mlflow.tracking.MlflowClient(uri).get_run(s["run_id"])
    assert abs(run.data.metrics["paired/mae_hu"] - s["mae_hu"]) < 1e-3
    # references that are not CT in HU (no air) are refused with --hu
    write_nifti(Volume(ref + 1100.0, aff, {}), tmp_path / "mr" / "s1" / "ct.nii.gz")
    bad = CliRunner().invoke(app, ["evaluate", "paired", "--reference", str(tmp_path / "mr"),
                                   "--outputs", str(tmp_path / "out"), "--hu", "--no-tracking"])
    assert bad.exit_code == 2 and "air" in bad.output


def test_unpaired_quality_report_on_translated_volumes(tmp_path, ckpts):
    """Unpaired evaluation: translate, build a manifest of the outputs, run the synthesis quality
    report (MMD, C2ST, ...) against real target-domain volumes; logged to MLflow."""
    import mlflow

    src, real = tmp_path / "a", tmp_path / "b"
    for i in range(3):
        _write(src / f"sub-{i:02d}" / "t1.nii.gz", seed=i)
        _write(real / f"sub-{i + 5:02d}" / "t2.nii.gz", seed=i + 5)
    assert _run("--model", ckpts["cyclegan"], src, tmp_path / "out").exit_code == 0
    r = CliRunner()
    key = ["--create-key", str(tmp_path / "key"), "--quiet"]
    for d, m in (("out", "tr.jsonl"), ("b", "real.jsonl")):
        res = r.invoke(app, ["manifest", "build", str(tmp_path / d), "-o", str(tmp_path / m), *key])
        assert res.exit_code == 0, res.output
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    res = r.invoke(app, ["evaluate", "synth", "--real", str(tmp_path / "real.jsonl"),
                         "--synthetic", str(tmp_path / "tr.jsonl"), "--out", str(tmp_path / "q"),
                         "--permutations", "20", "--tracking-uri", uri])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout.strip().splitlines()[-1])
    assert 0.0 <= s["c2st_auc"] <= 1.0 and "mmd2_downsampled" in s
    assert (tmp_path / "q" / "quality.html").is_file()
    assert mlflow.tracking.MlflowClient(uri).get_run(s["run_id"]).data.metrics
