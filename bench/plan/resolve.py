"""The planning chain: what a user asked for -> a resolved RunConfig, and which layer set each field.

One chain serves `bench run`, presets, grid files, the API and perf. Its layers, lowest first:

    default          RunConfig's field defaults and the registered parts' Params defaults
    profile          the profile's epochs cap (smoke 2, quick 12, full 100)
    dataset recipe   the dataset's block of bench/recipes.toml: batch size, scheduler patience, SGD lr,
                     model sizes (table 6.1); a dataset without a block gets the named `generic` block
    method recipe    what the method's file declares (thesis params, window, scheduler, its own SGD lr, a
                     tuned lr, full-profile epochs, its paper's fields)
    configuration    the thesis configuration label (step_every_4, dev_set, ema_prototypes, ...)
    user             what the caller passed (flags, grid-file keys, API keywords)

A later layer wins. Three fields are derived after the layers: the modulation window is clipped to the
epochs (unless the user set it), and the resolved values that the registries fill in where nothing set
them (the label rule, every method / model / task parameter, the method's default model). `explain`
prints the table of fields, values and layers (`bench run --explain`, `bench grid --explain`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.config import (
    OPTIMIZERS,
    PAIR_FIELDS,
    PROFILE_SETTINGS,
    PROFILES,
    ConfigError,
    RunConfig,
    as_pairs,
    canonical_modalities,
)
from bench.data import DataError, data_fingerprint
from bench.data.registry import is_synthetic
from bench.params import as_stored
from bench.plan.datasets import check_label_rule, dataset_modalities, default_label_rule, recipe_key
from bench.plugins import stamp
from bench.recipes import Recipe, recipe

if TYPE_CHECKING:
    from bench.methods.base import Method

DEFAULT = "default"
PROFILE = "profile"
DATASET = "dataset recipe"
METHOD = "method recipe"
LABEL = "configuration"
USER = "user"
RESOLVED = "resolved"

ADAM_LR = 5e-4  # the shared recipe: Adam 5e-4 on every dataset (thesis 6.2.5)
SGD_MOMENTUM = 0.9
LONG_RUN_EPOCHS = 100  # table 6.5b

# Configurations under which a baseline (Method.is_baseline) is the standard one (bench.presets docstring).
BASELINE_AS_STANDARD = ("dev_set", "ema_prototypes", "modulate_first_5_epochs", "lr_8e-5_long_patience")
CONFIG_LABELS = ("standard", "step_every_4", "dev_set", "ema_prototypes", "modulate_first_5_epochs",
                 "modulate_all_epochs", "lr_8e-5_long_patience", "100_epochs_no_early_stop_dev_set")
ON_MODEL = "on_"  # configuration label prefix: "on_feada" runs the row's method on the model `feada`


@dataclass
class Chain:
    """Field values as the layers set them, with the layer (and its name) that set each one last."""

    values: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)

    def set(self, layer: str, **fields: Any) -> None:
        for name, value in fields.items():
            self.values[name] = value
            self.origins[name] = layer

    def set_params(self, layer: str, kind: str, params: Mapping[str, Any]) -> None:
        """Parameters of a method / model / task, key by key over those already set."""
        merged = dict(self.values.get(kind) or {})
        for name, value in params.items():
            merged[name] = value
            self.origins[f"{kind}.{name}"] = layer
        self.values[kind] = merged


@dataclass(frozen=True)
class Planned:
    """A resolved config and, per field (and per parameter: 'method_params.alpha'), the layer that set it."""

    config: RunConfig
    origins: Mapping[str, str]

    def explain(self) -> str:
        return explain(self)


# -- the dataset and the method's declarations -----------------------------------------------------

def dataset_recipe(dataset: str) -> Recipe:
    """The recipe block a dataset runs on (its own, else the generic one, named so)."""
    return recipe(recipe_key(dataset))


def _recipe_layer(block: Recipe) -> str:
    return f"{DATASET} ({block.name}{', none for ' + block.asked if block.is_generic else ''})"


def declared(method: str) -> type[Method]:
    """The registered class of `method` (its declarations), `Method`'s defaults for an unknown name."""
    from bench.methods import method_class

    return method_class(method)


def optimizer_lr(method: str, optimizer: str, block: Recipe) -> float:
    """The shared recipe's learning rate: Adam 5e-4; SGD the method's own rate, else the dataset's."""
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if optimizer == "adam":
        return ADAM_LR
    own_lr = declared(method).thesis.sgd_lr
    return own_lr if own_lr is not None else float(block.get("sgd_lr"))


def label_fields(label: str, method: str) -> dict[str, Any]:
    """What a thesis configuration label changes, on top of the standard configuration."""
    cls = declared(method)
    if (cls.is_baseline and label in BASELINE_AS_STANDARD) or label in ("standard", "modulate_first_5_epochs"):
        return {}
    if label == "step_every_4":
        return {"step_every": 4}
    if label == "dev_set":
        return {"dev_set": True, "ratio_every": cls.thesis.dev_ratio_every}
    if label == "ema_prototypes":
        return {"params": {"ema": 0.1}}
    if label == "modulate_all_epochs":
        return {"window": (0, -1)}
    if label == "lr_8e-5_long_patience":
        # Thesis 6.5a: lower lr and "increased" patience (values not printed: 16 / 10 assumed).
        return {"lr": 8e-5, "patience": 16, "lr_patience": 10}
    if label == "100_epochs_no_early_stop_dev_set":
        fields: dict[str, Any] = {"lr": 8e-5, "epochs": LONG_RUN_EPOCHS, "early_stopping": False,
                                  "window": (0, 49)}
        if cls.has_dev_set_variant:
            fields.update(dev_set=True, ratio_every=5)
        return fields
    if label in cls.variants:  # the method's own ablations (Method.variants)
        return {"params": dict(cls.variants[label])}
    if label.startswith(ON_MODEL):  # "on_<model>": the method on another registered model
        return {"model": _registered_model(label.removeprefix(ON_MODEL))}
    raise ConfigError(f"unknown configuration label {label!r} for {method!r}; choose from "
                      f"{', '.join((*CONFIG_LABELS, *cls.variants))}, or on_<model>")


def _registered_model(name: str) -> str:
    from bench.models import REGISTRY as MODELS

    if name not in MODELS:
        raise ConfigError(f"configuration label on_{name}: no model {name!r}; choose from {', '.join(sorted(MODELS))}")
    return name


def _epochs(method: str, profile: str, wanted: int | None = None) -> int:
    """Epochs cap: the profile's (at full, the method's `thesis.full_epochs`), never above what a row asks for."""
    cap = PROFILE_SETTINGS[profile].max_epochs
    full_epochs = declared(method).thesis.full_epochs
    if full_epochs is not None and profile == "full":
        cap = full_epochs
    return cap if wanted is None else min(wanted, cap)


def _check_profile(profile: str) -> None:
    if profile not in PROFILE_SETTINGS:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")


# -- the chain --------------------------------------------------------------------------------------

def plan(dataset: str, method: str, modalities: Iterable[str] | str, *, profile: str = "quick",
         optimizer: str = "adam", config_label: str = "standard", seed: int = 0, **overrides: Any) -> Planned:
    """The resolved config of one cell and seed, and the layer that set each field.

    `overrides` are RunConfig fields from the user; `method_params`, `task_params` and `model_params` go over
    the recipe's key by key; `window=(a, b)` sets both window fields. Recipe windows are clipped to the
    epochs; a user's window is not.
    """
    _check_profile(profile)
    overrides = dict(overrides)
    mods = canonical_modalities(modalities, dataset_modalities(dataset))
    block = dataset_recipe(dataset)
    cls = declared(method)
    label = label_fields(config_label, method)
    chain = _base_chain(dataset, profile, block)
    label_layer = f"{LABEL} ({config_label})"
    method_layer = f"{METHOD} ({method})"
    chain.set(USER, modalities=mods, method=method, seed=int(seed), optimizer=optimizer)
    paper = dict(cls.paper_fields(block.name, profile))
    chain.set_params(method_layer, "method_params", cls.thesis_params(tuple(mods)))
    # the paper's parameters: over the thesis's, under a label's and the user's
    chain.set_params(method_layer, "method_params", dict(paper.pop("method_params", None) or {}))
    chain.set_params(label_layer, "method_params", label.pop("params", {}))
    chain.set_params(USER, "method_params", dict(overrides.pop("method_params", None) or {}))
    _optimizer_layers(chain, method, optimizer, block, method_layer)
    if cls.thesis.scheduler is not None:
        chain.set(method_layer, scheduler=cls.thesis.scheduler)
    tuned_lr = cls.thesis_lr(block.name, mods, optimizer, label.get("step_every", 1))
    if tuned_lr is not None:
        chain.set(method_layer, lr=tuned_lr)
    window = label.pop("window", None)
    window_layer = label_layer if window is not None else method_layer
    window = window if window is not None else cls.thesis.window
    epochs_layer = label_layer if "epochs" in label else (method_layer if (
        profile == "full" and cls.thesis.full_epochs is not None) else f"{PROFILE} ({profile})")
    chain.set(epochs_layer, max_epochs=_epochs(method, profile, label.pop("epochs", None)))
    _apply_fields(chain, method_layer, paper)
    _apply_fields(chain, label_layer, label)
    if window is not None:
        end = window[1] if window[1] < 0 else min(window[1], chain.values["max_epochs"] - 1)
        chain.set(window_layer, window_start=window[0], window_end=end)
    _user_layer(chain, overrides)
    return _finish(chain, dataset)


def _base_chain(dataset: str, profile: str, block: Recipe) -> Chain:
    """The defaults, the profile and the dataset recipe's run fields."""
    chain = Chain()
    defaults = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    chain.set(DEFAULT, **defaults)
    chain.set(USER, dataset=dataset, profile=profile)
    chain.set(f"{PROFILE} ({profile})", max_epochs=PROFILE_SETTINGS[profile].max_epochs)
    chain.set(_recipe_layer(block), batch_size=int(block.get("batch_size")),
              lr_patience=int(block.get("lr_patience")))
    chain.set(f"{DATASET} (data fingerprint)", data_version=data_version(dataset, profile))
    return chain


def _optimizer_layers(chain: Chain, method: str, optimizer: str, block: Recipe, method_layer: str) -> None:
    lr = optimizer_lr(method, optimizer, block)
    own_sgd = optimizer == "sgd" and declared(method).thesis.sgd_lr is not None
    chain.set(method_layer if own_sgd else _recipe_layer(block), lr=lr)
    if optimizer == "sgd":
        chain.set(_recipe_layer(block), momentum=SGD_MOMENTUM)


def _apply_fields(chain: Chain, layer: str, fields: Mapping[str, Any]) -> None:
    """RunConfig fields of a layer; its task / model parameters go over the ones set, key by key."""
    for name, value in fields.items():
        if name in ("task_params", "model_params", "method_params"):
            chain.set_params(layer, name, dict(value or {}))
        else:
            chain.set(layer, **{name: value})


def _user_layer(chain: Chain, overrides: dict[str, Any]) -> None:
    """The caller's fields: an explicit window; an epochs cap below the window clips it; the rest on top."""
    explicit_window = overrides.pop("window", None)
    if explicit_window is not None:
        chain.set(USER, window_start=int(explicit_window[0]), window_end=int(explicit_window[1]))
    if "max_epochs" in overrides and "window_end" not in overrides and explicit_window is None:
        if chain.values["window_end"] >= int(overrides["max_epochs"]):
            chain.set(USER, window_end=int(overrides["max_epochs"]) - 1)
    _apply_fields(chain, USER, overrides)


def data_version(dataset: str, profile: str) -> str:
    """The data fingerprint a config pins ("" when the data cannot be found yet: training then fails with the
    data layer's own message). A file's is asked each time: the file or its spec file may have changed."""
    if is_synthetic(dataset):
        return _generated_data_version(dataset, profile)
    try:
        return data_fingerprint(dataset, profile)
    except (DataError, OSError):
        return ""


@functools.lru_cache(maxsize=32)
def _generated_data_version(dataset: str, profile: str) -> str:
    """A surrogate's fingerprint: a hash of its generator's parameters, fixed for a process."""
    return data_fingerprint(dataset, profile)


def make_config(dataset: str = "synth-mosi", profile: str = "quick", **fields: Any) -> RunConfig:
    """A RunConfig from the profile, the dataset recipe and `fields` (no method recipe), resolved."""
    return plan_fields(dataset, profile, **fields).config


def plan_fields(dataset: str = "synth-mosi", profile: str = "quick", **fields: Any) -> Planned:
    """`make_config` with the layer of every field."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    _check_profile(profile)
    chain = Chain()
    chain.set(DEFAULT, **{f.name: f.default for f in dataclasses.fields(RunConfig)})
    chain.set(USER, dataset=dataset, profile=profile)
    chain.set(f"{PROFILE} ({profile})", max_epochs=PROFILE_SETTINGS[profile].max_epochs)
    block = dataset_recipe(dataset)
    chain.set(_recipe_layer(block), batch_size=int(block.get("batch_size")),
              lr_patience=int(block.get("lr_patience")))
    for name, value in fields.items():
        if name in PAIR_FIELDS and name != "group_lrs":
            chain.set_params(USER, name, dict(as_pairs(value)))
        else:
            chain.set(USER, **{name: value})
    return _finish(chain, dataset)


# -- resolution: what the registries fill in --------------------------------------------------------

def _finish(chain: Chain, dataset: str) -> Planned:
    """Clip the default window, resolve what is left open, and build the config."""
    values = chain.values
    # A window nobody set is clipped to short profiles; a window given past the cap is an error (RunConfig).
    if chain.origins["window_end"] == DEFAULT and values["window_end"] >= values["max_epochs"]:
        chain.set(chain.origins["max_epochs"], window_end=values["max_epochs"] - 1)
    values["modalities"] = canonical_modalities(values["modalities"], dataset_modalities(dataset))
    if not values.get("label_rule"):
        chain.set(f"{RESOLVED} (the dataset's default)", label_rule=default_label_rule(dataset))
    check_label_rule(dataset, values["label_rule"])
    if not values.get("model"):
        chain.set(f"{RESOLVED} (the method's default)", model=default_model(values["method"]))
    own_task = method_own_task(values["method"])
    if chain.origins.get("task") == DEFAULT and own_task and own_task != values["task"]:
        chain.set(f"{RESOLVED} (the method's only task)", task=own_task)
    _resolve_params(chain, dataset)
    for key in PAIR_FIELDS:
        values[key] = as_pairs(values.get(key) or {})
    values["code"] = ()
    config = stamp(RunConfig(**values))  # the code it is planned for: part of its run id
    for part in dict(config.code):
        chain.origins[f"code.{part}"] = f"{RESOLVED} (the loaded code: version, plugin file)"
    planned = Planned(config, dict(chain.origins))
    _remember(planned)
    return planned


# The origins of recently planned configs by run id, so a caller holding only configs (a grid's cells) can
# explain them (`bench grid --explain`) without planning again.
_PLANNED: dict[str, Planned] = {}
_REMEMBERED = 8192


def _remember(planned: Planned) -> None:
    if len(_PLANNED) >= _REMEMBERED:
        _PLANNED.pop(next(iter(_PLANNED)))
    _PLANNED[planned.config.run_id] = planned


def planned_for(config: RunConfig) -> Planned:
    """How `config` was planned in this process; a config made otherwise (decoded from the store) is
    explained as the user's throughout."""
    known = _PLANNED.get(config.run_id)
    return known if known is not None else Planned(config, {})


def _resolve_params(chain: Chain, dataset: str) -> None:
    values = chain.values
    given = dict(values.get("method_params") or {})
    values["method_params"] = resolved_method_params(values["method"], given)
    for name in dict(values["method_params"]):
        chain.origins.setdefault(f"method_params.{name}", DEFAULT)
    given_model = dict(values.get("model_params") or {})
    block = dataset_recipe(dataset)
    model_values = resolved_model_params(values["model"], block, given_model)
    for name in model_values:
        if name not in given_model:
            from_recipe = name in block.model(values["model"])
            chain.origins[f"model_params.{name}"] = _recipe_layer(block) if from_recipe else DEFAULT
    values["model_params"] = model_values
    given_task = dict(values.get("task_params") or {})
    values["task_params"] = resolved_task_params(values["task"], given_task)
    for name in values["task_params"]:
        chain.origins.setdefault(f"task_params.{name}", DEFAULT)


def resolved_method_params(method: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` with every other parameter of the registered method at its default.

    Ints given for float parameters become floats, so `alpha=1` and `alpha=1.0` are one run. Unknown
    names are kept (validation reports them); an unregistered method keeps `given` as it is.
    """
    from bench.methods.base import REGISTRY

    cls = REGISTRY.get(method)
    if cls is None:
        return dict(given)
    resolved: dict[str, Any] = {}
    for f in dataclasses.fields(cls.Params):
        if f.name in given:
            resolved[f.name] = as_stored(str(f.type), given[f.name])
        elif f.default is not dataclasses.MISSING:
            resolved[f.name] = f.default
    resolved.update({k: v for k, v in given.items() if k not in resolved})
    return resolved


def method_own_task(method: str) -> str | None:
    """The task a method with one task runs when none is given (feada, sati: regression); else None."""
    from bench.methods.base import REGISTRY

    cls = REGISTRY.get(method)
    return cls.tasks[0] if cls is not None and len(cls.tasks) == 1 else None


def default_model(method: str) -> str:
    """The model a method runs on unless a run names another (late_fusion for an unregistered method)."""
    from bench.methods.base import REGISTRY

    cls = REGISTRY.get(method)
    return cls.default_model if cls is not None else "late_fusion"


def resolved_model_params(model: str, block: Recipe, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` over the recipe's values over the model's Params defaults (ints as floats for float fields)."""
    from bench.models import REGISTRY

    cls = REGISTRY.get(model)
    if cls is None:
        return dict(given)
    types = {f.name: str(f.type) for f in dataclasses.fields(cls.Params)}
    resolved = {f.name: f.default for f in dataclasses.fields(cls.Params) if f.default is not dataclasses.MISSING}
    resolved.update({k: v for k, v in block.model(model).items() if k in types})
    resolved.update(cls.defaults(block.name))
    resolved.update({k: as_stored(types[k], v) if k in types else v for k, v in given.items()})
    return resolved


def resolved_task_params(task: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` with every other option of the task at its default."""
    from bench.tasks import default_task_params

    return {**default_task_params(task), **dict(given)}


# -- explaining -------------------------------------------------------------------------------------

def explain(planned: Planned) -> str:
    """One line per field (and per parameter): its value and the layer that set it."""
    values = planned.config.to_dict()
    lines = []
    for name, value in values.items():
        if name in PAIR_FIELDS and name != "group_lrs":
            for key, item in dict(value).items():
                lines.append((f"{name}.{key}", item, planned.origins.get(f"{name}.{key}", DEFAULT)))
            continue
        lines.append((name, value, planned.origins.get(name, DEFAULT)))
    width = max(len(n) for n, _, _ in lines)
    shown = [f"{n:<{width}}  {_shown(v):<24}  {layer}" for n, v, layer in lines]
    return "\n".join([f"{'field':<{width}}  {'value':<24}  set by", *shown])


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 24 else text[:21] + "..."
