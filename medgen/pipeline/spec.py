"""Pipeline specs: steps as a discriminated union on ``kind``; strings may reference
``${workdir}``, ``${configs}`` and earlier steps' outputs ``${steps.NAME.KEY}``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import AfterValidator, Field, model_validator

from medgen.config.base import StrictModel
from medgen.config.fields import Ratios
from medgen.config.supported import SupportedStepKind as K
from medgen.registry import suggest


def _config_ref(v: str) -> str:
    if "${" not in v:
        try:
            resolve_config(v)
        except Exception as exc:  # ConfigError: one line with "did you mean"
            raise ValueError(getattr(exc, "reason", str(exc))) from None
    return v


def _preset_ref(v: str) -> str:
    if "${" not in v:
        from medgen.errors import ConfigError
        from medgen.transforms.presets import check_preset

        try:
            check_preset(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return v


class _Step(StrictModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    #: what ``${steps.NAME.KEY}`` may name (None: anything; keys depend on the run)
    OUTPUTS: ClassVar[tuple[str, ...] | None] = None


class SampleDataStep(_Step):
    """Build the bundled sample data (public files from installed packages + phantoms)."""

    kind: Literal[K.SAMPLE_DATA]
    dst: str
    OUTPUTS: ClassVar = ("dst", "dicom", "nifti", "ct")


def _deid_options(v: list[str]) -> list[str]:
    from medgen.deid.table import option_names

    known = option_names()
    for o in v:
        if o not in known:
            raise ValueError(f"unknown de-identification option '{o}'{suggest(o, known)}; "
                             f"options: {', '.join(known)}")
    return v


class DeidStep(_Step):
    kind: Literal[K.DEID]
    src: str
    dst: str
    options: Annotated[list[str], AfterValidator(_deid_options)] = Field(default_factory=list)
    workers: int = Field(1, ge=1)
    OUTPUTS: ClassVar = ("dst", "audit")


class ManifestStep(_Step):
    kind: Literal[K.MANIFEST]
    src: str
    output: str
    ratios: Ratios = Field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    seed: int = 0
    allow_uneven: bool = False
    OUTPUTS: ClassVar = ("manifest", "digest", "n")


class DegradeStep(_Step):
    """Degraded copies of a manifest split (NIfTI, mirrored paths) for paired evaluation."""

    kind: Literal[K.DEGRADE]
    manifest: str
    split: str | None = "test"
    preset: Annotated[str, AfterValidator(_preset_ref)]
    dst: str
    reference_dst: str = Field(description="clean copies as NIfTI, same relative paths")
    physical_units: bool | None = Field(
        None, description="degrade in physical units (CT, HU); default: the preset's units")
    seed: int = 0
    OUTPUTS: ClassVar = ("dst", "reference_dst", "n")

    @model_validator(mode="after")
    def _units(self):
        if self.physical_units is not None and "${" not in self.preset:
            from medgen.transforms.presets import check_preset

            hu = check_preset(self.preset).units == "HU"
            if self.physical_units != hu:
                raise ValueError(f"physical_units: {str(self.physical_units).lower()} contradicts "
                                 f"preset '{self.preset}' (units: {'HU' if hu else 'window'}); "
                                 "leave physical_units out, the preset's units decide")
        return self


class TrainStep(_Step):
    kind: Literal[K.TRAIN]
    config: Annotated[str, AfterValidator(_config_ref)] = Field(
        description="config name under configs/ (e.g. train/denoise-mri-tiny) or a path")
    set: list[str] = Field(default_factory=list)
    OUTPUTS: ClassVar = ("best", "last", "run_dir", "weights_sha256")


class InferStep(_Step):
    kind: Literal[K.DENOISE, K.UPSCALE, K.TRANSLATE]
    model: str
    src: str
    dst: str
    args: list[str] = Field(default_factory=list)
    OUTPUTS: ClassVar = ("dst", "ok", "failed", "voxels_per_s")


class SynthesizeStep(_Step):
    kind: Literal[K.SYNTHESIZE]
    model: str
    n: int = Field(4, ge=1)
    dst: str
    args: list[str] = Field(default_factory=list)
    OUTPUTS: ClassVar = ("dst", "manifest")


class EvaluateStep(_Step):
    kind: Literal[K.EVALUATE]
    task: Literal["paired", "synth"] = "paired"
    reference: str
    outputs: str
    inputs: str | None = None
    args: list[str] = Field(default_factory=list)


class AuditStep(_Step):
    kind: Literal[K.AUDIT]
    rerun: int = Field(1, ge=0)
    steps: list[str] | None = Field(None, description="steps whose runs to audit (default: all with runs)")


Step = Annotated[Union[SampleDataStep, DeidStep, ManifestStep, DegradeStep, TrainStep,  # noqa: UP007
                       InferStep, SynthesizeStep, EvaluateStep, AuditStep],
                 Field(discriminator="kind")]


class TrackingSection(StrictModel):
    experiment: str = "medgen-pipelines"
    tracking_uri: str | None = None


#: top-level names a string may reference besides ``${steps.NAME.KEY}``
SCOPE_NAMES = ("name", "workdir", "configs", "python", "key_file")


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
        seen: dict[str, _Step] = {}
        for i, s in enumerate(self.steps):
            if s.name in seen:
                raise ValueError(f"steps.{i}.name: step name '{s.name}' used twice")
            _check_refs(s, i, seen)
            if isinstance(s, AuditStep):
                for n in s.steps or []:
                    if n not in seen:
                        raise ValueError(f"steps.{i}.steps: no earlier step '{n}'"
                                         f"{suggest(n, seen)}; steps: {', '.join(seen)}")
            seen[s.name] = s
        return self

    def step_names(self) -> list[str]:
        return [s.name for s in self.steps]


def _check_refs(step: _Step, index: int, earlier: dict[str, _Step]) -> None:
    """Every ``${...}`` in a step names a scope variable or an earlier step's output."""
    for key, value in _strings(step.model_dump(mode="json")):
        for ref in _REF.findall(value):
            parts = ref.split(".")
            where = f"steps.{index}.{key}"
            if parts[0] != "steps":
                if len(parts) != 1 or parts[0] not in SCOPE_NAMES:
                    raise ValueError(f"{where}: unknown reference ${{{ref}}}"
                                     f"{suggest(ref, SCOPE_NAMES)}")
                continue
            if len(parts) != 3:
                raise ValueError(f"{where}: ${{{ref}}} must be ${{steps.NAME.KEY}}")
            _, name, out = parts
            if name not in earlier:
                hint = suggest(name, earlier)
                raise ValueError(f"{where}: ${{{ref}}} names no earlier step '{name}'{hint}")
            outs = type(earlier[name]).OUTPUTS
            if outs is not None and out not in outs:
                raise ValueError(f"{where}: step '{name}' has no output '{out}'"
                                 f"{suggest(out, outs)}; outputs: {', '.join(outs)}")


def _strings(value: Any, prefix: str = ""):
    if isinstance(value, str):
        yield prefix, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, f"{prefix}.{i}" if prefix else str(i))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{prefix}.{k}" if prefix else str(k))


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
