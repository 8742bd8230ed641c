"""The trainer: patches from a manifest split, AMP on CUDA, clipping, cosine schedule, sliding-window
validation (PSNR/SSIM), best/last checkpoints, exact resume, deterministic mode, DDP, MLflow.

The loop is written out plainly (diffusers' habit) rather than hidden in an engine: a reader can
follow one step from batch to optimizer.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medgen.config.load import dump_config
from medgen.manifest import Manifest
from medgen.train.config import TrainConfig
from medgen.train.data import PatchSampler, step_seed, volume_dataset
from medgen.utils.hashing import sha256_bytes

log = logging.getLogger("medgen.train")


@dataclass
class TrainResult:
    run_dir: Path
    best: Path | None
    last: Path
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    weights_sha256: str = ""
    mlflow_run_id: str | None = None
    stopped_early: bool = False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU supports it, else fp16; never on CPU (no speed-up for convs there)."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def set_determinism(seed: int, deterministic: bool) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def cosine_lambda(cfg: TrainConfig) -> Callable[[int], float]:
    warm, total, floor = cfg.optim.warmup_steps, cfg.optim.max_steps, cfg.optim.min_lr_ratio

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total - warm))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


class Trainer:
    def __init__(self, cfg: TrainConfig, *, run_name: str | None = None, resume: bool = False,
                 quiet: bool = False, progress: Callable | None = None):
        from medgen.models import build_model

        self.cfg = cfg
        self.rank, self.local_rank, self.world = _dist_info()
        self.is_main = self.rank == 0
        if self.world > 1 and not torch.distributed.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(self.device)
        set_determinism(cfg.seed, cfg.deterministic)
        self.amp = amp_dtype(cfg, self.device)
        self.quiet = quiet
        self.progress = progress
        self.config_yaml = dump_config(cfg)
        self.config_sha256 = sha256_bytes(self.config_yaml.encode())
        self.run_name = run_name or cfg.tracking.run_name or f"{cfg.model.name}-{self.config_sha256[:8]}"
        self.run_dir = Path(cfg.output_dir) / self.run_name
        self.resume = resume

        self.manifest = Manifest.load(cfg.data.manifest, cfg.data.root)
        self.train_records = self.manifest.split(cfg.data.train_split) if cfg.data.train_split else list(self.manifest)
        if cfg.data.max_volumes:
            self.train_records = self.train_records[: cfg.data.max_volumes]
        self.val_records = self.manifest.split(cfg.data.val_split) if cfg.data.val_split else []
        if cfg.val.max_volumes:
            self.val_records = self.val_records[: cfg.val.max_volumes]

        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
        self.model = build_model(cfg.model).to(self.device)
        self.is_vae = cfg.model.name == "vae"
        if self.is_vae:
            from medgen.models.denoise.losses import DenoiseVAELoss

            self.loss_fn = DenoiseVAELoss(cfg.loss, cfg.model.spatial_dims, cfg.model.in_channels).to(self.device)
        else:
            self.loss_fn = None
        self.masker = None
        if cfg.mode == "self-supervised":
            from medgen.models.denoise.blindspot import BlindSpotMasker

            self.masker = BlindSpotMasker(cfg.blindspot)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.optim.lr,
                                     weight_decay=cfg.optim.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cosine_lambda(cfg))
        self.d_opt = None
        if self.loss_fn is not None and self.loss_fn.uses_adversarial:
            self.d_opt = torch.optim.AdamW(self.loss_fn.discriminator.parameters(), lr=cfg.optim.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.ddp_model = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.ddp_model = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.step = 0
        self.best_metric = -float("inf")
        self.history: dict[str, float] = {}

    # --- checkpoints ---------------------------------------------------------------------------
    def _card(self, metrics: dict[str, float], run_id: str | None):
        from medgen.models import ModelCard

        spacings = [r.spacing for r in self.train_records]
        expected = [float(np.median([s[i] for s in spacings])) for i in range(3)] if spacings else None
        lineage = {"train_config_sha256": self.config_sha256}
        if self.cfg.degradation.preset:
            lineage["degradation_preset"] = Path(self.cfg.degradation.preset).stem
        lineage["mode"] = self.cfg.mode
        return ModelCard(
            model_name=self.cfg.model.name, task="denoise", intended_use=self.cfg.card.intended_use,
            modality=self.cfg.card.modality, expected_spacing_mm=expected,
            intensity=self.cfg.intensity, patch_size=list(self.cfg.data.patch_size),
            training_manifest_sha256=self.manifest.digest,
            metrics={k: float(v) for k, v in metrics.items() if math.isfinite(v)},
            limitations=self.cfg.card.limitations, mlflow_run_id=run_id, lineage=lineage)

    def save(self, which: str, metrics: dict[str, float], run_id: str | None) -> Path:
        from medgen.models import capture_rng_state, save_checkpoint

        extra = {"step": self.step, "best_metric": self.best_metric,
                 "scheduler": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": capture_rng_state(), "config_sha256": self.config_sha256}
        opt_state = {"model": self.opt.state_dict()}
        if self.d_opt is not None:
            opt_state["discriminator"] = self.d_opt.state_dict()
            extra["discriminator"] = self.loss_fn.discriminator.state_dict()
        path = self.run_dir / "checkpoints" / which
        save_checkpoint(path, self.model, card=self._card(metrics, run_id), extra_state=extra,
                        optimizer_state=opt_state)
        return path

    def load_last(self) -> bool:
        from medgen.models import load_train_state, read_state_dict

        last = self.run_dir / "checkpoints" / "last"
        if not (last / "model.safetensors").exists():
            return False
        state = load_train_state(last, self.device)
        if state["extra"].get("config_sha256") != self.config_sha256:
            from medgen.errors import ConfigError

            raise ConfigError(self.run_name, "cannot resume: the config differs from the checkpoint's")
        self.model.load_state_dict(read_state_dict(last / "model.safetensors", self.device))
        self.opt.load_state_dict(state["optimizer"]["model"])
        self.sched.load_state_dict(state["extra"]["scheduler"])
        self.scaler.load_state_dict(state["extra"]["scaler"])
        if self.d_opt is not None:
            self.d_opt.load_state_dict(state["optimizer"]["discriminator"])
            self.loss_fn.discriminator.load_state_dict(state["extra"]["discriminator"])
        self.step = int(state["extra"]["step"])
        self.best_metric = float(state["extra"]["best_metric"])
        log.info("resumed %s at step %d", self.run_name, self.step)
        return True

    # --- one step --------------------------------------------------------------------------
    def train_step(self, batch: dict) -> dict[str, float]:
        cfg = self.cfg
        torch.manual_seed(step_seed(cfg.seed, self.step, "torch"))  # VAE sampling etc.: per-step
        noisy = batch["noisy"].to(self.device)
        clean = batch["clean"].to(self.device)
        mask = None
        if self.masker is not None:
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, self.step, "blindspot"))
            inp, mask = self.masker(noisy.cpu(), gen)
            inp, mask, target = inp.to(self.device), mask.to(self.device), noisy
        else:
            inp, target = noisy, clean
        self.model.train()
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
        parts: dict[str, float] = {}
        with ctx:
            out = self.ddp_model(inp)
            if self.is_vae:
                rec, mu, sigma = out
                loss, parts = self.loss_fn(rec.float(), target, mu, sigma, mask=mask)
            else:
                rec = out
                if mask is not None:
                    loss = self.masker.loss(rec.float(), target, mask)
                else:
                    loss = torch.nn.functional.l1_loss(rec.float(), target)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.optim.grad_clip:
            self.scaler.unscale_(self.opt)
            gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            parts["grad_norm"] = float(gn)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        if self.d_opt is not None:
            d_loss = self.loss_fn.discriminator_loss(rec.float(), clean)
            self.d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.d_opt.step()
            parts["d_loss"] = float(d_loss.detach())
        parts["loss"] = float(loss.detach())
        parts["lr"] = float(self.sched.get_last_lr()[0])
        return parts

    # --- validation ------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, val_ds, sampler: PatchSampler, run=None) -> dict[str, float]:
        from monai.inferers import sliding_window_inference
        from monai.metrics import PSNRMetric, SSIMMetric

        from medgen.models import predict

        cfg = self.cfg
        dims = cfg.model.spatial_dims
        psnr_out, psnr_in, ssim_out, ssim_in = [], [], [], []
        grid = None
        for i in range(len(val_ds)):
            clean = torch.as_tensor(val_ds[i]["image"]).float()
            clean = clean.as_tensor() if hasattr(clean, "as_tensor") else clean
            noisy = sampler.degrade_volume(clean, i)
            if dims == 2:  # slice-wise: the slices become the batch
                x = noisy.permute(3, 0, 1, 2)
                y = clean.permute(3, 0, 1, 2)
            else:
                x, y = noisy[None], clean[None]
            roi = [min(p, s) for p, s in zip(cfg.data.patch_size, x.shape[2:])]
            ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()
            with ctx:
                den = sliding_window_inference(
                    x.to(self.device), roi, cfg.val.sw_batch_size,
                    lambda t: predict(self.model, t), overlap=cfg.val.overlap, mode="gaussian",
                ).float().cpu()
            rng = float(y.max() - y.min()) or 1.0
            psnr = PSNRMetric(max_val=rng)
            psnr_out.append(float(psnr(den, y).mean()))
            psnr_in.append(float(psnr(x, y).mean()))
            win = max(3, min(7, *[s if s % 2 else s - 1 for s in y.shape[2:]]))
            ssim = SSIMMetric(spatial_dims=dims, data_range=rng, win_size=win)
            ssim_out.append(float(ssim(den, y).mean()))
            ssim_in.append(float(ssim(x, y).mean()))
            if grid is None and cfg.val.images and run is not None:
                if dims == 2:
                    def vol(t):
                        return t[:, 0].permute(1, 2, 0).numpy()
                else:
                    def vol(t):
                        return t[0, 0].numpy()
                grid = {"noisy": vol(x), "denoised": vol(den), "clean": vol(y),
                        "difference": vol(den - y)}
        m = {"val/psnr": float(np.mean(psnr_out)), "val/ssim": float(np.mean(ssim_out)),
             "val/psnr_noisy": float(np.mean(psnr_in)), "val/ssim_noisy": float(np.mean(ssim_in))}
        m["val/psnr_gain"] = m["val/psnr"] - m["val/psnr_noisy"]
        if grid is not None:
            run.log_figure_grid(grid, name="val", step=self.step)
        return m

    # --- the loop -----------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> TrainResult:
        cfg = self.cfg
        if self.resume:
            self.load_last()
        train_ds = volume_dataset(cfg, self.manifest, self.train_records)
        val_ds = volume_dataset(cfg, self.manifest, self.val_records) if self.val_records else None
        sampler = PatchSampler(cfg, train_ds)
        run_ctx = self._run_ctx()
        t_start = time.perf_counter()
        stopped = False
        metrics: dict[str, float] = {}
        with run_ctx as run:
            run_id = getattr(run, "run_id", None)
            if run is not None and self.step == 0:
                run.log_config(cfg)
                run.log_manifest(self.manifest.digest, role="train")
                run.log_lineage({"seed": cfg.seed})
                run.set_tags({"medgen.task": "denoise", "medgen.mode": cfg.mode,
                              "medgen.model": cfg.model.name, "medgen.resumed": "false"})
            elif run is not None:
                run.set_tags({"medgen.resumed": "true", "medgen.resumed_at_step": self.step})
            t_last, n_last = time.perf_counter(), self.step
            while self.step < cfg.optim.max_steps:
                batch = sampler.batch(self.step * self.world + self.rank)
                parts = self.train_step(batch)
                self.step += 1
                now = time.perf_counter()
                if self.is_main:
                    sps = (self.step - n_last) / max(1e-9, now - t_last)
                    if self.progress:
                        self.progress(self.step, cfg.optim.max_steps, parts["loss"], sps)
                    if run is not None:
                        run.log_metrics({f"train/{k}": v for k, v in parts.items()}, step=self.step)
                val_due = val_ds is not None and (self.step % cfg.val.every_steps == 0
                                                  or self.step == cfg.optim.max_steps)
                if self.is_main and val_due:
                    metrics = self.validate(val_ds, sampler, run)
                    if run is not None:
                        run.log_metrics(metrics, step=self.step)
                    if metrics["val/psnr"] > self.best_metric:
                        self.best_metric = metrics["val/psnr"]
                        self.save("best", metrics, run_id)
                budget = cfg.optim.time_budget_s
                out_of_time = budget is not None and now - t_start > budget
                stop_now = stop_after is not None and self.step >= stop_after
                if self.is_main and (self.step % cfg.checkpoint_every == 0 or out_of_time or stop_now
                                     or self.step == cfg.optim.max_steps):
                    self.save("last", metrics, run_id)
                if out_of_time or stop_now:
                    stopped = self.step < cfg.optim.max_steps
                    break
            last = self.run_dir / "checkpoints" / "last"
            best = self.run_dir / "checkpoints" / "best"
            from medgen.models import weights_sha256

            wsha = weights_sha256(last) if self.is_main else ""
            if run is not None and self.is_main:
                run.set_tags({"medgen.weights_sha256": wsha, "medgen.stopped_early": str(stopped).lower()})
                if not stopped:  # what inference needs; resume state stays beside the run on disk
                    for name, ck in (("last", last), ("best", best)):
                        for f in ("model.safetensors", "config.json", "card.json"):
                            if (ck / f).exists():
                                run.log_artifact(ck / f, f"checkpoints/{name}")
        return TrainResult(self.run_dir, best if best.exists() else None, last, self.step,
                           metrics, wsha, run_id, stopped)

    def _run_ctx(self):
        if not (self.cfg.tracking.enabled and self.is_main):
            return contextlib.nullcontext(None)
        from medgen.track import start_run

        roots = {"manifest_root": str(self.manifest.root)} if self.manifest.root else None
        return start_run(self.cfg.tracking.experiment, self.run_name,
                         tracking_uri=self.cfg.tracking.tracking_uri, roots=roots)


def train(cfg: TrainConfig, **kwargs) -> TrainResult:
    return Trainer(cfg, **{k: v for k, v in kwargs.items() if k != "stop_after"}).fit(
        stop_after=kwargs.get("stop_after"))
