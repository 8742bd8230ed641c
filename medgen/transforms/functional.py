"""Deterministic degradations: ``fn(img, *, seed, **params) -> (img, geometry | None)``.

Every function takes a channel-first image ``(C, *spatial)`` (2D ``(C, H, W)`` or 3D
``(C, I, J, K)``), numpy or torch (``MetaTensor`` included), and returns the same kind of array, as
float32. All randomness comes from ``seed``, so a call with the same image, parameters and seed
returns a bit-identical result on the same device. ``geometry`` is ``None`` unless the voxel grid
changes; then it is a dict ``{"index_scale": [...], "index_offset": [...]}`` per spatial axis: new
voxel ``m`` lies at old (fractional) index ``m * index_scale + index_offset``
(see :func:`geometry_matrix`).

Where MONAI has a deterministic transform it is used (``GibbsNoise``, ``KSpaceSpikeNoise``,
``Affine``); MONAI's random noise transforms are driven with a fixed per-call seed and a fixed
(already sampled) std so that the parameters are ours to record.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

Geometry = dict[str, list[float]] | None

__all__ = [
    "gaussian_noise", "rician_noise", "ct_lowdose", "kspace_spike", "gibbs", "motion", "ghosting",
    "bias_field", "thick_slice", "kspace_truncation", "geometry_matrix", "apply_geometry",
]


# --- helpers --------------------------------------------------------------------------------------
def _as_tensor(img) -> torch.Tensor:
    """Plain float32 torch view/copy of ``img`` (never modifies the input)."""
    from monai.data import MetaTensor

    if isinstance(img, MetaTensor):
        t = img.as_tensor()
    elif isinstance(img, torch.Tensor):
        t = img
    else:
        t = torch.as_tensor(np.asarray(img))
    return t.to(torch.float32)


def _like(out: torch.Tensor, img, geometry: Geometry = None):
    """Return ``out`` as the same kind of array as ``img``; a MetaTensor keeps (or updates) its affine."""
    from monai.data import MetaTensor

    if isinstance(img, MetaTensor):
        res = MetaTensor(out, meta=dict(img.meta), applied_operations=list(img.applied_operations))
        aff = img.affine
        if geometry is not None and aff is not None:
            m = torch.as_tensor(geometry_matrix(geometry, aff.shape[-1] - 1), dtype=aff.dtype)
            res.affine = aff @ m
        else:
            res.affine = aff.clone()
        return res
    if isinstance(img, torch.Tensor):
        return out.to(img.device)
    return out.cpu().numpy()


def _plain(x) -> torch.Tensor:
    """Output of a MONAI transform as a plain float32 tensor (no MetaTensor tracking)."""
    from monai.utils import convert_to_tensor

    return convert_to_tensor(x, track_meta=False, dtype=torch.float32)


def _spatial(t: torch.Tensor) -> int:
    if t.ndim not in (3, 4):
        raise ValueError(f"expected a channel-first 2D (C,H,W) or 3D (C,I,J,K) image, got {tuple(t.shape)}")
    return t.ndim - 1


def _rng(seed: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(stream)])


def _magnitude_or_real(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Complex image -> magnitude if the input was non-negative (MR magnitude images), else real part."""
    return x.abs() if bool((like >= 0).all()) else x.real


def _axis(axis: int, nsp: int) -> int:
    a = int(axis)
    if a < 0:
        a += nsp
    if not 0 <= a < nsp:
        raise ValueError(f"spatial axis {axis} out of range for {nsp} spatial dims")
    return a


def geometry_matrix(geometry: dict[str, Sequence[float]], ndim: int = 3) -> np.ndarray:
    """``(ndim+1, ndim+1)`` index map ``old_index = M @ new_index`` for a ``geometry`` record.

    ``new_affine = old_affine @ geometry_matrix(geometry)`` fixes a voxel-to-world affine
    (LPS or RAS alike) after a degradation that changed the grid.
    """
    scale = list(geometry["index_scale"]) + [1.0] * (ndim - len(geometry["index_scale"]))
    offset = list(geometry["index_offset"]) + [0.0] * (ndim - len(geometry["index_offset"]))
    m = np.eye(ndim + 1)
    m[:ndim, :ndim] = np.diag(scale[:ndim])
    m[:ndim, ndim] = offset[:ndim]
    return m


def apply_geometry(affine: np.ndarray, geometry: dict[str, Sequence[float]] | None) -> np.ndarray:
    """New 4x4 affine after a grid change; spacing along axis ``a`` grows by ``index_scale[a]``."""
    affine = np.asarray(affine, dtype=np.float64)
    if geometry is None:
        return affine.copy()
    return affine @ geometry_matrix(geometry, affine.shape[0] - 1)


# --- noise ----------------------------------------------------------------------------------------
def gaussian_noise(img, *, seed: int, sigma: float, mean: float = 0.0):
    """Additive white Gaussian noise of standard deviation ``sigma`` (image units).

    Uses MONAI's ``RandGaussianNoise`` with ``sample_std=False`` and its random state set to
    ``seed``: MONAI's own noise, with the std and seed recorded by us.
    """
    from monai.transforms import RandGaussianNoise

    t = _as_tensor(img)
    _spatial(t)
    tr = RandGaussianNoise(prob=1.0, mean=float(mean), std=float(sigma), sample_std=False)
    tr.set_random_state(seed=int(seed) % (2**32))
    out = _plain(tr(t.cpu().numpy()))
    return _like(out.to(t.device), img), None


def rician_noise(img, *, seed: int, sigma: float):
    """Rician noise (MR magnitude): ``sqrt((x + n1)^2 + n2^2)``, ``n1, n2 ~ N(0, sigma^2)``.

    Uses MONAI's ``RandRicianNoise`` with a fixed std and its random state set to ``seed``.
    """
    from monai.transforms import RandRicianNoise

    t = _as_tensor(img)
    _spatial(t)
    tr = RandRicianNoise(prob=1.0, mean=0.0, std=float(sigma), sample_std=False, relative=False)
    tr.set_random_state(seed=int(seed) % (2**32))
    out = _plain(tr(t.cpu().numpy()))
    return _like(out.to(t.device), img), None


MU_WATER_PER_MM = 0.0192  # linear attenuation of water near 70 keV effective energy (1/mm)


def ct_lowdose(img, *, seed: int, dose: float, i0: float = 1.0e5, electronic_sigma: float = 0.0,
               pixel_mm: float = 1.0, n_angles: int = 0, slice_axis: int = -1,
               mode: str = "simulate", projection_scale: int = 1,
               mu_water: float = MU_WATER_PER_MM):
    """Low-dose CT noise simulated in the projection domain (image in HU).

    Per axial slice: HU -> linear attenuation ``mu = mu_water * (1 + HU/1000)``; parallel-beam
    forward projection ``p`` (line integrals, :func:`medgen.transforms.radon.radon`); photon counts
    ``N ~ Poisson(i0 * dose * exp(-p)) + Normal(0, electronic_sigma^2)`` (the Poisson + Gaussian
    model of Zeng et al., IEEE TNS 2015; Yu et al., Med Phys 2012); ``p' = -log(N / (i0 * dose))``;
    filtered back-projection of the projection-domain noise ``p' - p`` (FBP is linear, so this
    equals FBP(p') - FBP(p) and adds no reconstruction blur to the anatomy); back to HU and added
    to the input.

    Parameters
    ----------
    dose : float
        Fraction of the reference dose in (0, 1]; lower dose -> more noise (std ~ 1/sqrt(dose)).
    i0 : float
        Incident photons per detector bin at the reference (full) dose.
    electronic_sigma : float
        Std of additive electronic noise, in photon counts.
    pixel_mm : float
        In-plane pixel size (sets the path lengths; assumed isotropic in-plane).
    n_angles : int
        Projections over 180 degrees; 0 means ``min(720, ceil(pi/2 * D))`` for a padded side ``D``.
    slice_axis : int
        Spatial axis across axial slices (3D only; default the last, K).
    mode : str
        ``"simulate"`` treats the input as noise-free and draws counts as above. ``"insert"``
        treats it as a real scan taken at ``i0`` and adds only the missing noise, Gaussian in the
        projection domain with variance
        ``(1 - a)/a * exp(p)/i0 * (1 + (1 + a)/a * electronic_sigma^2 * exp(p)/i0)`` for dose
        fraction ``a`` (Zeng et al. 2015, eq. for the low-dose noise insertion).
    projection_scale : int
        1 projects at full resolution. ``s > 1`` computes the clean line integrals ``p`` (which only
        set the noise level per ray) on an ``s``-times coarser grid and interpolates them back
        along the detector - about ``s^2`` times cheaper forward projection; the noise itself is
        still back-projected at full resolution.
    """
    from medgen.transforms.radon import default_angles, fbp, radon

    if not 0 < dose <= 1:
        raise ValueError("dose must be in (0, 1]")
    t = _as_tensor(img)
    nsp = _spatial(t)
    dev = t.device
    if nsp == 3:
        ax = _axis(slice_axis, 3) + 1
        moved = torch.movedim(t, ax, 1)  # (C, K, a, b)
        c, k, h, w = moved.shape
        stack = moved.reshape(c * k, h, w)
    else:
        c, h, w = t.shape
        stack = t
    ps = max(1, int(projection_scale))
    d = int(math.ceil((math.ceil(math.hypot(h, w)) + 2) / ps)) * ps  # coarse grid shares the centre
    ph, pw = (d - h) // 2, (d - w) // 2
    mu = torch.clamp(mu_water * (1.0 + stack / 1000.0), min=0.0)
    padded = torch.zeros(stack.shape[0], d, d, device=dev, dtype=torch.float32)
    padded[:, ph:ph + h, pw:pw + w] = mu
    na = int(n_angles) if n_angles else min(720, int(math.ceil(math.pi / 2 * d)))
    angles = default_angles(na, dev)
    if ps == 1:
        p = radon(padded, angles) * float(pixel_mm)  # dimensionless line integrals
    else:
        import torch.nn.functional as F

        coarse = F.avg_pool2d(padded.unsqueeze(1), ps).squeeze(1)
        pc = radon(coarse, angles) * float(pixel_mm * ps)
        p = F.interpolate(pc, size=d, mode="linear", align_corners=False).contiguous()
    rng = _rng(seed)
    p_np = p.cpu().numpy().astype(np.float64)
    a, i0f, se = float(dose), float(i0), float(electronic_sigma)
    if mode == "simulate":
        counts = rng.poisson(i0f * a * np.exp(-p_np)).astype(np.float64)
        if se > 0:
            counts = counts + rng.normal(0.0, se, size=counts.shape)
        counts = np.maximum(counts, 1.0)  # log of a non-positive count: clip as scanners do
        dp_np = -np.log(counts / (i0f * a)) - p_np
    elif mode == "insert":
        ep = np.exp(p_np) / i0f
        var = (1 - a) / a * ep * (1 + (1 + a) / a * se**2 * ep)
        dp_np = rng.normal(0.0, 1.0, size=p_np.shape) * np.sqrt(var)
    else:
        raise ValueError(f"unknown ct_lowdose mode '{mode}' (simulate or insert)")
    dp = torch.as_tensor(dp_np, dtype=torch.float32, device=dev)
    dmu = fbp(dp, angles, region=(ph, ph + h, pw, pw + w)) / float(pixel_mm)  # 1/mm
    dhu = (1000.0 / mu_water) * dmu
    out = stack + dhu
    if nsp == 3:
        out = torch.movedim(out.reshape(c, k, h, w), 1, ax)
    return _like(out.contiguous(), img), None


# --- k-space artefacts ----------------------------------------------------------------------------
def _fft(t: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    return torch.fft.fftshift(torch.fft.fftn(t, dim=dims), dim=dims)


def _ifft(k: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    return torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims)


def kspace_spike(img, *, seed: int, loc: Sequence[int], k_intensity: float):
    """A spike (herringbone artefact) at k-space location ``loc`` (spatial indices of the shifted
    spectrum) with log-magnitude ``k_intensity``; MONAI's deterministic ``KSpaceSpikeNoise``."""
    from monai.transforms import KSpaceSpikeNoise

    t = _as_tensor(img)
    _spatial(t)
    tr = KSpaceSpikeNoise(loc=tuple(int(v) for v in loc), k_intensity=float(k_intensity))
    out = _plain(tr(t.cpu()))
    return _like(out.to(t.device).contiguous(), img), None


def gibbs(img, *, seed: int, alpha: float):
    """Gibbs ringing: MONAI's deterministic ``GibbsNoise`` (k-space ball filter, ``alpha`` in [0, 1];
    larger alpha keeps less of k-space)."""
    from monai.transforms import GibbsNoise

    t = _as_tensor(img)
    _spatial(t)
    out = _plain(GibbsNoise(alpha=float(alpha))(t.cpu()))
    return _like(out.to(t.device).contiguous(), img), None


def motion(img, *, seed: int, times: Sequence[float], rotations: Sequence[Sequence[float]],
           translations: Sequence[Sequence[float]], pe_axis: int = 0):
    """Rigid motion during acquisition, simulated line by line in k-space.

    The phase-encode lines (along spatial axis ``pe_axis``, acquired in linear order) are split at
    fractions ``times`` (sorted, in (0, 1)) into ``len(times) + 1`` segments. Segment 0 sees the
    object at rest; segment ``s >= 1`` sees it rotated by ``rotations[s-1]`` (degrees, one angle in
    2D or three in 3D, about the image centre, MONAI ``Affine``) and shifted by
    ``translations[s-1]`` voxels, applied exactly as a linear phase ramp ``exp(-2 pi i k.d)``.
    MONAI has no motion transform; this follows TorchIO's ``RandomMotion`` (Shaw et al., MIDL 2019).
    """
    from monai.transforms import Affine

    t = _as_tensor(img)
    nsp = _spatial(t)
    dims = tuple(range(1, nsp + 1))
    pe = _axis(pe_axis, nsp)
    n_pe = t.shape[pe + 1]
    bounds = [0] + [int(round(float(x) * n_pe)) for x in times] + [n_pe]
    k = _fft(t.to(torch.complex64), dims)
    freqs = [torch.fft.fftshift(torch.fft.fftfreq(n, device=t.device)) for n in t.shape[1:]]
    for s in range(1, len(bounds) - 1):
        lo, hi = bounds[s], bounds[s + 1]
        if hi <= lo:
            continue
        rot = [math.radians(float(a)) for a in rotations[s - 1]]
        moved = t
        if any(abs(a) > 0 for a in rot):
            aff = Affine(rotate_params=rot[0] if nsp == 2 else rot, padding_mode="zeros",
                         mode="bilinear", image_only=True)
            moved = _plain(aff(t.cpu())).to(t.device)
        ks = _fft(moved.to(torch.complex64), dims)
        phase = torch.zeros(t.shape[1:], device=t.device)
        for a, dv in enumerate(translations[s - 1]):
            shape = [1] * nsp
            shape[a] = -1
            phase = phase + freqs[a].reshape(shape) * float(dv)
        ks = ks * torch.exp(-2j * math.pi * phase)
        sl = [slice(None)] * (nsp + 1)
        sl[pe + 1] = slice(lo, hi)
        k[tuple(sl)] = ks[tuple(sl)]
    out = _magnitude_or_real(_ifft(k, dims), t)
    return _like(out.to(torch.float32).contiguous(), img), None


def ghosting(img, *, seed: int, num_ghosts: int, intensity: float, pe_axis: int = 0,
             restore: float = 0.02):
    """N/2-type ghosting: every ``num_ghosts``-th phase-encode line (along ``pe_axis``) of k-space is
    scaled by ``1 - intensity``, except a central band (fraction ``restore`` of the lines) that is
    left intact. Ghost copies appear shifted by ``FOV / num_ghosts``. MONAI has no ghosting
    transform; this follows TorchIO's ``RandomGhosting``."""
    t = _as_tensor(img)
    nsp = _spatial(t)
    dims = tuple(range(1, nsp + 1))
    pe = _axis(pe_axis, nsp)
    n = t.shape[pe + 1]
    k = _fft(t.to(torch.complex64), dims)
    w = torch.ones(n, device=t.device)
    w[:: max(1, int(num_ghosts))] = 1.0 - float(intensity)
    c, half = n // 2, int(round(float(restore) * n / 2))
    w[max(0, c - half): c + half + 1] = 1.0
    shape = [1] * (nsp + 1)
    shape[pe + 1] = n
    out = _magnitude_or_real(_ifft(k * w.reshape(shape), dims), t)
    return _like(out.to(torch.float32).contiguous(), img), None


def kspace_truncation(img, *, seed: int, factor: float, axes: Sequence[int] | None = None,
                      mode: str = "zerofill"):
    """In-plane resolution loss by keeping the central ``1/factor`` of k-space along ``axes``.

    ``mode="zerofill"`` keeps the grid (zero-filled interpolation, as scanners do); ``"crop"``
    returns the smaller matrix (spacing grows by ``n_old / n_new`` along those axes, reported in the
    geometry record). ``axes`` default: the first two spatial axes (in-plane of a 3D volume).
    """
    t = _as_tensor(img)
    nsp = _spatial(t)
    axes = [0, 1] if axes is None else [_axis(a, nsp) for a in axes]
    dims = tuple(a + 1 for a in axes)
    k = _fft(t.to(torch.complex64), dims)
    scale = [1.0] * nsp
    sl = [slice(None)] * (nsp + 1)
    for a in axes:
        n = t.shape[a + 1]
        keep = max(1, int(round(n / float(factor))))
        start = n // 2 - keep // 2
        sl[a + 1] = slice(start, start + keep)
        scale[a] = n / keep
    if mode == "zerofill":
        mask = torch.zeros_like(k)
        mask[tuple(sl)] = 1
        out = _ifft(k * mask, dims)
        geometry = None
    elif mode == "crop":
        small = k[tuple(sl)]
        out = _ifft(small, dims) * (small[0].numel() / k[0].numel())
        geometry = {"index_scale": scale, "index_offset": [0.0] * nsp}
    else:
        raise ValueError(f"unknown mode '{mode}' (zerofill or crop)")
    out = _magnitude_or_real(out, t)
    return _like(out.to(torch.float32).contiguous(), img, geometry), geometry


# --- intensity non-uniformity ---------------------------------------------------------------------
def bias_field_terms(nsp: int, degree: int) -> list[tuple[int, ...]]:
    """Legendre index tuples with total degree <= ``degree`` (the order of ``coeffs``)."""
    import itertools

    return [p for p in itertools.product(range(degree + 1), repeat=nsp) if sum(p) <= degree]


def bias_field(img, *, seed: int, degree: int, coeffs: Sequence[float]):
    """Smooth multiplicative field ``exp(sum_c coeff_c * prod_a P_{n_a}(x_a))`` with Legendre
    polynomials on [-1, 1]^n, the formulation of MONAI's ``RandBiasField`` (which has no
    deterministic counterpart and does not expose its sampled coefficients, hence this copy)."""
    from numpy.polynomial.legendre import legval

    t = _as_tensor(img)
    nsp = _spatial(t)
    terms = bias_field_terms(nsp, int(degree))
    if len(coeffs) != len(terms):
        raise ValueError(f"bias field of degree {degree} in {nsp}D needs {len(terms)} coefficients")
    # 1D Legendre values per axis, then one broadcast product per term (separable, cheap)
    shape = t.shape[1:]
    polys = []
    for a, n in enumerate(shape):
        x = np.linspace(-1, 1, n)
        vals = []
        for order in range(int(degree) + 1):
            e = np.zeros(order + 1)
            e[order] = 1
            v = np.asarray(legval(x, e), dtype=np.float64)
            bshape = [1] * nsp
            bshape[a] = n
            vals.append(v.reshape(bshape))
        polys.append(vals)
    field = np.zeros(shape, dtype=np.float64)
    for c, p in zip(coeffs, terms, strict=True):
        term = float(c)
        for a, order in enumerate(p):
            term = term * polys[a][order]
        field = field + term
    mult = torch.as_tensor(np.exp(field), dtype=torch.float32, device=t.device)
    return _like((t * mult).contiguous(), img), None


# --- slice thickness ------------------------------------------------------------------------------
def _profile_weights(n: int, centres: np.ndarray, factor: float, profile: str) -> np.ndarray:
    """``(len(centres), n)`` weights: row ``m`` is the slice profile centred at ``centres[m]``
    integrated over each old voxel ``[i - 1/2, i + 1/2]``; profile mass beyond the volume goes to
    the edge slices (replicate padding), so every row sums to 1 and constants stay constant."""
    if profile == "gaussian":
        from scipy.special import erf

        s = factor / (2 * math.sqrt(2 * math.log(2))) * math.sqrt(2)  # FWHM = factor voxels

        def cdf(x):
            return 0.5 * (1 + erf(x / s))
    elif profile == "rect":
        def cdf(x):
            return np.clip((x + factor / 2) / factor, 0.0, 1.0)
    else:
        raise ValueError(f"unknown slice profile '{profile}' (gaussian or rect)")
    edges = np.arange(n + 1, dtype=np.float64)[None, :] - 0.5 - centres[:, None]
    c = cdf(edges)
    c[:, 0] = 0.0  # replicate padding: everything left of the volume belongs to slice 0
    c[:, -1] = 1.0  # ... and everything right of it to slice n - 1
    return np.diff(c, axis=1)


def _interp_axis(x: torch.Tensor, axis: int, pos: np.ndarray) -> torch.Tensor:
    """Linear interpolation of ``x`` along ``axis`` at fractional indices ``pos`` (clamped)."""
    n = x.shape[axis]
    pos = np.clip(pos, 0, n - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n - 1)
    w = torch.as_tensor(pos - i0, dtype=torch.float32, device=x.device)
    a = torch.index_select(x, axis, torch.as_tensor(i0, device=x.device))
    b = torch.index_select(x, axis, torch.as_tensor(i1, device=x.device))
    shape = [1] * x.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    return a * (1 - w) + b * w


def thick_slice(img, *, seed: int, factor: float, axis: int = -1, profile: str = "gaussian",
                resample: str = "thick"):
    """Simulate thick slices along one spatial ``axis``.

    Thick slice ``m`` is centred at old index ``c_m = m * factor + (factor - 1) / 2``
    (``floor(n / factor)`` slices) and is the average of the thin slices weighted by the slice
    profile - Gaussian or rectangular with FWHM = ``factor`` voxels (= the thick spacing) -
    integrated over each thin voxel. A rectangular profile with an integer factor is exactly the
    mean of ``factor`` adjacent slices. With ``resample="original"`` the thick slices are brought
    back to the original grid by linear interpolation (same shape, blurred along ``axis`` only).

    Returns the image and, for ``resample="thick"``, the geometry record (spacing along ``axis``
    multiplied by ``factor``, origin moved to ``c_0``) so callers can fix the affine
    (:func:`apply_geometry`; a MetaTensor's affine is updated here).
    """
    t = _as_tensor(img)
    nsp = _spatial(t)
    a = _axis(axis, nsp)
    f = float(factor)
    if f < 1:
        raise ValueError("thick-slice factor must be >= 1")
    moved = torch.movedim(t, a + 1, -1)
    n = moved.shape[-1]
    m = max(1, int(math.floor(n / f)))
    centres = np.arange(m, dtype=np.float64) * f + (f - 1) / 2
    w = torch.as_tensor(_profile_weights(n, centres, f, profile), dtype=torch.float32,
                        device=t.device)
    thick = torch.matmul(moved, w.T)  # (..., m)
    if resample == "thick":
        out = torch.movedim(thick, -1, a + 1)
        scale = [1.0] * nsp
        offset = [0.0] * nsp
        scale[a], offset[a] = f, (f - 1) / 2
        geometry = {"index_scale": scale, "index_offset": offset}
    elif resample == "original":
        pos = (np.arange(n, dtype=np.float64) - (f - 1) / 2) / f  # thick index of thin slice i
        out = torch.movedim(_interp_axis(thick, -1, pos), -1, a + 1)
        geometry = None
    else:
        raise ValueError(f"unknown resample '{resample}' (thick or original)")
    return _like(out.contiguous(), img, geometry), geometry


def call(fn, img, seed: int, params: dict[str, Any]):
    """Apply a functional degradation with keyword parameters."""
    return fn(img, seed=int(seed), **params)
