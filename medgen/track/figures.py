"""PNG grids of volumes for a run (matplotlib's Agg canvas: no pyplot, no global backend)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def grid_arrays(images: Mapping[str, Any], label=lambda s: s,
                diff: tuple[str, str] | str | None = "auto") -> dict:
    """``label -> float32 array`` (2D/3D; leading axes of 1 dropped) plus a ``difference`` row."""
    import numpy as np

    arrays: dict[str, np.ndarray] = {}
    for name, arr in images.items():
        if hasattr(arr, "detach"):
            arr = arr.detach().float().cpu().numpy()
        a = np.asarray(arr, dtype=np.float32)
        while a.ndim > 2 and a.shape[0] == 1:  # channel / batch axes of 1 (MONAI layout)
            a = a[0]
        if a.ndim not in (2, 3):
            raise ValueError(f"figure grid: '{name}' must be 2D or 3D, got shape {a.shape}")
        arrays[label(name)] = a
    if diff == "auto":
        diff = ("denoised", "clean") if {"denoised", "clean"} <= arrays.keys() else None
    if diff and "difference" not in arrays:
        a, b = diff
        arrays["difference"] = arrays[a] - arrays[b]
    if not arrays:
        raise ValueError("figure grid: no images")
    return arrays


def render_grid(arrays: Mapping[str, Any], out) -> None:
    """Write a PNG to ``out``: one row per array, three orthogonal central planes per 3D row
    (gray, shared 0.5-99.5 percentile window; the ``difference`` row in a symmetric RdBu map)."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    plain = [a for k, a in arrays.items() if k != "difference"]
    ref = np.concatenate([a.ravel() for a in plain]) if plain else np.zeros(1)
    vmin, vmax = (float(x) for x in np.percentile(ref, [0.5, 99.5]))
    if vmax <= vmin:
        vmax = vmin + 1.0
    ncol = max(3 if a.ndim == 3 else 1 for a in arrays.values())
    fig = Figure(figsize=(2.4 * ncol, 2.4 * len(arrays)), dpi=100)
    FigureCanvasAgg(fig)
    planes = ("sagittal (I)", "coronal (J)", "axial (K)")
    for r, (label, a) in enumerate(arrays.items()):
        if a.ndim == 3:
            cuts = [a[a.shape[0] // 2, :, :], a[:, a.shape[1] // 2, :], a[:, :, a.shape[2] // 2]]
        else:
            cuts = [a]
        is_diff = label == "difference"
        lim = float(np.percentile(np.abs(a), 99.5)) or 1.0
        for c, sl in enumerate(cuts):
            ax = fig.add_subplot(len(arrays), ncol, r * ncol + c + 1)
            kw = (dict(cmap="RdBu_r", vmin=-lim, vmax=lim) if is_diff
                  else dict(cmap="gray", vmin=vmin, vmax=vmax))
            ax.imshow(sl.T, origin="lower", interpolation="nearest", **kw)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(label if len(cuts) == 1 else f"{label} · {planes[c]}", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, format="png", metadata={"Software": None})
