"""``synthesize``: sample a trained generator, check every sample for memorization, export
NIfTI (or DICOM) and a ``synthetic: true`` manifest, track it in MLflow.

Reproducibility
---------------
Sample ``i`` of a run with base seed ``S`` uses the noise seed :func:`sample_seed` ``(S, i)``,
recorded in its manifest record. Samples are computed in fixed blocks of ``batch`` consecutive
indices (``[0, B)``, ``[B, 2B)``, ...). Regenerating any subset (``indices=[3]``) with the same
``S``, ``batch`` and ``n`` recomputes the blocks that hold it and gives **identical bytes**;
with a different ``batch`` the sample is the same up to float rounding (batched convolutions are
not bit-identical across batch sizes).

Outputs (``DST``)
-----------------
``samples/synth-000003.nii.gz`` (or ``samples/synth-000003/`` DICOM series), optional
``samples/synth-000003_seg.nii.gz`` label maps (paired models; always NIfTI),
``manifest.jsonl`` + ``manifest.summary.json`` (manifest; the summary holds the generator's
lineage and the memorization summary), ``memorization.json`` (every sample's distances, flags withheld ones
too). Every file is written atomically; a sample that fails is reported (one line naming its
index) and the run goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medgen.errors import ConfigError
from medgen.synth.config import parse_conditions

log = logging.getLogger("medgen.synth")

SYNTH_FAMILIES = ("vae-gen", "ldm")


def sample_seed(base_seed: int, index: int) -> int:
    """The noise seed of sample ``index`` of a run with ``base_seed`` (63-bit, stable)."""
    h = hashlib.sha256(f"medgen-synth:{int(base_seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFFFFFFFFFFFFFF


def blocks(n: int, batch: int, indices: Sequence[int] | None = None) -> list[list[int]]:
    """Fixed blocks ``[kB, min(n, (k+1)B))``; with ``indices``, only blocks holding one."""
    want = None if indices is None else set(int(i) for i in indices)
    out = []
    for start in range(0, n, batch):
        blk = list(range(start, min(n, start + batch)))
        if want is None or want.intersection(blk):
            out.append(blk)
    return out


def synthetic_volume(arr: np.ndarray, spacing: Sequence[float] | None, modality: str,
                     mark: str):
    """A :class:`Volume` for a generated array: identity direction, centred at the origin."""
    from medgen.io import Volume

    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 2:
        a = a[:, :, None]
    sp = np.asarray(spacing if spacing is not None else [1.0, 1.0, 1.0], dtype=float)
    origin = -(np.asarray(a.shape, dtype=float) - 1) / 2 * sp
    return Volume(a, Volume.make_affine(sp, None, origin),
                  {"modality": modality, "synthetic": True, "synthetic_mark": mark})


@dataclass
class SynthResult:
    dst: Path
    manifest: Path | None
    n_requested: int
    n_written: int
    n_flagged: int
    n_withheld: int
    memorization: dict[str, Any] = field(default_factory=dict)
    failures: list[dict] = field(default_factory=list)
    run_id: str | None = None
    seconds_per_sample: float = float("nan")
    records: list = field(default_factory=list)


def _device_amp(device: str, amp: str):
    """Device and autocast dtype from the shared resolver (:mod:`medgen.utils.device`)."""
    from medgen.utils.device import resolve_amp, resolve_device

    dev = resolve_device(device)
    return dev, resolve_amp(amp, dev)


def prepare_memorization_check(model, card, train_manifest: str | Path, *, root: str | Path | None = None,
                  train_split: str = "train", heldout_splits: Sequence[str] = ("val", "test"),
                  embedding: str = "random", percentile: float = 5.0, margin: float = 0.5,
                  rule: str = "both"):
    """The memorization reference of a model: its training scans + calibration on held-out scans.

    The manifest must be the one the model was trained on (its digest is checked against the
    model card).
    """
    from medgen.manifest import Manifest
    from medgen.synth.data import load_reference
    from medgen.synth.features import model_embedding
    from medgen.synth.memorization import build_reference

    m = Manifest.load(train_manifest, root)
    if card.training_manifest_sha256 and m.digest != card.training_manifest_sha256:
        raise ConfigError(Path(train_manifest).name, "is not the manifest this model was trained "
                          "on (digest differs from the model card)")
    cfg = model.config
    size, dims = model.image_size(), cfg.spatial_dims
    train_recs = m.split(train_split) if train_split else list(m)
    held_recs = [r for r in m if r.split in set(heldout_splits)]
    kw = {"fit": cfg.fit, "slice_range": cfg.slice_range}
    train, train_ids, rej1 = load_reference(m, train_recs, card.intensity, size, dims, **kw)
    held, held_ids, rej2 = load_reference(m, held_recs, card.intensity, size, dims, **kw)
    emb = model_embedding(model) if embedding == "autoencoder" else "random"
    try:
        ref = build_reference(train, held or None, train_ids=train_ids, heldout_ids=held_ids,
                              percentile=percentile, margin=margin, embedding=emb, rule=rule)
    except ValueError as exc:
        raise ConfigError(Path(train_manifest).name, f"memorization check: {exc}") from None
    ref.calibration["train_manifest_sha256"] = m.digest
    ref.calibration["heldout_splits"] = list(heldout_splits) if held else []
    ref.calibration["rejects"] = rej1 + rej2
    return ref


def synthesize(model_dir: str | Path | tuple, n: int, dst: str | Path, *,
               conditions: Sequence[str] | dict[str, Any] | None = None, seed: int = 0,
               batch: int = 4, fmt: str = "nifti", indices: Sequence[int] | None = None,
               sampler: str | None = None, steps: int | None = None,
               guidance: float | None = None, eta: float | None = None,
               device: str = "auto", amp: str = "auto",
               train_manifest: str | Path | None = None, manifest_root: str | Path | None = None,
               train_split: str = "train", heldout_splits: Sequence[str] = ("val", "test"),
               memorization: bool = True, keep_flagged: bool = False,
               memorization_percentile: float = 5.0, memorization_margin: float = 0.5,
               memorization_rule: str = "both", embedding: str = "random",
               tracking: bool = True, experiment: str = "medgen-synthesize",
               tracking_uri: str | None = None, run_name: str | None = None,
               progress: Callable[[int, int, str], None] | None = None) -> SynthResult:
    """Generate ``n`` samples (or the subset ``indices``) from a checkpoint into ``dst``.

    Parameters
    ----------
    model_dir : path or (module, ModelCard)
        Checkpoint folder (``config.json``, ``model.safetensors``/``ema.safetensors``,
        ``card.json``) of a ``vae-gen`` or ``ldm`` model trained with ``task: synth``, or an
        in-memory generator with its card (weights digest computed from its state_dict).
    n : int
        Number of samples of the run (indices ``0 .. n-1``).
    dst : path
        Output folder (created; existing sample files with the same names are replaced).
    conditions : ["name=value", ...] or dict
        Values for every condition of a conditional model (the same for all samples).
    seed, batch : int
        Base seed (sample ``i`` uses :func:`sample_seed` ``(seed, i)``) and block size.
    fmt : {"nifti", "dicom"}
    indices : list of int, optional
        Regenerate only these indices (same ``seed``, ``batch`` and ``n``: identical bytes).
    sampler, steps, guidance, eta
        Diffusion sampling overrides (``ldm``).
    train_manifest, manifest_root, train_split, heldout_splits
        The model's training manifest for the memorization check (digest checked).
    memorization : bool
        ``False`` skips the memorization check (recorded as skipped in the manifest summary).
    keep_flagged : bool
        Export flagged samples too (they stay marked in the manifest and memorization.json).
    memorization_percentile, memorization_margin, memorization_rule, embedding
        Calibration of the memorization check (see :mod:`medgen.synth.memorization`); ``embedding``: ``random`` or
        ``autoencoder``.
    tracking, experiment, tracking_uri, run_name
        MLflow run of this synthesis (its id is cited in every record).
    progress : callable, optional
        ``progress(done, total, info)`` after each block.

    Returns
    -------
    SynthResult

    Raises
    ------
    ConfigError
        Not a synthesis checkpoint, bad conditions, a memorization check without a training manifest.
    """
    import contextlib

    import torch

    from medgen.models import load_checkpoint
    from medgen.models.synth.config import encode_conditions

    if n < 1 or batch < 1:
        raise ConfigError("-n/--batch", "must be >= 1")
    if fmt not in ("nifti", "dicom"):
        raise ConfigError("--format", f"'{fmt}' (use nifti or dicom)")
    if indices is not None:
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise ConfigError("--index", f"{bad[0]} is outside 0..{n - 1}")
    dev, amp_dtype = _device_amp(device, amp)
    if isinstance(model_dir, tuple):  # an in-memory generator and its card
        model, card = model_dir
        model = model.to(dev).eval()
        cfg = model.config
        from medgen.models import state_dict_sha256

        wsha = state_dict_sha256(model.state_dict())
        where = cfg.name
    else:
        model_dir = Path(model_dir)
        model, cfg, card = load_checkpoint(model_dir, dev)
        from medgen.models import weights_sha256

        wsha = weights_sha256(model_dir, "ema" if (model_dir / "ema.safetensors").exists()
                              else "model")
        where = model_dir.name
    if cfg.name not in SYNTH_FAMILIES or card.task != "synth":
        raise ConfigError(where, f"not a synthesis checkpoint (model '{cfg.name}', "
                          f"task '{card.task}')")
    cond_values = parse_conditions(conditions)
    try:
        vec = encode_conditions(cfg.conditions, cond_values)
    except ValueError as exc:
        raise ConfigError("--condition", str(exc)) from None
    if cfg.name == "ldm":
        try:
            cfg.diffusion.check_sampler(sampler or cfg.diffusion.default_sampler())
        except ValueError as exc:
            raise ConfigError("--sampler", str(exc)) from None
    ref = None
    if memorization:
        if train_manifest is None:
            raise ConfigError("--train-manifest", "the memorization check needs the model's "
                              "training manifest (or --no-memorization-check to skip it, recorded)")
        ref = prepare_memorization_check(model, card, train_manifest, root=manifest_root,
                            train_split=train_split, heldout_splits=heldout_splits,
                            embedding=embedding, percentile=memorization_percentile, margin=memorization_margin,
                            rule=memorization_rule)
    dst = Path(dst)
    (dst / "samples").mkdir(parents=True, exist_ok=True)
    todo = blocks(n, batch, indices)
    want = set(range(n)) if indices is None else {int(i) for i in indices}
    total = sum(len([i for i in b if i in want]) for b in todo)
    settings = {"sampler": (sampler or cfg.diffusion.default_sampler()) if cfg.name == "ldm" else "prior",
                "steps": int(steps or cfg.diffusion.inference_steps) if cfg.name == "ldm" else 1,
                "guidance": float(cfg.diffusion.guidance_scale if guidance is None else guidance)
                if cfg.name == "ldm" else 1.0,
                "eta": float(cfg.diffusion.eta if eta is None else eta) if cfg.name == "ldm" else 0.0}
    run_ctx = contextlib.nullcontext(None)
    if tracking:
        from medgen.track import start_run

        run_ctx = start_run(experiment, run_name or f"synth-{cfg.name}-{wsha[:8]}-s{seed}",
                            tracking_uri=tracking_uri)
    rows: list[dict] = []
    records = []
    failures: list[dict] = []
    written = withheld = 0
    gen_seconds = 0.0
    with run_ctx as run:
        run_id = getattr(run, "run_id", None)
        if run is not None:
            run.log_params({"model": cfg.name, "n": n, "seed": seed, "batch": batch,
                            "format": fmt, "keep_flagged": keep_flagged, "memorization_check": memorization,
                            **{f"sampling.{k}": v for k, v in settings.items()},
                            **{f"condition.{k}": v for k, v in cond_values.items()}})
            run.set_tags({"medgen.task": "synthesize", "medgen.weights_sha256": wsha,
                          "medgen.generator_run": card.mlflow_run_id or "unknown"})
        mark = f"SYNTHETIC medgen {cfg.name} w:{wsha[:12]}"
        done = 0
        for blk in todo:
            seeds = [sample_seed(seed, i) for i in blk]
            cond = (torch.tensor([vec] * len(blk), dtype=torch.float32) if vec else None)
            tg = time.perf_counter()
            try:
                out = model.generate(seeds, cond, sampler=sampler, steps=steps, guidance=guidance,
                                     eta=eta, amp=amp_dtype)
                img, lab = model.split_output(out)
            except (RuntimeError, ValueError) as exc:
                for i in blk:
                    if i in want:
                        failures.append({"index": i, "reason": f"generation failed: "
                                         f"{type(exc).__name__}: {str(exc)[:160]}"})
                log.warning("block %d..%d failed: %s", blk[0], blk[-1], type(exc).__name__)
                continue
            gen_seconds += time.perf_counter() - tg
            arrays = [img[j, 0].cpu().numpy().astype(np.float32) for j in range(len(blk))]
            keep = [j for j, i in enumerate(blk) if i in want]
            memo_rows = ref.check([arrays[j] for j in keep], [blk[j] for j in keep]) if ref else \
                [{"index": blk[j], "flagged": False, "flagged_by": []} for j in keep]
            for j, arow in zip(keep, memo_rows):
                i = blk[j]
                arow["seed"] = seeds[j]
                rows.append(arow)
                if arow["flagged"] and not keep_flagged:
                    withheld += 1
                    arow["exported"] = False
                    continue
                try:
                    rec = _export(dst, i, arrays[j], None if lab is None else lab[j].cpu().numpy(),
                                  cfg, fmt, mark, wsha, seeds[j])
                except Exception as exc:  # noqa: BLE001 - one bad sample never stops the run
                    failures.append({"index": i, "reason": f"export failed: {type(exc).__name__}: "
                                     f"{str(exc)[:160]}"})
                    arow["exported"] = False
                    continue
                arow["exported"] = True
                written += 1
                rec.labels.update({k: v for k, v in cond_values.items()})
                rec.extra.update({
                    "generator": cfg.name, "weights_sha256": wsha,
                    "generator_run": card.mlflow_run_id, "synthesis_run": run_id,
                    "base_seed": int(seed), "index": int(i), "seed": int(seeds[j]),
                    "n": int(n), "batch": int(batch), **settings,
                    "memorization": {k: arow[k] for k in arow if k not in ("index", "seed")},
                })
                records.append(rec)
            done += len(keep)
            if progress:
                progress(done, total, f"{withheld} withheld")
        from medgen.synth.memorization import MemorizationResult

        memo = MemorizationResult(rows, ref.thresholds, ref.calibration) if ref else None
        memorization_summary = memo.summary() if memo else {"skipped": True}
        memorization_summary["n_withheld"] = withheld
        memorization_summary["keep_flagged"] = keep_flagged
        manifest_path = _write_manifest(dst, records, failures, {
            "generator": {"model": cfg.name, "weights_sha256": wsha,
                          "config_sha256": card.config_sha256,
                          "training_manifest_sha256": card.training_manifest_sha256,
                          "generator_run": card.mlflow_run_id, "synthesis_run": run_id},
            "base_seed": int(seed), "n_requested": int(n), "n_generated": len(rows),
            "n_written": written, "batch": int(batch), "format": fmt, "sampling": settings,
            "conditions": cond_values, "intensity": card.intensity.model_dump(mode="json"),
            "indices": sorted(want) if indices is not None else None,
            "memorization": memorization_summary, "failures": failures})
        from medgen.utils.atomic import atomic_write_text

        atomic_write_text(dst / "memorization.json", json.dumps(
            {"summary": memorization_summary, "samples": rows}, indent=1, sort_keys=True,
            default=_json_default) + "\n")
        sps = gen_seconds / max(1, len(rows))
        if run is not None:
            run.log_metrics({"synth/n_written": written, "synth/n_withheld": withheld,
                             "synth/memorization_rate": memorization_summary.get("rate", float("nan"))
                             if ref else -1.0,
                             "synth/n_flagged": memorization_summary.get("n_flagged", 0),
                             "synth/seconds_per_sample": sps,
                             "synth/failures": len(failures)})
            run.log_json({"summary": memorization_summary, "samples": rows}, "synth/memorization.json")
            run.log_manifest(manifest_path, role="synthetic")
            from medgen.manifest import Manifest
            from medgen.synth.lineage import seal_synthesis

            seal_synthesis(run, model_dir=None if isinstance(model_dir, tuple) else model_dir,
                           dst=dst, manifest_path=manifest_path, lineage={
                               "weights_sha256": wsha, "n_written": written, "n_withheld": withheld,
                               "synthetic_manifest_sha256": Manifest.load(manifest_path).digest,
                               "base_seed": int(seed)},
                           recipe={"n": int(n), "seed": int(seed), "batch": int(batch),
                                   "format": fmt, "conditions": cond_values, "device": dev.type,
                                   "sampler": sampler, "steps": steps, "guidance": guidance,
                                   "eta": eta})
    return SynthResult(dst, manifest_path, n, written, sum(r["flagged"] for r in rows), withheld,
                       memorization_summary, failures, run_id, sps if rows else math.nan, records)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    raise TypeError(type(o).__name__)


def _export(dst: Path, i: int, arr: np.ndarray, label: np.ndarray | None, cfg, fmt: str,
            mark: str, wsha: str, seed: int):
    """Write sample ``i`` (and its label map) and return its manifest :class:`Record`."""
    from medgen.io.dicom_write import write_dicom_series
    from medgen.io.nifti import write_nifti
    from medgen.manifest import FileEntry, Record
    from medgen.utils.hashing import sha256_file

    name = f"synth-{i:06d}"
    vol = synthetic_volume(arr, cfg.spacing_mm, cfg.modality, mark)
    rid = hashlib.sha256(f"{wsha}:{seed}:{i}".encode()).hexdigest()[:16]
    files: list[Path] = []
    if fmt == "nifti":
        p = dst / "samples" / f"{name}.nii.gz"
        write_nifti(vol, p, descrip=f"{mark} seed:{seed}")
        files.append(p)
    else:
        p = dst / "samples" / name
        write_dicom_series(vol, p, digest=hashlib.sha256(f"{wsha}:{seed}".encode()).hexdigest(),
                           derivation=f"synthetic sample generated by medgen {cfg.name} "
                                      f"(weights {wsha[:12]}, seed {seed})",
                           series_description=f"SYNTHETIC medgen {cfg.name}", synthetic=True)
        files.extend(sorted(p.iterdir()))
    labels: dict[str, Any] = {}
    if label is not None:
        lp = dst / "samples" / f"{name}_seg.nii.gz"
        lv = synthetic_volume(label.astype(np.int16), cfg.spacing_mm, "OT", mark)
        write_nifti(lv, lp, dtype=np.int16, descrip=f"{mark} label map seed:{seed}")
        labels["label_map"] = lp.relative_to(dst).as_posix()
        label_entry = [lp]
    else:
        label_entry = []
    entries = [FileEntry(path=f.relative_to(dst).as_posix(), sha256=sha256_file(f),
                         size=f.stat().st_size) for f in files + label_entry]
    return Record(id=rid, subject=rid, format=fmt, modality=cfg.modality,
                  shape=[int(s) for s in vol.shape], spacing=[round(float(s), 6) for s in vol.spacing],
                  files=entries, split="synthetic", synthetic=True, labels=labels, extra={})


def _write_manifest(dst: Path, records: list, failures: list[dict], summary: dict) -> Path:
    from medgen.manifest import Manifest

    m = Manifest(records, root=dst)
    path = dst / "manifest.jsonl"
    rejects = [{"path": f"sample {f['index']}", "reason": f["reason"]} for f in failures]
    m.write(path, rejects=rejects, extra_summary={"synthetic": summary,
                                                  "kind": "medgen-manifest"})
    return path
