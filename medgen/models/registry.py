"""Model registry: name -> :class:`ModelSpec` (config class + lazy builder), and ``build_model``.

A training config says ``model: {name: vae, spatial_dims: 3, channels: [8, 16, 16]}``; the field
is typed :data:`ModelConfig`, a pydantic discriminated union on ``name`` over the built-in
families, which also accepts families registered by plugins (entry-point group ``medgen.models``,
each entry point pointing at a :class:`ModelSpec`) and answers an unknown name with
"did you mean". Torch is only imported when a model is built.

Adding a built-in family (super-resolution, synthesis issues): write its ``XConfig`` (subclass of
:class:`medgen.models.base.BaseModelConfig` with ``name: Literal["x"]``), register a
:class:`ModelSpec` below and add the config class to the ``ModelConfig`` union.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Union

from pydantic import Field, ValidationError, WrapValidator

from medgen.config.supported import SupportedModel as M
from medgen.config.supported import SupportedTask as T
from medgen.errors import ConfigError
from medgen.models.base import BaseModelConfig
from medgen.models.denoise.config import UNetConfig, VAEConfig
from medgen.models.sr.config import SRGeneratorConfig
from medgen.models.synth.config import GenVAEConfig, LDMConfig
from medgen.models.translate.config import CycleGANConfig, Pix2PixConfig
from medgen.registry import Registry, suggest
from medgen.utils.hashing import sha256_json

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class ModelSpec:
    """One model family.

    Attributes
    ----------
    name : str
        Registry name, equal to the config's ``name`` literal.
    config_cls : type[BaseModelConfig]
        Pydantic config class.
    builder : str or callable
        ``"package.module:callable"`` (imported on first build so configs stay torch-free) or the
        callable itself (plugins); it takes the config and returns an ``nn.Module``.
    tasks : tuple of str
        What the family is for: ``denoise``, ``sr``, ``synth``, ``translate``.
    description : str
        One line for ``medgen models list``-style output.
    """

    name: str
    config_cls: type[BaseModelConfig]
    builder: str | Callable[[Any], Any]
    tasks: tuple[str, ...] = ("denoise",)
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def build(self, cfg: BaseModelConfig) -> torch.nn.Module:
        if callable(self.builder):
            return self.builder(cfg)
        mod, _, attr = self.builder.partition(":")
        fn = getattr(importlib.import_module(mod), attr)
        return fn(cfg)


MODELS: Registry[ModelSpec] = Registry("models")


def register_model(spec: ModelSpec, *, overwrite: bool = False) -> ModelSpec:
    """Add a family to :data:`MODELS` (its config's ``name`` must equal ``spec.name``)."""
    literal = spec.config_cls.model_fields["name"].default
    if literal != spec.name:
        raise ValueError(f"config {spec.config_cls.__name__} has name '{literal}', spec '{spec.name}'")
    MODELS.register(spec.name, spec, overwrite=overwrite)
    return spec


register_model(ModelSpec(
    M.VAE, VAEConfig, "medgen.models.denoise.vae:build_vae", tasks=(T.DENOISE, T.SYNTH),
    description="MONAI AutoencoderKL denoising VAE (noisy -> clean); prior sampling for synthesis"))
register_model(ModelSpec(
    M.UNET, UNetConfig, "medgen.models.denoise.unet:build_unet", tasks=(T.DENOISE,),
    description="residual UNet denoiser (out = x + f(x)), the quality baseline"))
register_model(ModelSpec(
    M.VAE_GEN, GenVAEConfig, "medgen.models.synth.vae:build_gen_vae", tasks=(T.SYNTH,),
    description="generative VAE (AutoencoderKL), prior sampling; conditional and paired-label"))
register_model(ModelSpec(
    M.LDM, LDMConfig, "medgen.models.synth.ldm:build_ldm", tasks=(T.SYNTH,),
    description="latent diffusion (AutoencoderKL + DiffusionModelUNet; DDPM/DDIM/RFlow)"))
register_model(ModelSpec(
    M.RRDB_SR, SRGeneratorConfig, "medgen.models.sr.generator:build_rrdb_sr", tasks=(T.SR,),
    description="RRDB super-resolution generator, per-axis sub-pixel upsampling (2D/3D)"))
register_model(ModelSpec(
    M.PIX2PIX, Pix2PixConfig, "medgen.models.translate.nets:build_pix2pix", tasks=(T.TRANSLATE,),
    description="Pix2Pix UNet generator A -> B (paired translation; PatchGAN in training)"))
register_model(ModelSpec(
    M.CYCLEGAN, CycleGANConfig, "medgen.models.translate.nets:build_cyclegan", tasks=(T.TRANSLATE,),
    description="CycleGAN: UNet generators A -> B and B -> A (unpaired translation)"))



def _model_config_wrap(value: Any, handler):
    """Unknown names get "did you mean"; plugin families validate with their own class."""
    if isinstance(value, BaseModelConfig):
        return value
    if isinstance(value, dict):
        name = value.get("name")
        if name is None:
            raise ValueError(f"model needs a 'name' (one of: {', '.join(MODELS.names())})")
        try:
            spec = MODELS.get(str(name))
        except ConfigError:
            raise ValueError(f"unknown model '{name}'{suggest(name, MODELS.names())}; "
                             f"known: {', '.join(MODELS.names())}") from None
        # validate with the family's own class (built-in or plugin) so unknown keys get a
        # "did you mean" against that family's fields (the generic formatter cannot see through
        # the union's tag)
        from medgen.config.base import format_validation_error

        try:
            return spec.config_cls.model_validate(value)
        except ValidationError as err:
            msg = format_validation_error(err, spec.config_cls).replace("Value error, ", "")
            raise ValueError(msg) from None
    return handler(value)


#: Discriminated union over the registered model configs (pydantic field type for ``model:``).
ModelConfig = Annotated[
    Union[VAEConfig, UNetConfig, SRGeneratorConfig, GenVAEConfig, LDMConfig, Pix2PixConfig, CycleGANConfig],  # noqa: UP007 - keep the union explicit for the discriminator
    Field(discriminator="name"),
    WrapValidator(_model_config_wrap),
]


def parse_model_config(data: dict[str, Any] | BaseModelConfig) -> BaseModelConfig:
    """Validate a mapping (e.g. ``config.json``) into the right family's config.

    Raises
    ------
    ConfigError
        One line naming the bad key, or the unknown model with a suggestion.
    """
    if isinstance(data, BaseModelConfig):
        return data
    if not isinstance(data, dict):
        raise ConfigError("model", "must be a mapping with a 'name'")
    name = data.get("name")
    if name is None:
        raise ConfigError("model", f"needs a 'name' (one of: {', '.join(MODELS.names())})")
    spec = MODELS.get(str(name))  # "did you mean" ConfigError
    from medgen.config.base import format_validation_error

    try:
        return spec.config_cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError("model", format_validation_error(err, spec.config_cls)) from None


def load_model_config(path: str | Path, overrides: list[str] | None = None) -> BaseModelConfig:
    """Read a model YAML (``configs/tiny/*.yaml``): either the bare mapping or under ``model:``.

    ``overrides`` are ``--set`` items relative to the model mapping (``channels=[8,16]``).
    """
    from medgen.config import apply_overrides, load_yaml

    raw = load_yaml(path)
    if "model" in raw and isinstance(raw["model"], dict):
        raw = raw["model"]
    raw = apply_overrides(raw, overrides)
    try:
        return parse_model_config(raw)
    except ConfigError as err:
        raise ConfigError(Path(path).name, err.reason) from None


def model_spec(cfg_or_name: BaseModelConfig | str) -> ModelSpec:
    """The :class:`ModelSpec` of a config or name ("did you mean" ConfigError when unknown)."""
    name = cfg_or_name if isinstance(cfg_or_name, str) else cfg_or_name.name
    return MODELS.get(name)


def build_model(cfg: BaseModelConfig | dict[str, Any]) -> torch.nn.Module:
    """Build an untrained ``nn.Module`` from a config (or mapping); weights come from torch's RNG.

    The returned module carries ``.config`` (the validated config) and ``.size_divisor``.
    """
    cfg = parse_model_config(cfg)
    model = model_spec(cfg).build(cfg)
    model.config = cfg
    return model


def config_sha256(cfg: BaseModelConfig) -> str:
    """sha256 of the canonical JSON of the config (what model cards and runs cite)."""
    return sha256_json(cfg.model_dump(mode="json"))


__all__ = [
    "MODELS",
    "ModelConfig",
    "ModelSpec",
    "build_model",
    "config_sha256",
    "load_model_config",
    "model_spec",
    "parse_model_config",
    "register_model",
]
