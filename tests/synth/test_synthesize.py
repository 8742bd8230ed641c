"""``synthesize`` / ``medgen synthesize``: exports re-read with nibabel, SimpleITK and pydicom,
exact regeneration of one sample, the synthetic manifest, conditions, MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgen.errors import ConfigError
from medgen.manifest import Manifest
from medgen.synth.sampling import sample_seed, synthesize


@pytest.fixture(scope="module")
def vae_set(trained_vae, class_manifest, tmp_path_factory):
    dst = tmp_path_factory.mktemp("synth-out")
    res = synthesize(trained_vae.last, 5, dst, conditions=["side=left"], seed=7, batch=4,
                     train_manifest=class_manifest, tracking=False)
    return res


def test_nifti_export_and_manifest(vae_set):
    import nibabel as nib
    import SimpleITK as sitk

    res = vae_set
    assert res.n_written + res.n_withheld == 5 and res.n_written >= 4
    m = Manifest.load(res.manifest)
    assert len(m) == res.n_written and m.summary["synthetic"]["base_seed"] == 7
    rec = next(r for r in m if r.extra["index"] == 3)
    assert rec.synthetic and rec.split == "synthetic" and rec.labels == {"side": "left"}
    assert rec.extra["seed"] == sample_seed(7, 3) and rec.extra["weights_sha256"]
    assert "memorization" in rec.extra and rec.extra["memorization"]["flagged"] is False
    summary = m.summary["synthetic"]
    assert summary["memorization"]["n_samples"] == 5 and 0 <= summary["memorization"]["rate"] <= 1
    assert summary["generator"]["training_manifest_sha256"]
    path = res.dst / rec.files[0].path
    img = nib.load(str(path))
    assert img.shape == (16, 16, 16) and b"SYNTHETIC" in img.header["descrip"].tobytes()
    assert np.allclose(img.header.get_zooms(), rec.spacing, atol=1e-5)
    s = sitk.ReadImage(str(path))
    assert s.GetSize() == (16, 16, 16) and np.isfinite(sitk.GetArrayFromImage(s)).all()
    # the manifest validates against the files it lists (sha256 of every file)
    from medgen.manifest.ops import validate_manifest

    assert validate_manifest(m).passed
    memorization = json.loads((res.dst / "memorization.json").read_text())
    assert len(memorization["samples"]) == 5 and memorization["summary"]["calibration"]["source"] == "heldout"


def test_regenerate_one_sample_gives_identical_bytes(vae_set, trained_vae, class_manifest,
                                                      tmp_path):
    again = synthesize(trained_vae.last, 5, tmp_path, conditions=["side=left"], seed=7, batch=4,
                       indices=[3], train_manifest=class_manifest, tracking=False)
    assert again.n_written == 1
    a = (vae_set.dst / "samples" / "synth-000003.nii.gz").read_bytes()
    b = (tmp_path / "samples" / "synth-000003.nii.gz").read_bytes()
    assert a == b
    other = synthesize(trained_vae.last, 5, tmp_path / "s8", conditions=["side=left"], seed=8,
                       batch=4, indices=[3], memorization=False, tracking=False)
    assert (tmp_path / "s8" / "samples" / "synth-000003.nii.gz").read_bytes() != a
    assert Manifest.load(other.manifest).summary["synthetic"]["memorization"]["skipped"]


def test_dicom_export_is_marked_synthetic(trained_ldm, tmp_path):
    import pydicom
    import SimpleITK as sitk

    res = synthesize(trained_ldm.last, 2, tmp_path, fmt="dicom", memorization=False, tracking=False,
                     steps=3)
    assert res.n_written == 2
    series = sorted((tmp_path / "samples").iterdir())
    uids = set()
    for d in series:
        files = sorted(d.glob("*.dcm"))
        assert len(files) == 16
        ds = pydicom.dcmread(files[0])
        assert str(ds.PatientName) == "SYNTHETIC^MEDGEN"
        assert "SYNTHETIC" in list(ds.ImageType) and "SYNTHETIC" in ds.ImageComments
        assert ds.SeriesDescription.startswith("SYNTHETIC")
        uids.add(ds.SeriesInstanceUID)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(d)))
        assert reader.Execute().GetSize() == (16, 16, 16)
    assert len(uids) == 2  # new UIDs per sample


def test_conditions_and_checkpoint_checks(trained_vae, trained_ldm, tmp_path):
    with pytest.raises(ConfigError, match="condition 'side' needs a value"):
        synthesize(trained_vae.last, 1, tmp_path, memorization=False, tracking=False)
    with pytest.raises(ConfigError, match="unknown class 'up'"):
        synthesize(trained_vae.last, 1, tmp_path, conditions=["side=up"], memorization=False,
                   tracking=False)
    with pytest.raises(ConfigError, match="needs the model's training manifest"):
        synthesize(trained_vae.last, 1, tmp_path, conditions=["side=left"], tracking=False)
    with pytest.raises(ConfigError, match="does not fit objective"):
        synthesize(trained_ldm.last, 1, tmp_path, sampler="rflow", memorization=False, tracking=False)


def test_cli_synthesize_with_tracking(trained_ldm, class_manifest, tmp_path):
    from typer.testing import CliRunner

    from medgen.cli import app

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = CliRunner().invoke(app, ["synthesize", str(tmp_path / "out"), "--model",
                                 str(trained_ldm.last), "-n", "3", "--batch", "2", "--seed", "1",
                                 "--steps", "2", "--train-manifest", str(class_manifest),
                                 "--tracking-uri", uri, "-q"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["n_written"] + out["n_withheld"] == 3 and out["synthesis_run"]
    import mlflow

    run = mlflow.MlflowClient(uri).get_run(out["synthesis_run"])
    assert "synth/memorization_rate" in run.data.metrics
    m = Manifest.load(out["manifest"])
    assert all(r.extra["synthesis_run"] == out["synthesis_run"] for r in m)
    bad = CliRunner().invoke(app, ["synthesize", str(tmp_path / "o2"), "--model",
                                   str(trained_ldm.last), "-n", "1", "--condition", "x=1",
                                   "--no-memorization-check", "--no-tracking"])
    assert bad.exit_code == 2 and "unconditional" in bad.output
