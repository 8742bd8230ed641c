"""``medgen evaluate synth``: the quality report between a real and a synthetic manifest.

Real volumes are normalised with the intensity mapping the generator was trained with (recorded
in the synthetic manifest's summary; ``--intensity`` otherwise) and resampled to the synthetic
grid - the same preparation the generator's training data had. Synthetic volumes are used as
stored (they are already in normalised intensity). A synthetic set of 2D samples (depth 1) is
compared with axial slices of the real volumes (the central 40%, up to 8 per volume).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medgen.errors import ConfigError, MedgenError

log = logging.getLogger("medgen.synth")


def _manifest_path(p: str | Path) -> Path:
    p = Path(p)
    if p.is_dir():
        p = p / "manifest.jsonl"
    if not p.exists():
        raise ConfigError(p.name, "manifest not found")
    return p


def load_arrays(manifest, records, *, intensity=None, max_n: int | None = None,
                allow_uneven: bool = False) -> tuple[list[np.ndarray], list[dict]]:
    """Arrays of ``records`` (intensity-normalised when ``intensity`` is given); bad records are
    rejects with a one-line reason and the rest go on."""
    arrays, rejects = [], []
    tf = intensity.transform(["image"]) if intensity is not None else None
    for r in records[: max_n or None]:
        try:
            vol = manifest.read(r, allow_uneven=allow_uneven)
            if tf is not None:
                a = np.asarray(tf({"image": vol.to_metatensor().float()})["image"])[0]
            else:
                a = np.asarray(vol.array, dtype=np.float32)
        except (MedgenError, ValueError, RuntimeError) as exc:
            rejects.append({"record": r.id, "reason": str(exc)[:200]})
            continue
        arrays.append(a.astype(np.float32))
    return arrays, rejects


def evaluate_synth(real: str | Path, synthetic: str | Path, out_dir: str | Path, *,
                   real_root: str | Path | None = None, real_split: str | None = None,
                   intensity: Any = None, extractor: str | Path | None = None, seed: int = 0,
                   max_real: int | None = 64, max_synthetic: int | None = 64,
                   n_perm: int = 200, tracking: bool = True,
                   experiment: str = "medgen-evaluate", tracking_uri: str | None = None,
                   run_name: str | None = None) -> dict[str, Any]:
    """Quality report of the synthetic manifest against the real one; JSON + HTML + MLflow.

    Parameters
    ----------
    real, synthetic : path
        Manifests (``.jsonl``) or folders holding ``manifest.jsonl`` (a synthesis output).
    real_split : str, optional
        Use only this split of the real manifest (e.g. ``test``: scans the generator never saw).
    intensity : IntensityNorm, optional
        Normalisation of the real volumes when the synthetic summary records none.
    extractor : path, optional
        Local feature extractor for FID (TorchScript file or checkpoint folder).

    Returns
    -------
    dict
        The report plus ``json``/``html`` paths and the MLflow ``run_id``.
    """
    import contextlib

    from medgen.manifest import Manifest
    from medgen.models import IntensityNorm
    from medgen.synth.data import slice_indices
    from medgen.synth.quality import log_report, quality_report, write_report

    sp = _manifest_path(synthetic)
    sm = Manifest.load(sp)
    rm = Manifest.load(_manifest_path(real), real_root)
    info = sm.summary.get("synthetic", {})
    if intensity is None:
        intensity = (IntensityNorm(**info["intensity"]) if info.get("intensity") else
                     IntensityNorm(mode="percentile", lower=0.5, upper=99.5))
    elif isinstance(intensity, dict):
        intensity = IntensityNorm(**intensity)
    recs = rm.split(real_split) if real_split else list(rm)
    if not recs:
        raise ConfigError(Path(real).name, f"no records{' in split ' + real_split if real_split else ''}")
    # synthetic samples are already normalised (by their generator); others get the same mapping
    synth_norm = None if info.get("intensity") else intensity
    s_arr, s_rej = load_arrays(sm, list(sm), intensity=synth_norm, max_n=max_synthetic)
    r_arr, r_rej = load_arrays(rm, recs, intensity=intensity, max_n=max_real)
    if len(s_arr) < 2 or len(r_arr) < 2:
        raise ConfigError(sp.name, f"need at least 2 readable volumes on each side (real "
                          f"{len(r_arr)}, synthetic {len(s_arr)})")
    if all(a.shape[-1] == 1 for a in s_arr):  # 2D samples vs axial slices of real volumes
        s_arr = [a[..., 0] for a in s_arr]
        r2 = []
        for a in r_arr:
            ks = slice_indices(a.shape[-1], (0.3, 0.7))
            ks = [ks[int(i)] for i in np.linspace(0, len(ks) - 1, min(8, len(ks))).round()]
            r2 += [a[..., k] for k in ks]
        r_arr = r2
    from medgen.synth.features import common_shape

    shape = common_shape(s_arr)
    rep = quality_report(r_arr, s_arr, seed=seed, shape=shape, extractor=extractor, n_perm=n_perm)
    memorization = None
    ap = sp.parent / "memorization.json"
    if ap.exists():
        memorization = json.loads(ap.read_text())
    elif info.get("memorization"):
        memorization = {"summary": info["memorization"]}
    context = {"real manifest": rm.digest[:16], "real split": real_split or "all",
               "synthetic manifest": sm.digest[:16],
               "generator": (info.get("generator") or {}).get("model", "unknown"),
               "real intensity": intensity.mode,
               "rejects": len(r_rej) + len(s_rej)}
    jpath, hpath = write_report(rep, r_arr, s_arr, out_dir, memorization=memorization, context=context)
    run_ctx = contextlib.nullcontext(None)
    if tracking:
        from medgen.track import start_run

        run_ctx = start_run(experiment, run_name or f"evaluate-synth-{sm.digest[:8]}",
                            tracking_uri=tracking_uri)
    with run_ctx as run:
        if run is not None:
            run.set_tags({"medgen.task": "evaluate-synth"})
            run.log_manifest(rm.digest, role="real")
            run.log_manifest(sm.digest, role="synthetic")
            log_report(run, rep, jpath, hpath)
            if memorization is not None and "rate" in memorization.get("summary", {}):
                run.log_metrics({"quality/memorization_rate": memorization["summary"]["rate"]})
            from medgen.audit import seal_run

            seal_run(run, kind="evaluate-synth", lineage={
                "real_manifest_sha256": rm.digest, "synthetic_manifest_sha256": sm.digest})
        rid = getattr(run, "run_id", None)
    return {**rep, "json": str(jpath), "html": str(hpath), "run_id": rid,
            "rejects": r_rej + s_rej}
