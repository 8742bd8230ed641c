"""Pipeline specs: steps as a discriminated union on ``kind``; strings may reference
``${workdir}``, ``${configs}`` and earlier steps' outputs ``${steps.NAME.KEY}``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from medgen.config.base import StrictModel


class _Step(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")


class SampleDataStep(_Step):
    """Build the bundled sample data (public files from installed packages + phantoms)."""

    kind: Literal["sample-data"]
    dst: str


class DeidStep(_Step):
    kind: Literal["deid"]
    src: str
    dst: str
    options: list[str] = Field(default_factory=list)
    workers: int = 1


class ManifestStep(_Step):
    kind: Literal["manifest"]
    src: str
    output: str
    ratios: dict[str, float] = Field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    seed: int = 0
    allow_uneven: bool = False


class DegradeStep(_Step):
    """Degraded copies of a manifest split (NIfTI, mirrored paths) for paired evaluation."""

    kind: Literal["degrade"]
    manifest: str
    split: str | None = "test"
    preset: str
    dst: str
    reference_dst: str = Field(description="clean copies as NIfTI, same relative paths")
    physical_units: bool = Field(False, description="preset works in physical units (CT, HU)")
    seed: int = 0


class TrainStep(_Step):
    kind: Literal["train"]
    config: str = Field(description="config name under configs/ (e.g. train/denoise-mri-tiny) or a path")
    set: list[str] = Field(default_factory=list)


class InferStep(_Step):
    kind: Literal["denoise", "upscale", "translate"]
    model: str
    src: str
    dst: str
    args: list[str] = Field(default_factory=list)


class SynthesizeStep(_Step):
    kind: Literal["synthesize"]
    model: str
    n: int = 4
    dst: str
    args: list[str] = Field(default_factory=list)


class EvaluateStep(_Step):
    kind: Literal["evaluate"]
    task: Literal["paired", "synth"] = "paired"
    reference: str
    outputs: str
    inputs: str | None = None
    args: list[str] = Field(default_factory=list)


class AuditStep(_Step):
    kind: Literal["audit"]
    rerun: int = 1
    steps: list[str] | None = Field(None, description="steps whose runs to audit (default: all with runs)")


Step = Annotated[Union[SampleDataStep, DeidStep, ManifestStep, DegradeStep, TrainStep,  # noqa: UP007
                       InferStep, SynthesizeStep, EvaluateStep, AuditStep],
                 Field(discriminator="kind")]


class TrackingSection(StrictModel):
    experiment: str = "medgen-pipelines"
    tracking_uri: str | None = None


class PipelineSpec(StrictModel):
    version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    description: str = ""
    workdir: str = "pipeline_runs/${name}"
    key_file: str = Field("${workdir}/secrets/medgen.key",
                          description="pseudonymization key (created on first use)")
    tracking: TrackingSection = Field(default_factory=TrackingSection)
    steps: list[Step]

    @model_validator(mode="after")
    def _names(self):
        seen = set()
        for s in self.steps:
            if s.name in seen:
                raise ValueError(f"step name '{s.name}' used twice")
            seen.add(s.name)
        return self


_REF = re.compile(r"\$\{([^}]+)\}")


def interpolate(value: Any, scope: dict[str, Any]) -> Any:
    """Replace ``${a.b}`` in strings (recursively in lists/dicts) from ``scope``."""
    if isinstance(value, str):
        def rep(m):
            cur: Any = scope
            for part in m.group(1).split("."):
                if not isinstance(cur, dict) or part not in cur:
                    from medgen.errors import ConfigError

                    raise ConfigError("pipeline", f"unknown reference ${{{m.group(1)}}}")
                cur = cur[part]
            return str(cur)

        return _REF.sub(rep, value)
    if isinstance(value, list):
        return [interpolate(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, scope) for k, v in value.items()}
    return value


def configs_dir() -> Path:
    import os

    env = os.environ.get("MEDGEN_CONFIGS")
    if env:
        return Path(env)
    import medgen

    return Path(medgen.__file__).resolve().parents[1] / "configs"


def resolve_config(name_or_path: str) -> Path:
    """A config referenced by name (``train/denoise-mri-tiny``) or a path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    cand = configs_dir() / (name_or_path + ("" if name_or_path.endswith((".yaml", ".yml")) else ".yaml"))
    if cand.exists():
        return cand
    from medgen.errors import ConfigError
    from medgen.registry import suggest

    known = sorted(str(q.relative_to(configs_dir()).with_suffix("")) for q in configs_dir().rglob("*.yaml"))
    raise ConfigError("pipeline", f"config '{name_or_path}' not found{suggest(name_or_path, known)}")


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineSpec:
    from medgen.config import load_config

    return load_config(PipelineSpec, path, overrides)
