"""Training tasks: what one step and one validation mean for a model family.

The :class:`~medgen.train.trainer.Trainer` owns everything shared (seeds, device, AMP, DDP, the
loop, checkpoints, resume, tracking); a task owns the models, losses, optimizers, the batch
sampler and the validation metric. Tasks are registered by name (``task:`` in the config):
``denoise`` here; super-resolution, synthesis and translation add theirs.
"""

from medgen.config.supported import SupportedTask as T
from medgen.registry import Registry, lazy

TASKS: Registry = Registry("tasks")
TASKS.register(T.DENOISE, lazy("medgen.train.tasks.denoise", "DenoiseTask"))
TASKS.register(T.SR, lazy("medgen.train.tasks.sr", "SRTask"))
TASKS.register(T.SYNTH, lazy("medgen.train.tasks.synth", "SynthTask"))
TASKS.register(T.TRANSLATE, lazy("medgen.train.tasks.translate", "TranslateTask"))

__all__ = ["TASKS"]
