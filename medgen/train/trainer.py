"""The trainer: patches from a manifest split, AMP on CUDA, clipping, cosine schedule, sliding-window
validation (PSNR/SSIM), best/last checkpoints, exact resume, deterministic mode, DDP, MLflow.

The loop is written out plainly (diffusers' habit) rather than hidden in an engine: a reader can
follow one step from batch to optimizer.
"""

from __future__ import annotations

import contextlib
import json
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
from medgen.train.data import step_seed, volume_dataset
from medgen.utils.device import resolve_amp, resolve_device
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


def cosine_lambda(cfg: TrainConfig, time_fraction: Callable[[], float] | None = None
                  ) -> Callable[[int], float]:
    """Warm-up + cosine decay over the whole run (``optim.*``); see :func:`cosine_schedule`."""
    return cosine_schedule(cfg.optim.max_steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio,
                           time_fraction)


def cosine_schedule(total: int, warm: int, floor: float,
                    time_fraction: Callable[[], float] | None = None) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warm`` steps, then cosine down to ``floor``.

    ``time_fraction`` (a run with a time budget): progress is the larger of the step fraction and
    the fraction of the budget spent, so the rate anneals to ``floor`` when the budget ends - with
    ``max_steps`` out of reach a step-only cosine would keep the peak rate to the last step.
    The rate then depends on wall time, as the stopping step already does: such runs are not
    bit-reproducible (the deterministic mode is step-bounded).
    """

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        if time_fraction is not None:
            t = max(t, time_fraction())
        t = min(1.0, t)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _dist_info() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from torchrun's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
            int(os.environ.get("WORLD_SIZE", 1)))


class Trainer:
    """Owns what every task shares; the task (``cfg.task.name``) owns models, losses and metrics."""

    def __init__(self, cfg: TrainConfig, *, run_name: str | None = None, resume: bool = False,
                 quiet: bool = False, progress: Callable | None = None):
        from medgen.train.tasks import TASKS

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
        self.amp = resolve_amp(cfg.amp, self.device)
        self.quiet = quiet
        self.progress = progress
        self.config_yaml = dump_config(cfg)
        self.config_sha256 = sha256_bytes(self.config_yaml.encode())
        from medgen.train.provenance import default_run_name

        self.run_name = run_name or cfg.tracking.run_name or default_run_name(cfg)
        self.run_dir = Path(cfg.output_dir) / self.run_name
        self.resume = resume

        self.manifest = Manifest.load(cfg.data.manifest, cfg.data.root)
        self.train_records = (self.manifest.split(cfg.data.train_split) if cfg.data.train_split
                              else list(self.manifest))
        if cfg.data.max_volumes:
            self.train_records = self.train_records[: cfg.data.max_volumes]
        self.val_records = self.manifest.split(cfg.data.val_split) if cfg.data.val_split else []
        if cfg.val.max_volumes:
            self.val_records = self.val_records[: cfg.val.max_volumes]

        self.elapsed_before = 0.0  # seconds trained by earlier invocations (time budgets span resumes)
        self._t_start: float | None = None
        torch.manual_seed(cfg.seed)  # the initial weights depend on the seed alone
        self.task = TASKS.get(cfg.task.name)(self)
        self.task.build()
        self.model = self.task.model
        self._wrapped: dict[int, torch.nn.Module] = {}
        self.step = 0
        self.best_metric = -float("inf")
        self.smoke: dict | None = None  # weights digest after the first step (audit re-runs)
        from medgen.train.provenance import Provenance

        self.provenance = Provenance(self)

    def make_scheduler(self, opt: torch.optim.Optimizer):
        """Warm-up + cosine decay over ``optim.max_steps`` (what every task uses by default), or
        over the time budget when that ends first."""
        tf = self.time_fraction if self.cfg.optim.time_budget_s else None
        return torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(self.cfg, tf))

    def elapsed(self) -> float:
        """Training seconds of this run so far, earlier (resumed-from) invocations included."""
        if self._t_start is None:
            return self.elapsed_before
        return self.elapsed_before + time.perf_counter() - self._t_start

    def time_fraction(self) -> float:
        """Share of ``optim.time_budget_s`` spent (0 without a budget)."""
        budget = self.cfg.optim.time_budget_s
        return min(1.0, self.elapsed() / budget) if budget else 0.0

    def wrapped(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` wrapped in DistributedDataParallel under torchrun, else itself."""
        if self.world == 1:
            return module
        if id(module) not in self._wrapped:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self._wrapped[id(module)] = DDP(module, device_ids=ids)
        return self._wrapped[id(module)]

    # --- checkpoints ---------------------------------------------------------------------------
    def _card(self, metrics: dict[str, float], run_id: str | None):
        from medgen.models import ModelCard

        spacings = [r.spacing for r in self.train_records]
        expected = [float(np.median([s[i] for s in spacings])) for i in range(3)] if spacings else None
        fields = self.task.card_fields()
        lineage = {"train_config_sha256": self.config_sha256, **fields.pop("lineage", {})}
        card = {
            "model_name": self.cfg.model.name, "task": self.task.card_task,
            "intended_use": self.cfg.card.intended_use, "modality": self.cfg.card.modality,
            "expected_spacing_mm": expected, "intensity": self.cfg.intensity,
            "patch_size": list(self.cfg.data.patch_size),
            "training_manifest_sha256": self.manifest.digest,
            "metrics": {k: float(v) for k, v in metrics.items() if math.isfinite(v)},
            "limitations": self.cfg.card.limitations, "mlflow_run_id": run_id, "lineage": lineage,
        }
        card.update(fields)
        return ModelCard(**card)

    def save(self, which: str, metrics: dict[str, float], run_id: str | None) -> Path:
        from medgen.models import capture_rng_state, save_checkpoint

        task = self.task
        extra = {"step": self.step, "best_metric": self.best_metric, "elapsed_s": self.elapsed(),
                 "schedulers": {k: v.state_dict() for k, v in task.schedulers.items()},
                 "scaler": task.scaler.state_dict(), "rng": capture_rng_state(),
                 "config_sha256": self.config_sha256,
                 "modules": {k: m.state_dict() for k, m in task.extra_modules().items()},
                 "task": task.extra_state(), "smoke": json.dumps(self.smoke),
                 **self.provenance.extra_state()}
        opt_state = {k: o.state_dict() for k, o in task.optimizers.items()}
        if which == "last":
            self.provenance.before_save_last(self.step)
        path = self.run_dir / "checkpoints" / which
        save_checkpoint(path, self.model, card=self._card(metrics, run_id), extra_state=extra,
                        optimizer_state=opt_state, ema=task.ema)
        return path

    def load_last(self) -> bool:
        from medgen.models import load_ema_state, load_train_state, read_state_dict

        last = self.run_dir / "checkpoints" / "last"
        if not (last / "model.safetensors").exists():
            from medgen.train.provenance import refuse_nearby_interrupted

            refuse_nearby_interrupted(self.cfg, self.run_dir)
            return False
        state = load_train_state(last, self.device)
        extra = state["extra"]
        if extra.get("config") is None and extra.get("config_sha256") != self.config_sha256:
            from medgen.errors import ConfigError

            raise ConfigError(self.run_name, "cannot resume: the config differs from the checkpoint's")
        from medgen.train.provenance import check_resume_config

        if extra.get("config") is not None:  # refuse a forbidden change before loading anything
            check_resume_config(extra["config"], self.cfg.model_dump(mode="json"),
                                int(extra["step"]), self.run_name)
        task = self.task
        self.model.load_state_dict(read_state_dict(last / "model.safetensors", self.device))
        for k, o in task.optimizers.items():
            o.load_state_dict(state["optimizer"][k])
        for k, sch in task.schedulers.items():
            sch.load_state_dict(extra["schedulers"][k])
        task.scaler.load_state_dict(extra["scaler"])
        for k, m in task.extra_modules().items():
            m.load_state_dict(extra["modules"][k])
        if task.ema is not None:
            ema_sd = load_ema_state(last, self.device)
            target = getattr(task.ema, "module", task.ema)
            target.load_state_dict(ema_sd)
            if hasattr(task.ema, "n_averaged"):
                task.ema.n_averaged.fill_(int(extra.get("task", {}).get("ema_n", self.step)))
        task.load_extra_state(extra.get("task", {}))
        self.smoke = json.loads(extra.get("smoke") or "null")
        self.step = int(extra["step"])
        self.best_metric = float(extra["best_metric"])
        self.elapsed_before = float(extra.get("elapsed_s", 0.0))
        card = json.loads((last / "card.json").read_text()) if (last / "card.json").exists() else {}
        self.provenance.on_load(extra, card.get("mlflow_run_id"))
        log.info("resumed %s at step %d", self.run_name, self.step)
        return True

    # --- the loop -----------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> TrainResult:
        from medgen.train.provenance import run_folder_lock

        lock = run_folder_lock(self.run_dir) if self.is_main else contextlib.nullcontext()
        with lock:
            if self.resume:
                self.load_last()
            train_ds = volume_dataset(self.cfg, self.manifest, self.train_records)
            val_ds = (volume_dataset(self.cfg, self.manifest, self.val_records)
                      if self.val_records else None)
            self._t_start = time.perf_counter()
            with self._run_ctx() as run:
                if run is not None:
                    self.provenance.start(run)
                metrics, stopped = self._loop(run, train_ds, val_ds, stop_after)
                return self._finish(run, metrics, stopped)

    def _loop(self, run, train_ds, val_ds, stop_after: int | None) -> tuple[dict, bool]:
        """Train until ``max_steps``, the time budget or ``stop_after``; (val metrics, stopped)."""
        cfg, task = self.cfg, self.task
        run_id = getattr(run, "run_id", None)
        sampler = task.sampler(train_ds)
        metrics: dict[str, float] = {}
        t_last, n_last = time.perf_counter(), self.step
        while self.step < cfg.optim.max_steps:
            # randomness of this step is a pure function of (seed, step): exact resume
            torch.manual_seed(step_seed(cfg.seed, self.step * self.world + self.rank, "torch"))
            batch = sampler.batch(self.step * self.world + self.rank)
            parts = task.train_step(batch, self.step)
            self.step += 1
            if self.step == 1 and self.smoke is None:
                from medgen.models import state_dict_sha256

                self.smoke = {"steps": 1, "deterministic": cfg.deterministic,
                              "device": self.device.type,
                              "weights_sha256": state_dict_sha256(
                                  {k: v.detach().cpu() for k, v in self.model.state_dict().items()})}
            now = time.perf_counter()
            if self.is_main:
                sps = (self.step - n_last) / max(1e-9, now - t_last)
                if self.progress:
                    self.progress(self.step, cfg.optim.max_steps, parts.get("loss", float("nan")), sps)
                if run is not None:
                    run.log_metrics({f"train/{k}": v for k, v in parts.items()}, step=self.step)
            val_due = val_ds is not None and (self.step % cfg.val.every_steps == 0
                                              or self.step == cfg.optim.max_steps)
            if self.is_main and val_due:
                metrics = task.validate(val_ds, sampler, run, self.step)
                if run is not None:
                    run.log_metrics(metrics, step=self.step)
                if metrics[task.val_metric] > self.best_metric:
                    self.best_metric = metrics[task.val_metric]
                    self.save("best", metrics, run_id)
            budget = cfg.optim.time_budget_s  # the whole run's, resumed parts included
            out_of_time = budget is not None and self.elapsed() > budget
            stop_now = stop_after is not None and self.step >= stop_after
            if self.is_main and (self.step % cfg.checkpoint_every == 0 or out_of_time or stop_now
                                 or self.step == cfg.optim.max_steps):
                self.save("last", metrics, run_id)
            if out_of_time or stop_now:
                return metrics, self.step < cfg.optim.max_steps
        return metrics, False

    def _finish(self, run, metrics: dict, stopped: bool) -> TrainResult:
        """Weights digest, the checkpoints inference needs as artifacts, the seal."""
        from medgen.models import weights_sha256

        last = self.run_dir / "checkpoints" / "last"
        best = self.run_dir / "checkpoints" / "best"
        if self.is_main and not (last / "model.safetensors").exists():
            self.save("last", metrics, getattr(run, "run_id", None))  # resumed at max_steps
        wsha = weights_sha256(last) if self.is_main else ""
        if run is not None and self.is_main:
            run.set_tags({"medgen.weights_sha256": wsha, "medgen.stopped_early": str(stopped).lower()})
            if not stopped:  # what inference needs; resume state stays beside the run on disk
                for name, ck in (("last", last), ("best", best)):
                    for f in ("model.safetensors", "ema.safetensors", "config.json", "card.json"):
                        if (ck / f).exists():
                            run.log_artifact(ck / f, f"checkpoints/{name}")
            self.provenance.seal(run, wsha, stopped)
        return TrainResult(self.run_dir, best if best.exists() else None, last, self.step,
                           metrics, wsha, getattr(run, "run_id", None), stopped)

    def _run_ctx(self):
        if not (self.cfg.tracking.enabled and self.is_main):
            return contextlib.nullcontext(None)
        from medgen.track import start_run

        roots = {"manifest_root": str(self.manifest.root)} if self.manifest.root else None
        return start_run(self.cfg.tracking.experiment, self.run_name,
                         tracking_uri=self.cfg.tracking.tracking_uri, roots=roots)


def train(cfg: TrainConfig, *, stop_after: int | None = None, **kwargs) -> TrainResult:
    return Trainer(cfg, **kwargs).fit(stop_after=stop_after)
