"""Step implementations: ``step_<kind>(runner, name, spec) -> (status, outputs, run_id)``.

``runner`` is the :class:`medgen.pipeline.runner.Runner` running the pipeline (not imported here:
the runner imports the steps, never the other way round).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any


class StepFailed(Exception):
    """A step that could not do its work (one line; the pipeline stops after it)."""

    def __init__(self, message: str, outputs: dict | None = None):
        super().__init__(message)
        self.outputs = outputs or {}


@contextlib.contextmanager
def child_run(runner, name: str, kind: str):
    """A nested run for an in-process step; sealed at the end."""
    from medgen.track import start_run

    with start_run(runner.spec.tracking.experiment, f"{runner.spec.name}:{name}",
                   tracking_uri=runner.tracking_uri, parent_run_id=runner.parent.run_id,
                   tags={"medgen.task": kind, "medgen.pipeline": runner.spec.name},
                   roots={"workdir": str(runner.workdir.resolve())}) as run:
        yield run


def latest_child(runner, experiment: str) -> str | None:
    """Run id of the newest run of ``experiment`` nested under the pipeline's run."""
    from medgen.track import client_for

    client = client_for(runner.tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{runner.parent.run_id}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _seal(run, kind: str, lineage: dict) -> None:
    from medgen.audit import seal_run

    seal_run(run, kind=kind, lineage=lineage)


# --- in-process steps ----------------------------------------------------------------------------

def step_sample_data(runner, name: str, spec: dict):
    from medgen.data import build_sample_data

    dst = build_sample_data(spec["dst"])
    return "ok", {"dst": str(dst), "dicom": str(dst / "dicom"), "nifti": str(dst / "nifti"),
                  "ct": str(dst / "ct")}, None


def step_degrade(runner, name: str, spec: dict):
    """Degraded (and clean reference) NIfTI copies of a manifest split, same relative paths."""
    import numpy as np
    import torch

    from medgen.io import Volume
    from medgen.io.nifti import write_nifti
    from medgen.manifest import Manifest
    from medgen.train.data import step_seed
    from medgen.transforms import apply_geometry, load_preset
    from medgen.utils.atomic import atomic_write_text

    m = Manifest.load(spec["manifest"])
    recs = m.split(spec["split"]) if spec.get("split") else list(m)
    if not recs:
        raise StepFailed(f"no records in split '{spec.get('split')}'")
    pipe = load_preset(spec["preset"], keys="noisy", source_key="image")
    physical = spec.get("physical_units")
    if physical is None:  # the preset's noise units decide: HU presets run on the image in HU
        physical = pipe.preset.units == "HU"
    dst, ref_dst = Path(spec["dst"]), Path(spec["reference_dst"])
    log_lines = []
    for i, rec in enumerate(recs):
        vol = m.read(rec)
        rel = Path(rec.files[0].path)
        rel = rel.parent if rec.format == "dicom" and len(rec.files) > 1 else rel.with_suffix("")
        rel_name = (rel.as_posix().removesuffix(".nii") + ".nii.gz")
        x = vol.array.astype(np.float32)
        scale = 1.0
        if not physical:
            scale = float(np.percentile(x, 99.5)) or 1.0
        pipe.set_random_state(seed=step_seed(spec.get("seed", 0), i, "degrade"))
        s = pipe({"image": torch.from_numpy(x / scale)[None]})
        noisy = np.asarray(torch.as_tensor(s["noisy"])[0].numpy(), np.float32) * scale
        meta = {"modality": vol.meta.get("modality", "unknown")}
        affine = vol.affine
        for d in s.get("degradations", []):  # grid-changing degradations (thick slices) move voxels
            if d.get("geometry"):
                affine = apply_geometry(affine, d["geometry"])
        write_nifti(Volume(noisy, affine, meta), dst / rel_name)
        write_nifti(Volume(x, vol.affine, meta), ref_dst / rel_name)
        log_lines.append(json.dumps({"record": rec.id, "output": rel_name, "scale": scale,
                                     "degradations": json.loads(json.dumps(s.get("degradations", []), default=str))},
                                    sort_keys=True))
    atomic_write_text(dst / "degradations.jsonl", "\n".join(log_lines) + "\n")
    with child_run(runner, name, "degrade") as run:
        run.log_params({"preset": Path(spec["preset"]).stem, "split": spec.get("split") or "all",
                        "n": len(recs)})
        run.log_artifact(dst / "degradations.jsonl", "degrade")
        _seal(run, "degrade", {"n": len(recs)})
        rid = run.run_id
    return "ok", {"dst": str(dst), "reference_dst": str(ref_dst), "n": len(recs)}, rid


def step_evaluate(runner, name: str, spec: dict):
    if spec["task"] == "synth":
        status, out = runner.cli(["evaluate", "synth", "--real", spec["reference"], "--synthetic",
                                  spec["outputs"], *spec.get("args", [])])
        return status, {"stdout": out.strip()[-500:]}, latest_child(runner, "medgen-evaluate")
    from medgen.evaluate.paired import evaluate_paired
    from medgen.utils.atomic import atomic_write_text

    rep = evaluate_paired(spec["reference"], spec["outputs"], spec.get("inputs"))
    if rep["summary"]["n"] == 0:
        raise StepFailed("no output/reference pairs found (outputs must mirror the references' paths)")
    out = Path(spec["outputs"]).parent / f"{name}_report.json"
    atomic_write_text(out, json.dumps(rep, indent=1, sort_keys=True))
    with child_run(runner, name, "evaluate") as run:
        run.log_metrics({f"eval/{k}": v for k, v in rep["summary"].items() if isinstance(v, (int, float))})
        run.log_json(rep, "evaluate/report.json")
        _seal(run, "evaluate", {"summary": rep["summary"]})
        rid = run.run_id
    return "ok", {"report": str(out), **{k: v for k, v in rep["summary"].items()}}, rid


def step_audit(runner, name: str, spec: dict):
    from medgen.audit import audit_run

    wanted = spec.get("steps")
    results: dict[str, Any] = {}
    failed = []
    for step in runner.scope["steps"]:
        st_file = runner.state_dir / f"{step}.json"
        rid = json.loads(st_file.read_text()).get("run_id") if st_file.exists() else None
        if not rid or (wanted and step not in wanted):
            continue
        rep = audit_run(rid, tracking_uri=runner.tracking_uri, rerun=spec.get("rerun", 0))
        rep.write(runner.workdir / "audit" / step)
        results[step] = "PASS" if rep.passed else "FAIL"
        if not rep.passed:
            failed.append(f"{step}: {rep.failures[0]}")
    if failed:
        raise StepFailed("audit FAIL: " + "; ".join(failed), results)
    return "ok", {"reports": str(runner.workdir / "audit"), **results}, None


# --- command steps -------------------------------------------------------------------------------

def step_deid(runner, name: str, spec: dict):
    args = ["deid", "run", spec["src"], spec["dst"], "--workers", str(spec.get("workers", 1))]
    for o in spec.get("options", []):
        args += ["--option", o]
    status, _ = runner.cli(args)
    audit = Path(spec["dst"]) / "_deid" / "audit.jsonl"
    with child_run(runner, name, "deid") as run:
        if audit.exists():
            n = sum(1 for _ in audit.open())
            run.log_metrics({"deid/files": n})
            run.log_artifact(audit, "deid")
        run.log_params({"options": ",".join(spec.get("options", [])) or "basic-profile"})
        _seal(run, "deid", {"status": status})
        rid = run.run_id
    return status, {"dst": spec["dst"], "audit": str(audit)}, rid


def step_manifest(runner, name: str, spec: dict):
    out = Path(spec["output"])
    raw = out.with_name(out.name.removesuffix(".jsonl") + ".all.jsonl")
    args = ["manifest", "build", spec["src"], "-o", str(raw), "-q"]
    if spec.get("allow_uneven"):
        args.append("--allow-uneven")
    status, _ = runner.cli(args)
    ratios = ",".join(f"{k}={v}" for k, v in spec["ratios"].items())
    runner.cli(["manifest", "split", str(raw), "-o", str(out), "--ratios", ratios,
                "--seed", str(spec.get("seed", 0))])
    from medgen.manifest import Manifest

    m = Manifest.load(out)
    with child_run(runner, name, "manifest") as run:
        run.set_tags({"medgen.output_manifest.sha256": m.digest})
        run.log_metrics({"manifest/records": len(m)})
        _seal(run, "manifest", {"manifest_sha256": m.digest})
        rid = run.run_id
    return status, {"manifest": str(out), "digest": m.digest, "n": len(m)}, rid


def step_train(runner, name: str, spec: dict):
    cfg = runner.config_path(spec["config"])
    args = ["train", str(cfg), "-q", "--set", f"output_dir={runner.workdir / 'runs'}",
            "--set", f"tracking.tracking_uri={runner.tracking_uri}"]
    for s in spec.get("set", []):
        args += ["--set", s]
    status, out = runner.cli(args)
    res = json.loads(out.strip().splitlines()[-1])
    return status, {"best": res["best"] or res["last"], "last": res["last"],
                    "run_dir": res["run_dir"], "weights_sha256": res["weights_sha256"]}, res.get("mlflow_run_id")


def _infer(runner, name: str, spec: dict, command: str):
    args = [command, "--model", spec["model"], spec["src"], spec["dst"], "--quiet",
            "--tracking-uri", runner.tracking_uri, *spec.get("args", [])]
    status, _ = runner.cli(args)
    summary_p = Path(spec["dst"]) / "summary.json"
    summary = json.loads(summary_p.read_text()) if summary_p.exists() else {}
    outs = {"dst": spec["dst"], "ok": summary.get("ok"), "failed": summary.get("failed"),
            "voxels_per_s": summary.get("voxels_per_s")}
    return status, outs, latest_child(runner, f"medgen-{command}")


def step_denoise(runner, name, spec):
    return _infer(runner, name, spec, "denoise")


def step_upscale(runner, name, spec):
    return _infer(runner, name, spec, "upscale")


def step_translate(runner, name, spec):
    return _infer(runner, name, spec, "translate")


def step_synthesize(runner, name: str, spec: dict):
    args = ["synthesize", "--model", spec["model"], "-n", str(spec.get("n", 4)), spec["dst"],
            *spec.get("args", [])]
    status, out = runner.cli(args)
    return status, {"dst": spec["dst"], "manifest": str(Path(spec["dst"]) / "manifest.jsonl")}, \
        latest_child(runner, "medgen-synthesize")
