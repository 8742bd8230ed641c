"""``medgen upscale`` on the batch-inference core: geometry (SimpleITK), determinism, resume,
fault isolation, factor options, DICOM derived series."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medgen.cli import app
from medgen.io import Volume

TINY = {"name": "rrdb_sr", "features": 8, "growth": 4, "num_blocks": 1, "dense_blocks": 1,
        "dense_layers": 2}
CPU = ["--no-track", "--threads", "1", "--quiet", "--device", "cpu"]


def make_sr_checkpoint(dst: Path, *, dims: int = 3, factors=(1, 1, 2), slice_axis: int = 2,
                       seed: int = 0) -> Path:
    """A tiny real SR checkpoint (safetensors + config + card) with seeded random weights."""
    import torch

    from medgen.models import ModelCard, build_model, save_checkpoint

    cfg = {**TINY, "spatial_dims": dims, "scale_factors": list(factors)}
    if dims == 2:
        cfg["slice_axis"] = slice_axis
    torch.manual_seed(seed)
    model = build_model(cfg)
    vf = model.config.volume_factors()
    card = ModelCard(model_name="rrdb_sr", task="sr", intended_use="test super-resolution",
                     modality="any", intensity={"mode": "percentile", "lower": 1.0, "upper": 99.0},
                     patch_size=[12, 12, 6] if dims == 3 else [12, 6],
                     expected_spacing_mm=[1.0 * f for f in vf])
    return save_checkpoint(dst, model, card=card)


def _phantom(shape, seed=0):
    from medgen.data import brain_phantom

    return (brain_phantom(shape, seed=seed) * 1000).astype(np.float32)


def _write(path: Path, shape=(20, 18, 8), spacing=(1.0, 1.0, 2.0), direction=None, seed=0) -> Path:
    from medgen.io.nifti import write_nifti

    if direction is None:  # oblique
        c, s = np.cos(0.3), np.sin(0.3)
        direction = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]) @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    aff = Volume.make_affine(spacing, direction, [-12.0, 30.5, 7.25])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(Volume(_phantom(shape, seed), aff, {"modality": "MR"}), path)
    return path


def _box(img: sitk.Image) -> np.ndarray:
    size = img.GetSize()
    return np.array([img.TransformContinuousIndexToPhysicalPoint(
        [-0.5 if b == 0 else n - 0.5 for b, n in zip(c, size)]) for c in np.ndindex(2, 2, 2)])


def _same_box(a: sitk.Image, b: sitk.Image, factors) -> None:
    assert tuple(b.GetSize()) == tuple(n * f for n, f in zip(a.GetSize(), factors))
    np.testing.assert_allclose(_box(b), _box(a), atol=1e-4)
    np.testing.assert_allclose(b.GetDirection(), a.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(np.array(b.GetSpacing()) * factors, a.GetSpacing(), atol=1e-5)


@pytest.fixture(scope="module")
def sr_ckpt(tmp_path_factory) -> Path:
    return make_sr_checkpoint(tmp_path_factory.mktemp("ck") / "sr")


def _summary(res) -> dict:
    return json.loads([x for x in res.stdout.splitlines() if x.startswith("{")][-1])


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.nii.gz"))}


def test_upscale_job_geometry_resume_and_bad_items(tmp_path, sr_ckpt):
    src = tmp_path / "in"
    _write(src / "sub-01" / "a.nii.gz", seed=1)
    _write(src / "sub-02" / "b.nii.gz", shape=(16, 14, 6), seed=2,
           direction=np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float))  # sagittal axes
    (src / "sub-03").mkdir()
    (src / "sub-03" / "broken.nii.gz").write_bytes(b"not a nifti file")
    dst = tmp_path / "out"
    res = CliRunner().invoke(app, ["upscale", "--model", str(sr_ckpt), str(src), str(dst), *CPU])
    assert res.exit_code == 3, res.output  # the broken file is reported, the others finish
    s = _summary(res)
    assert (s["ok"], s["failed"] + s["quarantined"]) == (2, 1)
    assert "broken.nii.gz" in res.stderr and str(src) not in res.output
    for rel in ("sub-01/a.nii.gz", "sub-02/b.nii.gz"):
        _same_box(sitk.ReadImage(str(src / rel)), sitk.ReadImage(str(dst / rel)), (1, 1, 2))
    first = _files(dst)
    ledger = (dst / "ledger.jsonl").read_text()
    # resume: finished items are skipped, nothing is rewritten
    res = CliRunner().invoke(app, ["upscale", "--model", str(sr_ckpt), str(src), str(dst), *CPU])
    assert res.exit_code == 3
    assert _summary(res)["skipped"] == 3 and _files(dst) == first
    assert (dst / "ledger.jsonl").read_text() == ledger
    # deterministic: redoing everything gives the same bytes
    res = CliRunner().invoke(app, ["upscale", "--model", str(sr_ckpt), str(src), str(dst), *CPU,
                                   "--overwrite"])
    assert _summary(res)["ok"] == 2 and _files(dst) == first


def test_deterministic_inference_same_bytes(tmp_path, sr_ckpt):
    from medgen.infer.predictor import InferenceSettings
    from medgen.infer.sr import UpscalePredictor
    from medgen.io.nifti import read_nifti

    vol = read_nifti(_write(tmp_path / "x.nii.gz", seed=3))
    p = UpscalePredictor.from_checkpoint(sr_ckpt, InferenceSettings(device="cpu"))
    a, b = p(vol), p(vol)
    assert a.array.tobytes() == b.array.tobytes() and a.shape == (20, 18, 16)
    q = UpscalePredictor.from_checkpoint(sr_ckpt, InferenceSettings(device="cpu"))
    assert q(vol).array.tobytes() == a.array.tobytes()


def test_factor_option_orients_the_model(tmp_path, sr_ckpt):
    from medgen.infer.predictor import InferenceSettings
    from medgen.infer.sr import UpscalePredictor
    from medgen.io.nifti import read_nifti

    # thick slices along i (2 mm), fine along j and k: a 1x1x2 model applied along i
    path = _write(tmp_path / "sag.nii.gz", shape=(8, 18, 20), spacing=(2.0, 1.0, 1.0), seed=4)
    vol = read_nifti(path)
    for factor in ("2", "2x1x1"):
        p = UpscalePredictor.from_checkpoint(sr_ckpt, InferenceSettings(device="cpu"),
                                             options={"factor": factor})
        out = p(vol)
        _same_box(vol.to_sitk(), out.to_sitk(), (2, 1, 1))
    # along i, the model sees what it sees along k of the volume with i and k swapped
    p_k = UpscalePredictor.from_checkpoint(sr_ckpt, InferenceSettings(device="cpu"))
    moved = Volume(np.ascontiguousarray(vol.array.transpose(2, 1, 0)), vol.affine[:, [2, 1, 0, 3]])
    ref = p_k(moved).array.transpose(2, 1, 0)
    np.testing.assert_allclose(out.array, ref, atol=1e-5)
    dst = tmp_path / "o"
    res = CliRunner().invoke(app, ["upscale", "--model", str(sr_ckpt), str(path), str(dst), *CPU,
                                   "--factor", "1x1x4"])
    assert res.exit_code == 2 and "upsamples by 1x1x2" in res.output
    res = CliRunner().invoke(app, ["upscale", "--model", str(sr_ckpt), str(path), str(dst), *CPU,
                                   "--factor", "two"])
    assert res.exit_code == 2 and "--factor" in res.output


def test_2d_model_slices_across_its_axis(tmp_path):
    from medgen.infer.predictor import InferenceSettings
    from medgen.infer.sr import UpscalePredictor
    from medgen.io.nifti import read_nifti

    ck = make_sr_checkpoint(tmp_path / "ck2d", dims=2, factors=(1, 4), slice_axis=1)
    vol = read_nifti(_write(tmp_path / "x.nii.gz", shape=(12, 5, 6), spacing=(1.0, 1.0, 4.0)))
    out = UpscalePredictor.from_checkpoint(ck, InferenceSettings(device="cpu"))(vol)
    _same_box(vol.to_sitk(), out.to_sitk(), (1, 1, 4))


def test_dicom_series_in_dicom_series_out(tmp_path, sr_ckpt, ct5n_dir):
    """A real 5-slice CT series -> a derived series of 10 slices over the same slab."""
    import pydicom

    src = tmp_path / "in" / "ct"
    src.mkdir(parents=True)
    for f in sorted(ct5n_dir.iterdir()):
        if f.is_file():
            (src / f.name).write_bytes(f.read_bytes())
    dst = tmp_path / "out"
    res = CliRunner().invoke(app, ["upscale", "--model", str(sr_ckpt), str(tmp_path / "in"),
                                   str(dst), *CPU, "--output-format", "dicom"])
    assert res.exit_code == 0, res.output
    r = sitk.ImageSeriesReader()
    a = sitk.ReadImage(r.GetGDCMSeriesFileNames(str(src)))
    b = sitk.ReadImage(r.GetGDCMSeriesFileNames(str(dst / "ct")))
    _same_box(a, b, (1, 1, 2))
    files = sorted((dst / "ct").glob("*.dcm"))
    assert len(files) == 10
    ds = [pydicom.dcmread(str(f)) for f in files]
    normal = np.array(b.GetDirection()).reshape(3, 3)[:, 2]
    z = sorted(float(np.dot(np.array(d.ImagePositionPatient, float), normal)) for d in ds)
    np.testing.assert_allclose(np.diff(z), a.GetSpacing()[2] / 2, atol=1e-3)
    assert "DERIVED" in ds[0].ImageType and "upscaled by medgen rrdb_sr" in ds[0].DerivationDescription
