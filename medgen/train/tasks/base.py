"""The task interface the trainer drives."""

from __future__ import annotations

from typing import Any

import torch


class TrainTask:
    """Base class. Subclasses set ``self.model`` (the network saved as ``model.safetensors`` and
    used for inference) in :meth:`build`, and implement :meth:`train_step` and :meth:`validate`.

    Attributes the trainer reads
    ----------------------------
    model : nn.Module
        The inference network.
    card_task : str
        Model-card task (``denoise``, ``sr``, ``synth``, ``translate``).
    val_metric : str
        Key of :meth:`validate`'s result that selects the best checkpoint (higher is better).
    """

    card_task = "denoise"
    val_metric = "val/psnr"

    def __init__(self, trainer):
        self.trainer = trainer
        self.cfg = trainer.cfg
        self.device: torch.device = trainer.device
        self.amp = trainer.amp
        self.model: torch.nn.Module | None = None
        self.ema = None  # torch.optim.swa_utils.AveragedModel or None
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)

    # --- set-up ----------------------------------------------------------------------------------
    def build(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_modules(self) -> dict[str, torch.nn.Module]:
        """Further modules whose weights resume needs (discriminators, ...)."""
        return {}

    def sampler(self, dataset):  # pragma: no cover - abstract
        raise NotImplementedError

    def autocast(self):
        """Mixed precision on CUDA only (:func:`medgen.utils.device.autocast`)."""
        from medgen.utils.device import autocast

        return autocast(self.device, self.amp)

    def step_optimizer(self, name: str, loss: torch.Tensor, params, clip: float | None) -> float | None:
        """Backward + (unscale, clip) + step + scheduler step for one optimizer; returns grad norm."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        gn = None
        if clip:
            self.scaler.unscale_(opt)
            gn = float(torch.nn.utils.clip_grad_norm_(params, clip))
        self.scaler.step(opt)
        self.scaler.update()
        if name in self.schedulers:
            self.schedulers[name].step()
        return gn

    # --- per step ----------------------------------------------------------------------------
    def train_step(self, batch: dict, step: int) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def validate(self, val_ds, sampler, run, step: int) -> dict[str, float]:  # pragma: no cover
        raise NotImplementedError

    def input_manifests(self) -> dict[str, tuple[Any, str, str]]:
        """Input manifests beyond ``data.manifest``: ``role -> (Manifest, config key of its file,
        config key of its root)``. Each is recorded, sealed and re-checked by ``medgen audit``."""
        return {}

    def card_fields(self) -> dict[str, Any]:
        """Extra model-card fields (e.g. lineage) for this task."""
        return {}

    def extra_state(self) -> dict[str, Any]:
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass
