"""Training data: volumes from a manifest split, cached once, patches drawn per *step*.

Randomness is indexed by the training step: the patches, degradations and any torch randomness of
step ``s`` are a pure function of ``(seed, s)``. A run resumed from a checkpoint at step ``s``
therefore sees exactly the batches an uninterrupted run would have seen - no data-loader or RNG
state needs to be saved - and the deterministic mode gives bit-identical weights.

Volumes are read with medgen's own readers (DICOM geometry rules, rescale) into channel-first
MONAI MetaTensors, normalised with the configured intensity mapping (recorded per volume), and
cached with MONAI's ``CacheDataset`` (memory) or ``PersistentDataset`` (disk).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from monai.transforms import Transform

from medgen.manifest import Manifest, Record
from medgen.train.config import TrainConfig

log = logging.getLogger("medgen.train")


def step_seed(seed: int, step: int, stream: str = "") -> int:
    """A 31-bit seed for (seed, step, stream): independent streams, same value on every machine."""
    h = hashlib.sha256(f"{seed}:{step}:{stream}".encode()).digest()
    return int.from_bytes(h[:4], "big") & 0x7FFFFFFF


class LoadRecordd(Transform):
    """MONAI dict transform: ``{"record": id}`` -> ``{"image": MetaTensor (1, I, J, K)}``.

    It must subclass MONAI's ``Transform``: ``CacheDataset``/``PersistentDataset`` cache only the
    transforms before the first one that is random *or not a MONAI Transform*; a plain class here
    made the cache hold nothing, so every sample re-read (and re-gunzipped) its file.
    """

    def __init__(self, manifest: Manifest, allow_uneven: bool = False, label_key: str | None = None):
        self.manifest = manifest
        self.by_id = {r.id: r for r in manifest.records}
        self.allow_uneven = allow_uneven
        self.label_key = label_key  # labels[label_key]: a label map path relative to the root

    def __call__(self, data: dict) -> dict:
        rec = self.by_id[data["record"]]
        vol = self.manifest.read(rec, allow_uneven=self.allow_uneven)
        mt = vol.to_metatensor()
        out = {**data, "image": mt.float(), "labels": dict(rec.labels)}
        if self.label_key and rec.labels.get(self.label_key):
            from medgen.errors import ReadError
            from medgen.io import read_volume

            lab = read_volume(Path(self.manifest.root) / str(rec.labels[self.label_key]),
                              root=self.manifest.root)
            if tuple(lab.shape) != tuple(vol.shape):
                raise ReadError(rec.id, f"label map shape {tuple(lab.shape)} != image shape "
                                f"{tuple(vol.shape)}")
            out["label"] = torch.as_tensor(np.rint(lab.array).astype(np.int64))[None]
        return out


def intensity_transform(cfg: TrainConfig):
    from medgen.transforms import NormalizeIntensityd

    n = cfg.intensity
    kwargs = {k: v for k, v in n.model_dump().items() if v is not None}
    return NormalizeIntensityd(keys=["image"], **kwargs)


def volume_dataset(cfg: TrainConfig, manifest: Manifest, records: list[Record]):
    """Cached, normalised volumes (deterministic part of the pipeline)."""
    from monai.data import CacheDataset, Dataset, PersistentDataset
    from monai.transforms import Compose

    label_key = cfg.task.data_label_key()
    tf = Compose([LoadRecordd(manifest, cfg.data.allow_uneven, label_key), intensity_transform(cfg)])
    items = [{"record": r.id} for r in records]
    if cfg.data.cache == "memory":
        # copy_cache=False: no deep copy of a whole volume per sample; readers of the cache
        # (PatchSampler crops, validation) copy what they change
        return CacheDataset(items, tf, cache_rate=1.0, num_workers=0, progress=False,
                            copy_cache=False)
    if cfg.data.cache == "disk":
        cache_dir = Path(cfg.data.cache_dir or Path(cfg.output_dir) / "cache")
        cache_dir.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, tf, cache_dir=cache_dir)
    return Dataset(items, tf)


class PatchSampler:
    """Draws the batch of a given step: random volumes, random patches, random degradation."""

    def __init__(self, cfg: TrainConfig, dataset):
        from medgen.transforms import load_preset

        self.cfg = cfg
        self.ds = dataset
        self.n = len(dataset)
        if self.n == 0:
            from medgen.errors import ConfigError

            raise ConfigError("data", f"no volumes in split '{cfg.data.train_split}'")
        self.dims = cfg.model.spatial_dims
        self.patch = list(cfg.data.patch_size)
        self.preset = cfg.task.degradation
        self._degrade = load_preset(self.preset, keys="noisy", source_key="image") if self.preset else None
        # presets in HU (CT dose simulation): degrade in physical units, then normalise again
        self._physical = bool(self._degrade is not None and self._degrade.preset.units == "HU")
        self._fg_cache: dict[int, np.ndarray] = {}  # dataset index -> foreground voxel indices

    def _apply(self, img: torch.Tensor, norm: dict | None, seed: int) -> tuple[torch.Tensor, list]:
        from medgen.transforms import denormalize, normalize

        self._degrade.set_random_state(seed=seed)
        x = denormalize(img, norm) if (self._physical and norm) else img
        s = self._degrade({"image": x})
        out = torch.as_tensor(s["noisy"]).float()
        out = out.as_tensor() if hasattr(out, "as_tensor") else out
        if self._physical and norm:
            out = torch.as_tensor(normalize(out, norm)).float()
        return out, s.get("degradations", [])

    def _foreground(self, img: torch.Tensor, key: int) -> np.ndarray:
        """Up to 65,536 foreground voxel indices (I, J, K) of dataset volume ``key`` (a
        (C, I, J, K) tensor), computed once. Foreground: channel 0 above 10% of its 0.5-99.5
        percentile range - air and zero padding are not. Empty if nothing qualifies."""
        cache = self._fg_cache
        if key not in cache:
            x = img[0].numpy() if isinstance(img, torch.Tensor) else np.asarray(img[0])
            sub = x[::4, ::4, ::4]
            lo, hi = np.percentile(sub, [0.5, 99.5]) if sub.size else (0.0, 0.0)
            idx = np.argwhere(x > lo + 0.1 * (hi - lo)) if hi > lo else np.zeros((0, 3), int)
            if len(idx) > 65536:  # a fixed, even thinning keeps memory small and the draw exact
                idx = idx[:: len(idx) // 65536 + 1]
            cache[key] = idx
        return cache[key]

    def _crop(self, img: torch.Tensor, rng: np.random.Generator,
              key: int | None = None) -> tuple[torch.Tensor, list[int]]:
        """A random patch (C, *patch) from a (C, I, J, K) volume; 2D models get one slice.

        With probability ``data.foreground_fraction`` the patch is centred on a random foreground
        voxel (clipped to the volume), else placed uniformly: volumes that are mostly air otherwise
        spend most steps on background. ``key`` (the dataset index) names the volume for the
        foreground cache; without it every patch is uniform."""
        spatial = list(img.shape[1:])
        centre = None
        frac = float(self.cfg.data.foreground_fraction) if key is not None else 0.0
        if frac > 0 and rng.random() < frac:
            fg = self._foreground(img, key)
            if len(fg):
                centre = [int(c) for c in fg[int(rng.integers(0, len(fg)))]]
        if self.dims == 2:
            k = centre[2] if centre is not None else int(rng.integers(0, spatial[2]))
            img = img[..., k]
            spatial = spatial[:2]
            centre = centre[:2] if centre is not None else None
        need = [max(p, s) for p, s in zip(self.patch, spatial)]
        if need != spatial:  # pad small volumes (edge) to at least the patch size
            pad = []
            for p, s in reversed(list(zip(need, spatial))):
                pad += [0, p - s]
            img = torch.nn.functional.pad(img[None], pad, mode="replicate")[0]
            spatial = need
        if centre is not None:
            start = [min(max(c - p // 2, 0), s - p) for c, s, p in zip(centre, spatial, self.patch)]
        else:
            start = [int(rng.integers(0, s - p + 1)) for s, p in zip(spatial, self.patch)]
        sl = (slice(None),) + tuple(slice(a, a + p) for a, p in zip(start, self.patch))
        return img[sl].clone(), start  # a copy: the cached volume is shared (copy_cache=False)

    def batch(self, step: int) -> dict:
        rng = np.random.default_rng(step_seed(self.cfg.seed, step, "patches"))
        clean, noisy, records = [], [], []
        for b in range(self.cfg.data.batch_size):
            idx = int(rng.integers(0, self.n))
            item = self.ds[idx]
            img = torch.as_tensor(item["image"]).float()
            patch, start = self._crop(img.as_tensor() if hasattr(img, "as_tensor") else img, rng,
                                      key=idx)
            if self._degrade is not None:
                n, recs = self._apply(patch, item.get("normalization"),
                                      step_seed(self.cfg.seed, step, f"degrade{b}"))
                records.append(recs)
            else:
                n = patch.clone()
                records.append([])
            clean.append(patch)
            noisy.append(n.as_tensor() if hasattr(n, "as_tensor") else n)
        return {"clean": torch.stack(clean), "noisy": torch.stack(noisy), "degradations": records}

    def degrade_volume(self, img: torch.Tensor, index: int, norm: dict | None = None) -> torch.Tensor:
        """The fixed validation degradation of volume ``index`` (same for every validation)."""
        if self._degrade is None:
            return img.clone()
        return self._apply(img, norm, step_seed(self.cfg.seed, index, "val"))[0]
