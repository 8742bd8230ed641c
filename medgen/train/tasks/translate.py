"""Image-to-image translation training (``task: translate``): Pix2Pix (paired) and CycleGAN
(unpaired, or paired as an extra L1 term).

Data (see :class:`medgen.models.translate.config.TranslateTrainConfig`): domain A comes from the
trainer (``data.manifest`` split, normalised with ``intensity``); domain B from
``translate.target_manifest``, normalised with ``model.intensity_b`` (or ``intensity``). Paired
records are matched by ``translate.pair_by`` and must share the voxel grid (rigidly registered and
resampled onto one grid; checked here, shape and affine within ``pair_tolerance_mm``). A paired
batch cuts the same patch from both volumes; an unpaired batch draws A and B independently.

Losses (per step, after ``translate.warmup_steps`` the adversarial terms join):

* pix2pix: ``l1_weight * |G(a) - b| + adv_weight * adv(D([a, G(a)]))`` - a conditional PatchGAN;
* cyclegan: ``adv_weight * (adv(D_B(G(a))) + adv(D_A(F(b)))) + cycle_weight * (|F(G(a)) - a| +
  |G(F(b)) - b|) + identity_weight * (|G(b) - b| + |F(a) - a|)`` (+ paired L1 when paired).

Discriminators are stepped after the generators on fakes from an image pool (saved with the
resume state, so a resumed run continues bit-identically). Validation translates whole validation
volumes (sliding window): PSNR/SSIM/MAE against the real target when paired (and the identity
baseline), the cycle L1 for CycleGAN, and the mode-collapse check (outputs' diversity vs the real
target domain's, :func:`medgen.models.translate.nets.collapse_check`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from medgen.errors import ConfigError
from medgen.train.data import PatchSampler, step_seed, volume_dataset
from medgen.train.tasks.base import TrainTask
from medgen.train.validation import psnr_ssim, sliding_predict

log = logging.getLogger("medgen.train")


def _plain(t) -> torch.Tensor:
    t = torch.as_tensor(t)
    return (t.as_tensor() if hasattr(t, "as_tensor") else t).float()


def pair_value(record, pair_by: str):
    """The value a record is paired by (``subject``, ``labels.<key>`` or ``extra.<key>``)."""
    if pair_by == "subject":
        return record.subject
    where, key = pair_by.split(".", 1)
    return (record.labels if where == "labels" else record.extra).get(key)


def pair_records(a_records, b_records, pair_by: str) -> list:
    """Domain-B record for every domain-A record, matched by :func:`pair_value`.

    Raises
    ------
    ConfigError
        A domain-A record without a partner or with an ambiguous one (names record ids only).
    """
    index: dict = {}
    for r in b_records:
        v = pair_value(r, pair_by)
        if v is None:
            continue
        index.setdefault(str(v), []).append(r)
    out = []
    for r in a_records:
        v = pair_value(r, pair_by)
        got = index.get(str(v), []) if v is not None else []
        if len(got) != 1:
            why = "no" if not got else f"{len(got)}"
            raise ConfigError("task.target_manifest",
                              f"record {r.id}: {why} domain-B partner(s) with the same {pair_by}")
        out.append(got[0])
    return out


def check_pair_geometry(a, b, tol_mm: float, where: str) -> None:
    """Raise ``ConfigError`` unless two (C, I, J, K) MetaTensors share shape and affine."""
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise ConfigError(where, f"pair shapes differ {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}; "
                          "pairs must be registered and resampled onto the same grid")
    aa = np.asarray(torch.as_tensor(a.affine), dtype=np.float64)
    ab = np.asarray(torch.as_tensor(b.affine), dtype=np.float64)
    err = float(np.max(np.abs(aa - ab)))
    if err > tol_mm:
        raise ConfigError(where, f"pair affines differ by up to {err:.4g} mm (> {tol_mm} mm); pairs "
                          "must be rigidly registered and resampled onto the same grid")


class _Cropper:
    """Borrows :meth:`PatchSampler._crop` (random patch, 2D models one slice) without the
    degradation machinery, which translation does not use."""

    _crop = PatchSampler._crop

    def __init__(self, cfg):
        self.dims = cfg.model.spatial_dims
        self.patch = list(cfg.data.patch_size)


class TranslateSampler:
    """The batch of a given step (a pure function of ``(seed, step)``): ``{"a", "b"}`` patches."""

    def __init__(self, cfg, ds_a, ds_b, paired: bool):
        self.cfg = cfg
        self.ds_a, self.ds_b = ds_a, ds_b
        self.paired = paired
        if len(ds_a) == 0 or len(ds_b) == 0:
            raise ConfigError("data", "no volumes in a training split of domain A or B")
        self.crop = _Cropper(cfg)

    def batch(self, step: int) -> dict:
        rng = np.random.default_rng(step_seed(self.cfg.seed, step, "patches"))
        a_list, b_list = [], []
        for _ in range(self.cfg.data.batch_size):
            i = int(rng.integers(0, len(self.ds_a)))
            a = _plain(self.ds_a[i]["image"])
            if self.paired:
                both, _ = self.crop._crop(torch.cat([a, _plain(self.ds_b[i]["image"])], 0), rng)
                ca = a.shape[0]
                pa, pb = both[:ca], both[ca:]
            else:
                pa, _ = self.crop._crop(a, rng)
                j = int(rng.integers(0, len(self.ds_b)))
                pb, _ = self.crop._crop(_plain(self.ds_b[j]["image"]), rng)
            a_list.append(pa.contiguous())
            b_list.append(pb.contiguous())
        return {"a": torch.stack(a_list), "b": torch.stack(b_list)}


class TranslateTask(TrainTask):
    card_task = "translate"
    val_metric = "val/score"

    # -- set-up -------------------------------------------------------------------------------
    def build(self) -> None:
        from medgen.manifest import Manifest
        from medgen.models import build_model
        from medgen.models.translate.nets import GANCriterion, ImagePool, build_discriminator

        cfg = self.cfg
        tr = cfg.task
        self.tr = tr
        self.cycle = cfg.model.name == "cyclegan"
        self.model = build_model(cfg.model).to(self.device)
        self.optimizers["model"] = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr,
                                                    betas=(0.5, 0.999),
                                                    weight_decay=cfg.optim.weight_decay)
        self.schedulers["model"] = self.trainer.make_scheduler(self.optimizers["model"])
        dims, cin, cout = cfg.model.spatial_dims, cfg.model.in_channels, cfg.model.out_channels
        self.discs: dict[str, torch.nn.Module] = {}
        if tr.adv_weight > 0:
            if self.cycle:
                self.discs = {"disc_b": build_discriminator(tr.discriminator, dims, cout),
                              "disc_a": build_discriminator(tr.discriminator, dims, cin)}
            else:  # conditional PatchGAN on [input, output]
                self.discs = {"disc_b": build_discriminator(tr.discriminator, dims, cin + cout)}
            for d in self.discs.values():
                d.to(self.device)
            params = [p for d in self.discs.values() for p in d.parameters()]
            self.optimizers["discriminator"] = torch.optim.Adam(params, lr=tr.d_lr or cfg.optim.lr,
                                                                betas=(0.5, 0.999))
            self.schedulers["discriminator"] = self.trainer.make_scheduler(
                self.optimizers["discriminator"])
        self.crit = GANCriterion(tr.adv_criterion, tr.label_smoothing)
        self.pools = {"a": ImagePool(tr.pool_size), "b": ImagePool(tr.pool_size)}
        # domain B
        self.b_manifest = Manifest.load(tr.target_manifest, tr.target_root)
        self.cfg_b = cfg.model_copy(update={"intensity": cfg.model.intensity_b or cfg.intensity})
        b_train_split = tr.target_split or cfg.data.train_split
        b_val_split = tr.target_val_split or cfg.data.val_split
        if tr.paired:
            self.b_train = pair_records(self.trainer.train_records, list(self.b_manifest), tr.pair_by)
            self.b_val = pair_records(self.trainer.val_records, list(self.b_manifest), tr.pair_by)
        else:
            self.b_train = (self.b_manifest.split(b_train_split) if b_train_split
                            else list(self.b_manifest))
            self.b_val = self.b_manifest.split(b_val_split) if b_val_split else []
            if cfg.val.max_volumes:
                self.b_val = self.b_val[: cfg.val.max_volumes]
        self._ds_b_val = None

    def extra_modules(self):
        return dict(self.discs)

    def _dataset_b(self, records):
        return volume_dataset(self.cfg_b, self.b_manifest, records)

    def _check_pairs(self, ds_a, ds_b, a_records) -> None:
        for i, rec in enumerate(a_records):
            check_pair_geometry(ds_a[i]["image"], ds_b[i]["image"], self.tr.pair_tolerance_mm,
                                f"record {rec.id}")

    def sampler(self, dataset):
        ds_b = self._dataset_b(self.b_train)
        if self.tr.paired:
            self._check_pairs(dataset, ds_b, self.trainer.train_records)
        return TranslateSampler(self.cfg, dataset, ds_b, self.tr.paired)

    # -- one step -----------------------------------------------------------------------------
    def adversarial(self, step: int) -> bool:
        return bool(self.discs) and step >= self.tr.warmup_steps

    def _set_disc_grad(self, flag: bool) -> None:
        for d in self.discs.values():
            for p in d.parameters():
                p.requires_grad_(flag)

    def train_step(self, batch: dict, step: int) -> dict[str, float]:
        cfg, tr = self.cfg, self.tr
        a = batch["a"].to(self.device)
        b = batch["b"].to(self.device)
        self.model.train()
        adv_on = self.adversarial(step)
        parts: dict[str, float] = {"adversarial": float(adv_on)}
        if adv_on:
            self._set_disc_grad(False)
        g_ab = self.model.g_ab
        with self.autocast():
            fake_b = g_ab(a).float()
            loss = torch.zeros((), device=self.device)
            if self.cycle:
                g_ba = self.model.g_ba
                fake_a = g_ba(b).float()
                rec_a, rec_b = g_ba(fake_b).float(), g_ab(fake_a).float()
                cyc = F.l1_loss(rec_a, a) + F.l1_loss(rec_b, b)
                loss = loss + tr.cycle_weight * cyc
                parts["cycle"] = float(cyc.detach())
                if tr.identity_weight > 0:
                    idt = F.l1_loss(g_ab(b).float(), b) + F.l1_loss(g_ba(a).float(), a)
                    loss = loss + tr.identity_weight * idt
                    parts["identity"] = float(idt.detach())
                if tr.paired and tr.l1_weight > 0:
                    l1 = F.l1_loss(fake_b, b) + F.l1_loss(fake_a, a)
                    loss = loss + tr.l1_weight * l1
                    parts["l1"] = float(l1.detach())
                if adv_on:
                    adv = (self.crit.generator(self.discs["disc_b"], fake_b)
                           + self.crit.generator(self.discs["disc_a"], fake_a))
                    loss = loss + tr.adv_weight * adv
                    parts["adv_g"] = float(adv.detach())
            else:
                l1 = F.l1_loss(fake_b, b)
                loss = loss + tr.l1_weight * l1
                parts["l1"] = float(l1.detach())
                if adv_on:
                    adv = self.crit.generator(self.discs["disc_b"], torch.cat([a, fake_b], 1))
                    loss = loss + tr.adv_weight * adv
                    parts["adv_g"] = float(adv.detach())
        gn = self.step_optimizer("model", loss, self.model.parameters(), cfg.optim.grad_clip)
        if gn is not None:
            parts["grad_norm"] = gn
        if adv_on:
            self._set_disc_grad(True)
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, step, "pool"))
            with self.autocast():
                if self.cycle:
                    pb = self.pools["b"].query(fake_b.detach().cpu(), gen).to(self.device)
                    pa = self.pools["a"].query(fake_a.detach().cpu(), gen).to(self.device)
                    d_loss = (self.crit.discriminator(self.discs["disc_b"], pb, b)
                              + self.crit.discriminator(self.discs["disc_a"], pa, a))
                else:
                    fake_pair = torch.cat([a, fake_b.detach()], 1)
                    pf = self.pools["b"].query(fake_pair.cpu(), gen).to(self.device)
                    d_loss = self.crit.discriminator(self.discs["disc_b"], pf, torch.cat([a, b], 1))
            params = [p for d in self.discs.values() for p in d.parameters()]
            self.step_optimizer("discriminator", d_loss, params, None)
            parts["d_loss"] = float(d_loss.detach())
        parts["loss"] = float(loss.detach())
        parts["lr"] = float(self.schedulers["model"].get_last_lr()[0])
        return parts

    # -- validation -----------------------------------------------------------------------------
    def translate_volume(self, gen: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(C, I, J, K)`` normalised -> translated (sliding window; 2D models slice by slice)."""
        return translate_volume(gen, x, self.cfg.model.spatial_dims, list(self.cfg.data.patch_size),
                                sw_batch_size=self.cfg.val.sw_batch_size,
                                overlap=self.cfg.val.overlap, device=self.device, amp=self.amp)

    @torch.no_grad()
    def validate(self, val_ds, sampler, run, step: int) -> dict[str, float]:
        from medgen.models.translate.nets import collapse_check
        from medgen.train.validation import volume_for_grid

        tr = self.tr
        if self._ds_b_val is None:
            self._ds_b_val = self._dataset_b(self.b_val) if self.b_val else []
            if tr.paired and self.b_val:
                self._check_pairs(val_ds, self._ds_b_val, self.trainer.val_records)
        ds_b = self._ds_b_val
        self.model.eval()
        outputs, targets, rows, cyc, grid = [], [], [], [], None
        for i in range(len(val_ds)):
            a = _plain(val_ds[i]["image"])
            fake = self.translate_volume(self.model.g_ab, a)
            outputs.append(fake)
            if self.cycle:
                rec = self.translate_volume(self.model.g_ba, fake)
                cyc.append(float((rec - a).abs().mean()))
            if tr.paired and len(ds_b):
                b = _plain(ds_b[i]["image"])
                rows.append((*psnr_ssim(fake[None], b[None], 3), float((fake - b).abs().mean()),
                             *psnr_ssim(a[None], b[None], 3)))
                if grid is None and self.cfg.val.images and run is not None:
                    grid = {"input": volume_for_grid(a[None], 3), "output": volume_for_grid(fake[None], 3),
                            "target": volume_for_grid(b[None], 3),
                            "difference": volume_for_grid((fake - b)[None], 3)}
        for j in range(len(ds_b)):
            targets.append(_plain(ds_b[j]["image"]))
        m: dict[str, float] = {}
        if rows:
            arr = np.array(rows)
            m.update({"val/psnr": float(arr[:, 0].mean()), "val/ssim": float(arr[:, 1].mean()),
                      "val/mae": float(arr[:, 2].mean()), "val/psnr_identity": float(arr[:, 3].mean()),
                      "val/ssim_identity": float(arr[:, 4].mean())})
        if cyc:
            m["val/cycle_l1"] = float(np.mean(cyc))
        m["val/score"] = m["val/psnr"] if "val/psnr" in m else -m.get("val/cycle_l1", 0.0)
        m.update(collapse_check(outputs, targets, tr.collapse_threshold))
        if m["val/mode_collapse"]:
            log.warning("step %d: possible mode collapse - outputs' diversity is %.3g of the target "
                        "domain's (threshold %.3g)", step, m["val/collapse_ratio"], tr.collapse_threshold)
        if grid is not None:
            run.log_figure_grid(grid, name="val", step=step)
        return m

    # -- card / state ---------------------------------------------------------------------------
    def input_manifests(self):
        """Domain B's manifest is an input too: recorded, sealed and re-hashed by the audit."""
        return {"target": (self.b_manifest, "task.target_manifest", "task.target_root")}

    def card_fields(self):
        tr = self.tr
        lineage = {"translate_paired": str(tr.paired).lower(),
                   "translate_target_manifest_sha256": self.b_manifest.digest,
                   "translate_adv_criterion": tr.adv_criterion,
                   "translate_spectral_norm": str(tr.discriminator.spectral_norm).lower(),
                   "translate_adversarial": "on" if self.discs else "off"}
        if tr.paired:
            lineage["translate_pair_by"] = tr.pair_by.replace("labels.", "labels-").replace("extra.", "extra-")
        return {"lineage": lineage}

    def extra_state(self):
        return {"pools": {k: list(p.images) for k, p in self.pools.items()}}

    def load_extra_state(self, state):
        for k, imgs in (state.get("pools") or {}).items():
            self.pools[k].images = [torch.as_tensor(t).cpu() for t in imgs]


def translate_volume(gen, x: torch.Tensor, spatial_dims: int, patch: list[int], *,
                     sw_batch_size: int = 4, overlap: float = 0.25, device=None, amp=None
                     ) -> torch.Tensor:
    """Translate one ``(C, I, J, K)`` normalised volume with a generator (validation, benchmark).

    3D models: MONAI sliding window with Gaussian blending over ``patch``; 2D models: every
    ``k`` slice is a batch item. Returns ``(C', I, J, K)`` on CPU.
    """
    if spatial_dims == 3:
        return sliding_predict(gen, x[None], patch, sw_batch_size=sw_batch_size, overlap=overlap,
                               device=device, amp=amp)[0]
    xs = x.permute(3, 0, 1, 2)  # slices become the batch
    y = sliding_predict(gen, xs, patch, sw_batch_size=sw_batch_size, overlap=overlap,
                        device=device, amp=amp)
    return y.permute(1, 2, 3, 0)
