"""Quality report of a synthetic set against real data, on two lists of arrays.

:func:`quality_report` takes real and synthetic arrays (2D or 3D, normalised intensity; any
sizes - everything is resampled to one grid) and returns a JSON-able dict:

* ``mmd``: squared maximum mean discrepancy with a Gaussian kernel (median-heuristic bandwidth)
  on (a) area-downsampled volumes and (b) the fixed random-conv embedding, each with a seeded
  permutation p-value (small p: the sets differ);
* ``diversity``: mean ``1 - MS-SSIM`` over random pairs *within* the synthetic set and *within*
  the real set, and their ratio (about 1: as diverse as real data; far below 1: mode collapse or
  memorization). MONAI's ``MultiScaleSSIMMetric`` with its defaults (5 scales, kernel 11) refuses
  volumes of 160 voxels or fewer per side; :func:`ms_ssim_settings` picks fewer scales and a
  smaller kernel for the grid at hand (the first standard weights, renormalised) and the report
  states what it used;
* ``histogram``: Wasserstein-1 distance and Jensen-Shannon divergence (base 2) between the pooled
  voxel intensity distributions;
* ``c2st``: classifier two-sample test - a small CNN (seeded) learns real vs synthetic; the AUC
  of out-of-fold predictions (k-fold) is reported with its null standard error (0.5: the
  classifier cannot tell them apart; 1.0: trivially separable);
* ``fid``: Fréchet distance between Gaussian fits of features from a *user-supplied local*
  extractor (:func:`medgen.synth.features.load_extractor`); without one:
  ``"not computed (no local extractor)"``. Nothing is downloaded.

:func:`write_report` writes ``quality.json`` and a self-contained ``quality.html`` (PNG figures
embedded as base64: sample grids, histograms, the MMD permutation null, diversity bars, the
C2ST ROC curve, the memorization-check distances when given).
"""

from __future__ import annotations

import base64
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medgen.synth.features import (
    RandomConvEmbedding,
    downsample,
    load_extractor,
    resample_all,
)

log = logging.getLogger("medgen.synth")

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
NO_EXTRACTOR = "not computed (no local extractor)"


# --------------------------------------------------------------------------- MMD


def _sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0.0)


def mmd_test(x: np.ndarray, y: np.ndarray, *, n_perm: int = 200, seed: int = 0
             ) -> dict[str, Any]:
    """Unbiased MMD² (Gaussian kernel, median-heuristic bandwidth) with a permutation p-value.

    Returns ``{"mmd2", "p_value", "bandwidth", "null": [...]}``.
    """
    z = np.concatenate([x, y])
    n = len(x)
    d = _sqdist(z, z)
    off = d[~np.eye(len(z), dtype=bool)]
    bw2 = float(np.median(off)) if off.size and np.median(off) > 0 else 1.0
    k = np.exp(-d / bw2)

    def stat(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        kxx = k[np.ix_(a, a)]
        kyy = k[np.ix_(b, b)]
        kxy = k[np.ix_(a, b)]
        m, l2 = len(a), len(b)
        sxx = (kxx.sum() - np.trace(kxx)) / max(1, m * (m - 1))
        syy = (kyy.sum() - np.trace(kyy)) / max(1, l2 * (l2 - 1))
        return float(sxx + syy - 2 * kxy.mean())

    idx = np.arange(len(z))
    obs = stat(idx)
    rng = np.random.default_rng(seed)
    null = np.array([stat(rng.permutation(idx)) for _ in range(n_perm)])
    p = float((1 + np.sum(null >= obs)) / (1 + n_perm))
    return {"mmd2": obs, "p_value": p, "bandwidth": math.sqrt(bw2), "n_perm": n_perm,
            "null": null.tolist()}


# --------------------------------------------------------------------------- MS-SSIM


def ms_ssim_settings(shape: Sequence[int]) -> dict[str, Any]:
    """Scales, kernel and weights of MS-SSIM that MONAI accepts for volumes of ``shape``.

    MONAI requires ``side // (n_scales - 1)**2 > kernel - 1`` for every side; we take the most
    scales (<= 5) that leave an odd kernel >= 3 fitting the coarsest scale too, with the largest
    such kernel (<= 11, sigma scaled as 1.5 * kernel / 11), and the first ``n_scales`` standard
    weights renormalised to sum 1.
    """
    side = int(min(shape))
    for n in (5, 4, 3, 2):
        div = max(1, n - 1) ** 2
        kmax = min(11, side // div, side // 2 ** (n - 1))
        k = kmax if kmax % 2 else kmax - 1
        if k >= 3 and side // div > k - 1:
            w = np.asarray(MS_SSIM_WEIGHTS[:n])
            return {"scales": n, "kernel_size": int(k), "kernel_sigma": 1.5 * k / 11,
                    "weights": (w / w.sum()).tolist()}
    return {"scales": 1, "kernel_size": 3, "kernel_sigma": 1.5 * 3 / 11, "weights": [1.0]}


def ms_ssim_pairs(arrays: Sequence[np.ndarray], pairs: list[tuple[int, int]],
                  settings: dict[str, Any], data_range: float) -> np.ndarray:
    """MS-SSIM of each ``(i, j)`` pair (MONAI metric with ``settings``; plain SSIM for 1 scale)."""
    import torch
    from monai.metrics import MultiScaleSSIMMetric, SSIMMetric

    if not pairs:
        return np.zeros(0)
    dims = arrays[0].ndim
    a = torch.as_tensor(np.stack([arrays[i] for i, _ in pairs]))[:, None].float()
    b = torch.as_tensor(np.stack([arrays[j] for _, j in pairs]))[:, None].float()
    if settings["scales"] > 1:
        metric = MultiScaleSSIMMetric(spatial_dims=dims, data_range=data_range,
                                      kernel_size=settings["kernel_size"],
                                      kernel_sigma=settings["kernel_sigma"],
                                      weights=settings["weights"])
    else:
        metric = SSIMMetric(spatial_dims=dims, data_range=data_range,
                            win_size=settings["kernel_size"])
    with torch.no_grad():
        return metric(a, b).view(-1).numpy().astype(np.float64)


def _pairs(n: int, max_pairs: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    allp = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if len(allp) > max_pairs:
        sel = rng.choice(len(allp), max_pairs, replace=False)
        allp = [allp[int(s)] for s in sorted(sel)]
    return allp


# --------------------------------------------------------------------------- C2ST


def _auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties get average ranks)."""
    from scipy.stats import rankdata

    pos = labels == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def c2st(real: Sequence[np.ndarray], synth: Sequence[np.ndarray], *, seed: int = 0,
         folds: int = 4, epochs: int = 60, size: int | None = None) -> dict[str, Any]:
    """Classifier two-sample test: out-of-fold AUC of a small CNN telling real from synthetic.

    Stratified ``folds``-fold cross-validation; each fold trains a fresh seeded CNN (two conv +
    ReLU + pool stages, global average pool, linear) full-batch with Adam for ``epochs`` epochs
    on inputs resampled to ``size`` voxels a side (16 in 3D, 32 in 2D), with random flips.
    """
    import torch

    dims = np.asarray(real[0]).ndim
    size = size or (16 if dims == 3 else 32)
    x = np.stack(resample_all(list(real) + list(synth), [size] * dims))[:, None]
    y = np.array([0] * len(real) + [1] * len(synth))
    folds = max(2, min(folds, len(real), len(synth)))
    rng = np.random.default_rng(seed)
    fold_of = np.empty(len(y), int)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        fold_of[idx] = np.arange(len(idx)) % folds
    scores = np.zeros(len(y))
    conv = torch.nn.Conv3d if dims == 3 else torch.nn.Conv2d
    pool = torch.nn.MaxPool3d if dims == 3 else torch.nn.MaxPool2d
    gap = torch.nn.AdaptiveAvgPool3d if dims == 3 else torch.nn.AdaptiveAvgPool2d
    xt = torch.as_tensor(x).float()
    yt = torch.as_tensor(y).float()
    with torch.random.fork_rng(devices=[]):
        for f in range(folds):
            torch.manual_seed(seed * 1000 + f)
            net = torch.nn.Sequential(conv(1, 8, 3, padding=1), torch.nn.ReLU(), pool(2),
                                      conv(8, 16, 3, padding=1), torch.nn.ReLU(), pool(2),
                                      gap(1), torch.nn.Flatten(), torch.nn.Linear(16, 1))
            opt = torch.optim.Adam(net.parameters(), lr=3e-3)
            tr, te = fold_of != f, fold_of == f
            xtr, ytr = xt[tr], yt[tr]
            pw = torch.tensor(float((ytr == 0).sum()) / max(1.0, float((ytr == 1).sum())))
            for _ in range(epochs):
                xa = xtr
                for ax in range(2, 2 + dims):  # random flips: position is not the signal
                    if torch.rand(()) < 0.5:
                        xa = xa.flip(ax)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(
                    net(xa)[:, 0], ytr, pos_weight=pw)
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                scores[te] = net(xt[te])[:, 0].numpy()
    auc = _auc(scores, y)
    n0, n1 = len(real), len(synth)
    return {"auc": auc, "null_se": math.sqrt((n0 + n1 + 1) / (12 * n0 * n1)), "folds": folds,
            "epochs": epochs, "input_size": size, "accuracy": float(np.mean((scores > 0) == y)),
            "scores": scores.tolist(), "labels": y.tolist()}


# --------------------------------------------------------------------------- FID


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows: samples)."""
    from scipy import linalg

    mu1, mu2 = f1.mean(0), f2.mean(0)
    c1 = np.atleast_2d(np.cov(f1, rowvar=False))
    c2 = np.atleast_2d(np.cov(f2, rowvar=False))
    covmean, _ = linalg.sqrtm(c1 @ c2, disp=False)
    if not np.isfinite(covmean).all():
        eps = np.eye(len(c1)) * 1e-6
        covmean = linalg.sqrtm((c1 + eps) @ (c2 + eps))
    covmean = np.real(covmean)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


# --------------------------------------------------------------------------- the report


def quality_report(real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray], *,
                   seed: int = 0, shape: Sequence[int] | None = None,
                   extractor: str | Path | Callable | None = None, n_perm: int = 200,
                   max_pairs: int = 45, c2st_folds: int = 4, c2st_epochs: int = 60
                   ) -> dict[str, Any]:
    """All quality metrics of ``synthetic`` against ``real`` (see the module docstring).

    Parameters
    ----------
    real, synthetic : sequences of arrays
        2D or 3D arrays in the same (normalised) intensity scale; at least 2 of each.
    seed : int
        Seeds every random choice (permutations, pairs, classifier weights and flips).
    shape : sequence of int, optional
        Common grid (default: the synthetic arrays' smallest size per axis, capped at 64).
    extractor : path or callable, optional
        Local feature extractor for FID; None: FID is not computed.

    Returns
    -------
    dict
        JSON-able; large per-item lists (``null``, ``scores``) are kept for the plots.
    """
    from medgen.synth.features import common_shape

    real, synthetic = list(real), list(synthetic)
    if len(real) < 2 or len(synthetic) < 2:
        raise ValueError("the quality report needs at least 2 real and 2 synthetic arrays")
    dims = {np.asarray(a).ndim for a in real + synthetic}
    if len(dims) != 1:
        raise ValueError("real and synthetic arrays must all be 2D or all 3D")
    shape = tuple(shape) if shape else common_shape(synthetic)
    r = resample_all(real, shape)
    s = resample_all(synthetic, shape)
    d = len(shape)
    rep: dict[str, Any] = {"n_real": len(r), "n_synthetic": len(s), "grid": list(shape),
                           "seed": seed}
    # MMD on downsampled volumes and on the random-conv embedding
    emb = RandomConvEmbedding(d, seed=0)
    rep["mmd"] = {
        "downsampled": {**mmd_test(downsample(r, 16 if d == 3 else 32),
                                   downsample(s, 16 if d == 3 else 32), n_perm=n_perm, seed=seed),
                        "features": f"area-downsampled to <= {16 if d == 3 else 32} per side"},
        "embedding": {**mmd_test(emb(r), emb(s), n_perm=n_perm, seed=seed),
                      "features": emb.name + " (fixed random weights; not a perceptual metric)"},
    }
    # MS-SSIM diversity
    rng = np.random.default_rng(seed)
    st = ms_ssim_settings(shape)
    lo = float(min(np.min(a) for a in r + s))
    hi = float(max(np.max(a) for a in r + s))
    # MS-SSIM's data range from the real set alone: the real diversity is then a fixed
    # reference that does not move with the synthetic set being scored
    dr = (float(max(np.max(a) for a in r)) - float(min(np.min(a) for a in r))) or 1.0
    ms_s = ms_ssim_pairs(s, _pairs(len(s), max_pairs, rng), st, dr)
    ms_r = ms_ssim_pairs(r, _pairs(len(r), max_pairs, rng), st, dr)
    div_s, div_r = float(np.mean(1 - ms_s)), float(np.mean(1 - ms_r))
    rep["diversity"] = {"synthetic": div_s, "real": div_r,
                        "ratio": div_s / div_r if div_r > 0 else float("nan"),
                        "n_pairs": {"synthetic": len(ms_s), "real": len(ms_r)},
                        "ms_ssim": {**st, "data_range": dr,
                                    "note": "MONAI defaults (5 scales, kernel 11) need > 160 "
                                            "voxels per side; adapted to this grid"}}
    # intensity histograms
    from scipy.spatial.distance import jensenshannon
    from scipy.stats import wasserstein_distance

    vr = np.concatenate([a.ravel() for a in r])
    vs = np.concatenate([a.ravel() for a in s])
    cap = 200_000
    vr_s = rng.choice(vr, cap, replace=False) if vr.size > cap else vr
    vs_s = rng.choice(vs, cap, replace=False) if vs.size > cap else vs
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 65)
    hr, _ = np.histogram(vr, bins)
    hs, _ = np.histogram(vs, bins)
    rep["histogram"] = {"wasserstein1": float(wasserstein_distance(vr_s, vs_s)),
                        "js_divergence": float(jensenshannon(hr + 1e-12, hs + 1e-12, base=2) ** 2),
                        "bins": bins.tolist(), "real": (hr / max(1, hr.sum())).tolist(),
                        "synthetic": (hs / max(1, hs.sum())).tolist(),
                        "mean": {"real": float(vr.mean()), "synthetic": float(vs.mean())},
                        "std": {"real": float(vr.std()), "synthetic": float(vs.std())}}
    rep["c2st"] = c2st(r, s, seed=seed, folds=c2st_folds, epochs=c2st_epochs)
    # FID with a local extractor only
    if extractor is None:
        rep["fid"] = {"computed": False, "value": None, "reason": NO_EXTRACTOR}
    else:
        f = load_extractor(extractor) if not callable(extractor) else extractor
        fr, fs = f(r), f(s)
        rep["fid"] = {"computed": True, "value": frechet_distance(fr, fs),
                      "extractor": getattr(f, "name", "custom"), "dim": int(fr.shape[1])}
    rep["summary"] = summary_metrics(rep)
    return rep


def summary_metrics(rep: dict[str, Any]) -> dict[str, float]:
    """Flat ``name -> number`` view of a report (MLflow metrics, benchmark tables)."""
    out = {
        "mmd2_downsampled": rep["mmd"]["downsampled"]["mmd2"],
        "mmd_p_downsampled": rep["mmd"]["downsampled"]["p_value"],
        "mmd2_embedding": rep["mmd"]["embedding"]["mmd2"],
        "mmd_p_embedding": rep["mmd"]["embedding"]["p_value"],
        "diversity_synthetic": rep["diversity"]["synthetic"],
        "diversity_real": rep["diversity"]["real"],
        "diversity_ratio": rep["diversity"]["ratio"],
        "hist_wasserstein1": rep["histogram"]["wasserstein1"],
        "hist_js": rep["histogram"]["js_divergence"],
        "c2st_auc": rep["c2st"]["auc"],
    }
    if rep["fid"]["computed"]:
        out["fid"] = rep["fid"]["value"]
    return out


# --------------------------------------------------------------------------- outputs


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _grid(arrays: Sequence[np.ndarray], title: str, vmin: float, vmax: float, n: int = 8) -> str:
    arrays = list(arrays)[:n]
    three = arrays[0].ndim == 3
    rows = 3 if three else 1
    fig = _figure(1.6 * len(arrays), 1.7 * rows + 0.3)
    fig.suptitle(title, fontsize=9)
    for c, a in enumerate(arrays):
        cuts = ([a[:, :, a.shape[2] // 2], a[:, a.shape[1] // 2, :], a[a.shape[0] // 2]]
                if three else [a])
        for rr, sl in enumerate(cuts):
            ax = fig.add_subplot(rows, len(arrays), rr * len(arrays) + c + 1)
            ax.imshow(np.asarray(sl).T, cmap="gray", origin="lower", vmin=vmin, vmax=vmax,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return _png(fig)


def _plots(rep: dict[str, Any], memorization: dict[str, Any] | None) -> dict[str, str]:
    figs = {}
    h = rep["histogram"]
    centers = (np.asarray(h["bins"][:-1]) + np.asarray(h["bins"][1:])) / 2
    fig = _figure(4.2, 3)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(centers, h["real"], label="real")
    ax.plot(centers, h["synthetic"], label="synthetic")
    ax.set_yscale("log")
    ax.set_xlabel("normalised intensity")
    ax.set_title(f"intensity histograms (W1 {h['wasserstein1']:.4f})", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    figs["histogram"] = _png(fig)
    fig = _figure(6.5, 2.8)
    for k, key in enumerate(("downsampled", "embedding")):
        m = rep["mmd"][key]
        ax = fig.add_subplot(1, 2, k + 1)
        ax.hist(m["null"], bins=30, color="0.7")
        ax.axvline(m["mmd2"], color="C3")
        ax.set_title(f"MMD² {key}: {m['mmd2']:.4g} (p={m['p_value']:.3f})", fontsize=8)
    fig.tight_layout()
    figs["mmd"] = _png(fig)
    fig = _figure(6.5, 2.8)
    ax = fig.add_subplot(1, 2, 1)
    dv = rep["diversity"]
    ax.bar(["real", "synthetic"], [dv["real"], dv["synthetic"]], color=["C0", "C1"])
    ax.set_title(f"diversity 1-MS-SSIM (ratio {dv['ratio']:.2f})", fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    sc, lab = np.asarray(rep["c2st"]["scores"]), np.asarray(rep["c2st"]["labels"])
    thr = np.unique(sc)[::-1]
    tpr = [0.0] + [float(np.mean(sc[lab == 1] >= t)) for t in thr]
    fpr = [0.0] + [float(np.mean(sc[lab == 0] >= t)) for t in thr]
    ax.plot(fpr, tpr, "-o", ms=2)
    ax.plot([0, 1], [0, 1], "--", color="0.6")
    ax.set_title(f"C2ST ROC (AUC {rep['c2st']['auc']:.2f})", fontsize=8)
    ax.set_xlabel("false positive rate", fontsize=8)
    fig.tight_layout()
    figs["diversity_c2st"] = _png(fig)
    if memorization and memorization.get("samples"):
        fig = _figure(6.5, 2.8)
        cal = memorization["summary"].get("calibration", {})
        for k, m in enumerate(("ncc", "embedding")):
            ax = fig.add_subplot(1, 2, k + 1)
            vals = [x[f"{m}_distance"] for x in memorization["samples"] if f"{m}_distance" in x]
            ax.hist(vals, bins=20, color="C1", alpha=0.8, label="synthetic")
            thr_v = memorization["summary"].get("thresholds", {}).get(m)
            if thr_v is not None:
                ax.axvline(thr_v, color="C3", label="threshold")
            if m in cal:
                ax.axvline(cal[m]["median"], color="C0", ls="--", label="held-out median")
            ax.set_title(f"nearest-training distance ({m})", fontsize=8)
            ax.legend(fontsize=7)
        fig.tight_layout()
        figs["memorization"] = _png(fig)
    return figs


def write_report(rep: dict[str, Any], real: Sequence[np.ndarray], synthetic: Sequence[np.ndarray],
                 out_dir: str | Path, *, memorization: dict[str, Any] | None = None,
                 title: str = "medgen synthesis quality report",
                 context: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``quality.json`` and a self-contained ``quality.html``; return both paths."""
    from html import escape

    from medgen.utils.atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {**rep, "context": context or {}}
    if memorization is not None:
        doc["memorization"] = memorization.get("summary", memorization)
    jpath = out / "quality.json"
    atomic_write_text(jpath, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    shape = rep["grid"]
    r = resample_all(list(real)[:8], shape)
    s = resample_all(list(synthetic)[:8], shape)
    both = np.concatenate([a.ravel() for a in r + s])
    vmin, vmax = (float(v) for v in np.percentile(both, [0.5, 99.5]))
    figs = _plots(rep, memorization)
    rows = "".join(f"<tr><td>{escape(k)}</td><td>{v:.5g}</td></tr>"
                   for k, v in rep["summary"].items())
    fid = (f"{rep['fid']['value']:.5g} ({escape(rep['fid']['extractor'])})" if rep["fid"]["computed"]
           else escape(rep["fid"]["reason"]))
    st = rep["diversity"]["ms_ssim"]
    ctx = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
                  for k, v in (context or {}).items())
    memorization_html = ""
    if memorization is not None:
        a = memorization.get("summary", memorization)
        if a.get("skipped"):
            memorization_html = "<h2>Memorization check</h2><p>skipped</p>"
        else:
            memorization_html = (f"<h2>Memorization check</h2><p>{a.get('n_flagged', 0)} of "
                          f"{a.get('n_samples', 0)} samples flagged (rate {a.get('rate', 0):.3f}); "
                          f"{a.get('n_withheld', 0)} withheld. {escape(str(a.get('rule', '')))}.</p>"
                          + (f"<img src='data:image/png;base64,{figs['memorization']}'>"
                             if "memorization" in figs else ""))
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>{escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td{{padding:2px 10px}}
table{{border-collapse:collapse}}tr:nth-child(even){{background:#f3f3f3}}img{{max-width:100%}}</style>
</head><body><h1>{escape(title)}</h1>
<p>{rep['n_real']} real and {rep['n_synthetic']} synthetic samples, compared on a
{'x'.join(str(x) for x in shape)} grid (seed {rep['seed']}).</p>
<table>{ctx}</table>
<h2>Summary</h2><table>{rows}<tr><td>FID</td><td>{fid}</td></tr></table>
<p>MMD: small p-value = the sets differ. Diversity ratio ~1 = as diverse as real data; far below 1
= mode collapse or copying. C2ST AUC 0.5 = indistinguishable (null SE {rep['c2st']['null_se']:.3f}).
MS-SSIM used {st['scales']} scale(s), kernel {st['kernel_size']} (MONAI's defaults need more than
160 voxels a side). The embedding is a fixed random-weight conv net, not a perceptual metric.</p>
<h2>Samples</h2>
<img src="data:image/png;base64,{_grid(r, 'real', vmin, vmax)}">
<img src="data:image/png;base64,{_grid(s, 'synthetic', vmin, vmax)}">
<h2>Distributions</h2>
<img src="data:image/png;base64,{figs['histogram']}">
<img src="data:image/png;base64,{figs['mmd']}">
<img src="data:image/png;base64,{figs['diversity_c2st']}">
{memorization_html}
</body></html>
"""
    hpath = out / "quality.html"
    atomic_write_text(hpath, html)
    return jpath, hpath


def log_report(run, rep: dict[str, Any], json_path: Path, html_path: Path,
               prefix: str = "quality") -> None:
    """Log the summary metrics, the JSON and the HTML page to an MLflow :class:`Run`."""
    run.log_metrics({f"{prefix}/{k}": float(v) for k, v in rep["summary"].items()
                     if v is not None and math.isfinite(float(v))})
    run.log_artifact(json_path, prefix)
    run.log_artifact(html_path, prefix)
