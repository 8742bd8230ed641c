"""One versioned config tree: pydantic v2 models, YAML files, ``--set a.b=c`` overrides.

Unknown keys are errors that name the key's full path and suggest the nearest valid one.
"""

from medgen.config.base import StrictModel, format_validation_error
from medgen.config.load import apply_overrides, load_config, load_yaml, parse_set

__all__ = [
    "StrictModel",
    "apply_overrides",
    "format_validation_error",
    "load_config",
    "load_yaml",
    "parse_set",
]
