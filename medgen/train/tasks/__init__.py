"""Training tasks: what one step and one validation mean for a model family.

The :class:`~medgen.train.trainer.Trainer` owns everything shared (seeds, device, AMP, DDP, the
loop, checkpoints, resume, tracking); a task owns the models, losses, optimizers, the batch
sampler and the validation metric. Tasks are registered by name (``task:`` in the config):
``denoise`` here; super-resolution, synthesis and translation add theirs.
"""

from medgen.registry import Registry, lazy

TASKS: Registry = Registry("tasks")
TASKS.register("denoise", lazy("medgen.train.tasks.denoise", "DenoiseTask"))
TASKS.register("sr", lazy("medgen.train.tasks.sr", "SRTask"))
TASKS.register("synth", lazy("medgen.train.tasks.synth", "SynthTask"))
TASKS.register("translate", lazy("medgen.train.tasks.translate", "TranslateTask"))

__all__ = ["TASKS"]
