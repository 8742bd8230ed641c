"""13.1: every output lands inside DST and no job ever writes an input - whatever a manifest
record, a folder walk, DICOM attributes or a planted link says. A bad record is one line naming
it; the item is quarantined (exit 3); the rest of the job goes on."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medgen.cli import app
from medgen.errors import ConfigError
from medgen.infer.items import Unit, name_outputs
from medgen.infer.job import Job
from medgen.infer.predictor import PredictorSpec
from medgen.infer.settings import InferenceSettings
from medgen.infer.sources import FolderSource

from .infer_helpers import write_phantom

CPU1 = InferenceSettings(device="cpu", threads=1)


def _tree(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 of every file under ``root`` (not following links; ``skip``: a folder left out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if skip is not None and Path(dirpath).resolve() == skip.resolve():
            dirnames[:] = []
            continue
        for f in filenames:
            p = Path(dirpath) / f
            if skip is not None and skip.resolve() in p.resolve().parents and not p.is_symlink():
                continue
            out[p.relative_to(root).as_posix()] = (
                "link" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def _denoise(model: Path, src: Path, dst: Path, *extra: str):
    res = CliRunner().invoke(app, ["denoise", "--model", str(model), str(src), str(dst),
                                   "--no-track", "--threads", "1", "--quiet", *extra])
    summary = json.loads([x for x in res.stdout.splitlines() if x.startswith("{")][-1]) \
        if res.exit_code in (0, 3) else None
    return res, summary


def test_hostile_manifest_records_are_quarantined_by_name(tmp_path, tiny_ckpt, key_env):
    """An absolute path (the record that made denoise overwrite its input in place), a ``..``
    escape and a symbolic link out of the root: each record refused with one line naming it."""
    from medgen.keys import load_key
    from medgen.manifest.build import build_manifest

    data = tmp_path / "data"
    for name in ("a", "b", "c", "d"):
        write_phantom(data / "mr" / f"{name}.nii.gz", seed=ord(name))
    res = build_manifest(data, load_key())
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(data / "mr" / "b.nii.gz", outside / "x.nii.gz")
    shutil.copy(data / "mr" / "c.nii.gz", outside / "y.nii.gz")
    (data / "mr" / "c.nii.gz").unlink()
    (data / "mr" / "c.nii.gz").symlink_to(outside / "y.nii.gz")  # same bytes, outside the root
    recs = {r.files[0].path: r for r in res.manifest.records}
    hostile = {"mr/a.nii.gz": str(data / "mr" / "a.nii.gz"),  # absolute: the input itself
               "mr/b.nii.gz": "../outside/x.nii.gz"}
    lines = []
    for path, rec in sorted(recs.items()):
        d = rec.canonical()
        d["files"][0]["path"] = hostile.get(path, path)
        lines.append(json.dumps(d, sort_keys=True))
    mpath = tmp_path / "m" / "data.jsonl"
    res.manifest.write(mpath)
    mpath.write_text("\n".join(lines) + "\n")
    before = _tree(tmp_path)
    dst = tmp_path / "out"
    out, summary = _denoise(tiny_ckpt, mpath, dst)
    assert out.exit_code == 3, out.output
    assert (summary["ok"], summary["quarantined"]) == (1, 3)
    errs = [x for x in out.stderr.splitlines() if x.startswith("quarantined:")]
    for path, why in [("mr/a.nii.gz", "absolute path"), ("mr/b.nii.gz", "escapes its root ('..')"),
                      ("mr/c.nii.gz", "resolves outside its root")]:
        rid = recs[path].id
        assert any(f"record {rid}: " in e and why in e for e in errs), (path, errs)
    assert str(data) not in out.output  # the absolute path text is never echoed
    assert _tree(tmp_path, skip=dst) == before  # inputs untouched, nothing written outside DST
    assert (dst / "mr" / "d.nii.gz").is_file()


@dataclass(frozen=True)
class SeriesDescriptionNaming(FolderSource):
    """A plug-in source that names outputs from a DICOM attribute, as a PACS source might."""

    name: str = "series-description"

    def discover(self, output_format, secret):
        import pydicom

        src = Path(self.src)
        units = []
        for d in sorted(p for p in src.iterdir() if p.is_dir()):
            files = sorted(d.iterdir())
            desc = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesDescription)
            units.append(Unit("dicom", desc, files, own_folder=True))
        return name_outputs(units, src, output_format, secret)


def test_names_from_dicom_attributes_cannot_leave_dst(tmp_path, tiny_ckpt, ct5n_dir):
    import pydicom

    src = tmp_path / "pacs"
    absolute = Path("/tmp") / f"{tmp_path.name[:40]}-abs"  # within LO's 64 characters
    for folder, desc in [("s1", "clean_name"), ("s2", "../../escaped"), ("s3", str(absolute)),
                         ("s4", "a/../../b")]:
        shutil.copytree(ct5n_dir, src / folder)
        for f in (src / folder).iterdir():
            ds = pydicom.dcmread(f)
            ds.SeriesDescription = desc
            ds.SeriesInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[folder])
            ds.save_as(f)
    before = _tree(tmp_path)
    dst = tmp_path / "out"
    job = Job(PredictorSpec.make(tiny_ckpt, CPU1), None, dst, source=SeriesDescriptionNaming(str(src)))
    s = job.run()
    assert (s.ok, s.quarantined, s.exit_code) == (1, 3, 3)
    reasons = sorted(f["error"] for f in s.failures)
    assert any("escapes its root" in r for r in reasons) and any("absolute path" in r for r in reasons)
    assert (dst / "clean_name" / "IM00001.dcm").is_file()
    assert _tree(tmp_path, skip=dst) == before
    assert not (tmp_path / "escaped").exists() and not absolute.exists()


def test_links_planted_in_dst_are_never_written_through(tmp_path, tiny_ckpt, nifti_tree):
    """A folder link in DST pointing out of it, an output that is a hard link to its own input,
    and a ledger that is a link to an input: nothing outside DST changes."""
    outside = tmp_path / "outside"
    outside.mkdir()
    dst = tmp_path / "out"
    (dst / "sub-01").mkdir(parents=True)
    (dst / "sub-00").symlink_to(outside, target_is_directory=True)
    os.link(nifti_tree / "sub-01" / "scan_03.nii.gz", dst / "sub-01" / "scan_03.nii.gz")
    before = _tree(tmp_path, skip=dst)
    out, summary = _denoise(tiny_ckpt, nifti_tree, dst)
    assert out.exit_code == 3, out.output
    assert (summary["ok"], summary["quarantined"]) == (6, 4)
    errs = [x for x in out.stderr.splitlines() if x.startswith("quarantined:")]
    assert sum("sub-00/" in e and "outside its root" in e for e in errs) == 3
    assert any("sub-01/scan_03.nii.gz" in e and "hard link" in e for e in errs)
    assert not any(outside.iterdir())
    assert _tree(tmp_path, skip=dst) == before  # the hard-linked input is unchanged too

    # job state files that are links are refused outright (exit 2)
    dst2 = tmp_path / "out2"
    dst2.mkdir()
    victim = nifti_tree / "sub-02" / "scan_06.nii.gz"
    (dst2 / "ledger.jsonl").symlink_to(victim)
    res, _ = _denoise(tiny_ckpt, nifti_tree, dst2)
    assert res.exit_code == 2 and "ledger.jsonl is a symbolic link" in res.output
    os.link(victim, dst2 / "quarantine.jsonl")
    (dst2 / "ledger.jsonl").unlink()
    with pytest.raises(ConfigError, match="quarantine.jsonl has other hard links"):
        Job(PredictorSpec.make(tiny_ckpt, CPU1), nifti_tree, dst2).prepare()
    assert _tree(nifti_tree) == {k.removeprefix("src/"): v for k, v in before.items()
                                 if k.startswith("src/")}
