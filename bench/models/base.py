"""The model interface: a registry of architectures apart from the methods, and their capabilities.

A model is a subclass of `Model` in its own file under bench/models/, registered with `@register`.
It names its Params (part of the run id), the dataset-dependent defaults of those Params, and the
capabilities it offers to methods. A method lists the capabilities it needs (`Method.requires`);
a mismatch is a ConfigError before anything trains, naming the method, the model and what is missing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bench import registry
from bench.config import ConfigError, RunConfig
from bench.values import check_typed

# What a model can offer. A method that uses a part of a model's interface declares it by name.
CAPABILITIES: dict[str, str] = {
    "encoders": "model.encoders: modality -> encoder module; model.encoder_parameters(m, include_biases)",
    "features": ("model.encode(batch) -> {m: z_m (B, D_m)}, model.fuse(features) -> fused outputs (B, K) and "
                 "model.feature_dim(m) -> D_m"),
    "modality_outputs": "ModelOutput.modality_logits: per-modality outputs that sum to the fused output",
    "linear_head": "model.head, one Linear over the concatenated z_m, and model.head_slices() -> {m: columns}",
    "zero_inputs": "model.encode_zeros(batch) -> z_m of all-zero inputs of the batch's true lengths",
    "encoder_sizes": "spec.size(m) -> EncoderSize(hidden, out): the LSTM sizes a method may build with",
    "single_modality": "the model builds with one modality (unimodal runs, ensemble members)",
}


def add_capability(name: str, description: str) -> None:
    """Declare a new capability (a plugin model offering something new to a plugin method)."""
    if name in CAPABILITIES and CAPABILITIES[name] != description:
        raise ValueError(f"capability {name!r} is declared already: {CAPABILITIES[name]}")
    CAPABILITIES[name] = description


@dataclass(frozen=True)
class EncoderSize:
    hidden: int
    out: int


@dataclass(frozen=True)
class ModelSpec:
    """What a model needs to know about a run: modalities, input widths, output width, its parameters.

    `num_classes` is the output width: K classes (classification) or 1 (regression). `sizes` holds the
    per-modality LSTM sizes of models that offer "encoder_sizes"; `params` the model's own parameters.
    """

    modalities: tuple[str, ...]
    input_dims: tuple[tuple[str, int], ...]
    sizes: tuple[tuple[str, EncoderSize], ...]
    num_classes: int
    params: tuple[tuple[str, Any], ...] = ()

    def input_dim(self, modality: str) -> int:
        return dict(self.input_dims)[modality]

    def size(self, modality: str) -> EncoderSize:
        return dict(self.sizes)[modality]

    @property
    def output_size(self) -> int:
        return self.num_classes

    def only(self, modality: str) -> ModelSpec:
        """The spec of the unimodal model for `modality`."""
        sizes = tuple((m, s) for m, s in self.sizes if m == modality)
        return dataclasses.replace(self, modalities=(modality,),
                                   input_dims=((modality, self.input_dim(modality)),), sizes=sizes)


@dataclass(frozen=True)
class NoModelParams:
    """A model without parameters."""


class Model:
    """Base class of a registered architecture (a factory: `build` returns the nn.Module)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoModelParams
    capabilities: ClassVar[frozenset[str]] = frozenset()
    description: ClassVar[str] = ""
    min_modalities: ClassVar[int] = 1
    max_modalities: ClassVar[int] = 3
    # The version of the architecture: part of every run id (RunConfig.code); bump it when a change alters
    # what an existing configuration builds or computes.
    version: ClassVar[int] = 1

    @classmethod
    def defaults(cls, recipe: str) -> dict[str, Any]:
        """Parameter values that depend on the dataset, by its recipe name ('mosi', 'mosei', 'generic', ...).
        Built-in models keep these in bench/recipes.toml ([<recipe>.models.<model>]); default: none."""
        return {}

    @classmethod
    def spec(cls, cfg: RunConfig, feature_dims: Mapping[str, int], output_size: int) -> ModelSpec:
        """The spec of a run: input widths from the data, the run's model parameters."""
        return ModelSpec(modalities=cfg.modalities,
                         input_dims=tuple((m, int(feature_dims[m])) for m in cfg.modalities),
                         sizes=(), num_classes=output_size, params=cfg.model_params)

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        raise NotImplementedError


# -- registry ---------------------------------------------------------------------------------------

REGISTRY: dict[str, type[Model]] = {}


def register(cls: type[Model]) -> type[Model]:
    """Class decorator: make a model available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    unknown = sorted(set(cls.capabilities) - set(CAPABILITIES))
    if unknown:
        raise ValueError(f"model {cls.name!r} declares unknown capabilities {unknown}")
    return registry.add(REGISTRY, cls, "model")


def model_class(name: str) -> type[Model]:
    """The registered model `name`; an unknown name lists the registered ones."""
    return registry.lookup(REGISTRY, name, "model")


def check_model_params(name: str, params: Mapping[str, Any]) -> Any:
    """The model's Params instance; unknown or bad values are ConfigErrors listing the known names."""
    cls = model_class(name)
    known = {f.name for f in dataclasses.fields(cls.Params)}
    unknown = sorted(set(params) - known)
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"unknown parameter(s) {', '.join(unknown)} for model {name!r}; it takes: {listed}")
    kinds = {f.name: str(f.type) for f in dataclasses.fields(cls.Params)}
    # typed like a method's parameters: text_hidden=64.5 or =true is refused, not truncated to 64 or 1
    values = {key: check_typed(f"model {name!r}", key, kinds[key], value) for key, value in params.items()}
    try:
        return cls.Params(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad parameters for model {name!r}: {err}") from err


def model_spec(cfg: RunConfig, feature_dims: Mapping[str, int], num_classes: int) -> ModelSpec:
    """The spec of a run's model; `num_classes` is the output width (1 for regression)."""
    return model_class(cfg.model).spec(cfg, feature_dims, num_classes)


def behaves_the_same_in_train_and_eval(model: nn.Module) -> bool:
    """True when no layer changes with train/eval mode (no active dropout, no batch statistics)."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            return False
        if isinstance(module, nn.modules.batchnorm._NormBase):
            return False
        if isinstance(module, nn.RNNBase) and module.dropout > 0 and module.num_layers > 1:
            return False
    return True


def default_param_groups(model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
    """One group per encoder and one for the rest ('head'), each at its cfg.group_lrs rate or cfg.lr."""
    rates = dict(cfg.group_lrs)
    groups: list[dict[str, Any]] = []
    seen: set[int] = set()
    encoders = getattr(model, "encoders", {})
    for modality, encoder in encoders.items():
        params = [p for p in encoder.parameters() if p.requires_grad]
        seen.update(id(p) for p in params)
        groups.append({"name": modality, "params": params, "lr": rates.get(modality, cfg.lr)})
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in seen]
    if rest:
        groups.append({"name": "head", "params": rest, "lr": rates.get("head", cfg.lr)})
    return [g for g in groups if g["params"]]


def require_modalities(model: str, spec: ModelSpec, needed: tuple[str, ...]) -> None:
    """ConfigError unless the spec holds exactly `needed` (a model built for fixed modalities)."""
    if set(spec.modalities) != set(needed):
        raise ConfigError(f"model {model!r} needs {', '.join(needed)}, got {', '.join(spec.modalities)}")


# -- sequence helpers the models share ---------------------------------------------------------------


def padding_mask(lengths: Tensor, steps: int, device: torch.device) -> Tensor:
    """True at padded positions: (B, steps) bool, position t padded when t >= length (a zero length keeps
    step 0, so no sample is all padding)."""
    positions = torch.arange(steps, device=device)  # (T,)
    return positions[None, :] >= lengths.to(device).clamp(min=1)[:, None]


def masked_mean(x: Tensor, pad: Tensor) -> Tensor:
    """Mean over the unpadded steps: x (B, T, D), pad (B, T) bool -> (B, D)."""
    keep = (~pad).to(x.dtype)[:, :, None]  # (B, T, 1)
    return (x * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1.0)
