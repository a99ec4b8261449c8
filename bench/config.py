"""Run configuration: one frozen RunConfig per training run, its run id, and the data profiles.

Every field that changes a result lives here; the run id is a hash of all of them. Two fields are
resolved when a config is made, so the id covers what the run really uses, not only what was typed:
`method_params` holds every parameter of the method (its Params defaults filled in), and `label_rule`
the class-label rule of the dataset's family (MOSEI: "binned" unless "round" is asked for).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
"""Canonical modality order: the fused vector is concatenated in this order."""

# Version of the run-id scheme, stored in every result row (`id_scheme`). 2: the id covers the label
# rule and every resolved method parameter; 3: also the task, the model and their resolved parameters.
# Rows without the column were written by scheme 1.
RUN_ID_SCHEME = 3

OPTIMIZERS = ("adam", "sgd")
# RunConfig fields held as sorted (name, value) pairs.
PAIR_FIELDS = ("method_params", "task_params", "model_params", "group_lrs")
PROFILES = ("smoke", "quick", "full")
SCHEDULERS = ("plateau", "none")


class ConfigError(ValueError):
    """A configuration that cannot be run: unknown option, impossible combination, bad value."""


@dataclass(frozen=True)
class Profile:
    """How much work a profile does: the epochs cap (data sizes live in bench.data)."""

    name: str
    max_epochs: int


PROFILE_SETTINGS: dict[str, Profile] = {
    "smoke": Profile("smoke", max_epochs=2),
    "quick": Profile("quick", max_epochs=12),
    "full": Profile("full", max_epochs=100),
}


def dataset_family(dataset: str) -> str:
    """'mosi' or 'mosei' for the named datasets (real, surrogate or a surrogate's twin: its "like"),
    'custom' for a path."""
    from bench.data.surrogates import REAL_NAMES, surrogate

    entry = surrogate(dataset)
    if entry is not None:
        return entry.like
    return dataset if dataset in REAL_NAMES else "custom"


def dataset_defaults(dataset: str) -> dict[str, Any]:
    """Thesis defaults that depend on the dataset (6.2.5): batch size and scheduler patience."""
    if dataset_family(dataset) == "mosei":
        return {"batch_size": 32, "lr_patience": 20}
    return {"batch_size": 16, "lr_patience": 5}


def canonical_modalities(modalities: Iterable[str] | str) -> tuple[str, ...]:
    """Parse 'text,vision' / 'audio+vision' / a sequence into canonical order; reject unknown names."""
    if isinstance(modalities, str):
        parts = [p.strip() for p in modalities.replace("+", ",").split(",") if p.strip()]
    else:
        parts = [str(p).strip() for p in modalities]
    aliases = {"video": "vision", "v": "vision", "a": "audio", "t": "text", "l": "text"}
    parts = [aliases.get(p.lower(), p.lower()) for p in parts]
    unknown = [p for p in parts if p not in MODALITIES]
    if unknown:
        raise ConfigError(f"unknown modality {unknown[0]!r}; choose from {', '.join(MODALITIES)}")
    if not parts:
        raise ConfigError("no modality given; choose from " + ", ".join(MODALITIES))
    if len(set(parts)) != len(parts):
        raise ConfigError(f"modality listed twice in {modalities!r}")
    return tuple(m for m in MODALITIES if m in parts)


def modality_key(modalities: Iterable[str]) -> str:
    """Thesis-style key: 'audio+vision', 'text+vision', 'audio+vision+text'."""
    order = ("audio", "vision", "text")
    mods = set(modalities)
    if mods == {"text", "vision"}:
        return "text+vision"  # the thesis's own spelling; no single order gives all three keys
    return "+".join(m for m in order if m in mods)


@dataclass(frozen=True)
class RunConfig:
    """Everything that changes the result of one training run."""

    dataset: str = "synth-mosi"
    # How class labels are made from the scores (bench.data.labels): "sign" (MOSI, 3 classes),
    # "binned" ([133]'s bins) or "round" (MOSEI, 7 classes). "" = the family's default, filled in.
    label_rule: str = ""
    modalities: tuple[str, ...] = ("text", "vision")
    method: str = "concat"
    # Method hyper-parameters as sorted (name, value) pairs, validated against the method's Params.
    method_params: tuple[tuple[str, Any], ...] = ()
    # The task (bench.tasks): "classification" (the thesis's) or "regression" (MMSA's), and its options.
    task: str = "classification"
    task_params: tuple[tuple[str, Any], ...] = ()
    # The architecture (bench.models); "" = the method's default model, filled in. Its parameters are
    # resolved like the method's (late_fusion: table 6.1's sizes for the dataset family).
    model: str = ""
    model_params: tuple[tuple[str, Any], ...] = ()
    optimizer: str = "adam"
    lr: float = 5e-4
    # Optional per-group learning rates, e.g. (("audio", 1e-3), ("head", 5e-4)); others use `lr`.
    group_lrs: tuple[tuple[str, float], ...] = ()
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 16
    step_every: int = 1
    max_epochs: int = 12
    early_stopping: bool = True
    patience: int = 8
    scheduler: str = "plateau"
    lr_factor: float = 0.1
    lr_patience: int = 5
    dev_set: bool = False
    ratio_every: int = 1
    # Modulation window in epochs, inclusive, counted from 0; (0, -1) means "every epoch".
    window_start: int = 0
    window_end: int = 4
    seed: int = 0
    profile: str = "quick"
    # Fingerprint of the data the run is meant for (bench.data.data_fingerprint); part of the run id, so
    # a recalibrated surrogate or a changed data file never reuses stored results. "" = not pinned.
    data_version: str = ""
    # Test-time evaluations of the best checkpoint (bench.train), stored apart from the result row
    # (bench.store, evaluations/): Gaussian noise of these standard deviations on every modality's
    # features, and the test split of another dataset (out of domain). Left out of the run id at their
    # defaults, so every configuration without them keeps its id.
    test_noise: tuple[float, ...] = ()
    test_dataset: str = ""

    def __post_init__(self) -> None:
        if not self.label_rule:
            object.__setattr__(self, "label_rule", default_label_rule(self.dataset))
        object.__setattr__(self, "method_params", resolved_method_params(self.method, self.method_params))
        if not self.model:
            object.__setattr__(self, "model", default_model(self.method))
        object.__setattr__(self, "model_params", resolved_model_params(self.model, self.dataset, self.model_params))
        object.__setattr__(self, "task_params", resolved_task_params(self.task, self.task_params))
        object.__setattr__(self, "test_noise", noise_levels(self.test_noise))
        object.__setattr__(self, "test_dataset", str(self.test_dataset or "").strip())
        _check_basic(self)

    # -- identity -----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-able dict of every field (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=_json_default))

    def identity(self) -> dict[str, Any]:
        """What the run id hashes: every field, except the OPTIONAL_ID_FIELDS left at their defaults."""
        values = self.to_dict()
        for name, default in OPTIONAL_ID_FIELDS.items():
            if values.get(name) == default:
                values.pop(name, None)
        return values

    @property
    def run_id(self) -> str:
        """Stable 16-hex-digit hash of every field (optional fields only when set)."""
        payload = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.method_params)

    @property
    def family(self) -> str:
        return dataset_family(self.dataset)

    def in_window(self, epoch: int) -> bool:
        """Whether modulation is active in this (0-based) epoch."""
        end = self.max_epochs - 1 if self.window_end < 0 else self.window_end
        return self.window_start <= epoch <= end

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Inverse of to_dict; unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown RunConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        if "modalities" in values:
            values["modalities"] = canonical_modalities(values["modalities"])
        for key in PAIR_FIELDS:
            if key in values and values[key] is not None:
                values[key] = _pairs(values[key])
        if "test_noise" in values:
            values["test_noise"] = noise_levels(values["test_noise"])
        return cls(**values)


# Fields added after the run-id scheme was fixed: hashed only when not at these (to_dict) defaults, so the
# ids of every configuration that does not use them stay what they were.
OPTIONAL_ID_FIELDS: dict[str, Any] = {"test_noise": [], "test_dataset": ""}


def noise_levels(value: Iterable[float] | str | float | None) -> tuple[float, ...]:
    """'0.1,0.5' / [0.1, 0.5] / 0.1 -> (0.1, 0.5): floats, each once, in the order given; >= 0 and finite."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        parts: list[Any] = [p.strip() for p in value.split(",") if p.strip()]
    elif isinstance(value, (int, float)):
        parts = [value]
    else:
        parts = list(value)
    try:
        sigmas = [float(p) for p in parts]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"test noise levels must be numbers, got {value!r}") from err
    bad = [s for s in sigmas if not s >= 0 or s == float("inf")]
    if bad:
        raise ConfigError(f"test noise levels must be finite and >= 0, got {bad[0]}")
    return tuple(dict.fromkeys(sigmas))


def label_family(dataset: str) -> str:
    """The label family of a dataset name: 'mosi' / 'mosei', a path by its name ('mosei' in it -> 'mosei')."""
    from bench.data.labels import family_for_path

    family = dataset_family(dataset)
    return family if family != "custom" else family_for_path(dataset)


def default_label_rule(dataset: str) -> str:
    """The label rule a dataset uses unless a run asks for another."""
    from bench.data.labels import default_rule

    return default_rule(label_family(dataset))


def resolved_method_params(method: str, given: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """`given` with every other parameter of the registered method at its default, as sorted pairs.

    Ints given for float parameters become floats, so `alpha=1` and `alpha=1.0` are one run. Unknown
    names are kept (validation reports them); an unregistered method keeps `given` as it is.
    """
    import bench.methods  # noqa: F401  (registers the built-in methods)
    from bench.methods.base import REGISTRY
    from bench.params import as_stored

    pairs = dict(given)
    cls = REGISTRY.get(method)
    if cls is None:
        return _pairs(pairs)
    resolved: dict[str, Any] = {}
    for f in dataclasses.fields(cls.Params):
        if f.name in pairs:
            resolved[f.name] = as_stored(str(f.type), pairs[f.name])
        elif f.default is not dataclasses.MISSING:
            resolved[f.name] = f.default
    resolved.update({k: v for k, v in pairs.items() if k not in resolved})
    return _pairs(resolved)


def default_model(method: str) -> str:
    """The model a method runs on unless a run names another (late_fusion for an unregistered method)."""
    import bench.methods  # noqa: F401  (registers the built-in methods)
    from bench.methods.base import REGISTRY

    cls = REGISTRY.get(method)
    return cls.default_model if cls is not None else "late_fusion"


def resolved_model_params(model: str, dataset: str, given: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """`given` over the model's dataset-family defaults over its Params defaults, as sorted pairs."""
    from bench.models import resolve_model_params
    from bench.params import as_stored

    pairs = dict(given)
    resolved = resolve_model_params(model, dataset_family(dataset), pairs)
    types = _param_types("model", model)
    return _pairs({k: as_stored(types[k], v) if k in types and k in pairs else v for k, v in resolved.items()})


def resolved_task_params(task: str, given: Iterable[tuple[str, Any]]) -> tuple[tuple[str, Any], ...]:
    """`given` with every other option of the task at its default, as sorted pairs."""
    from bench.tasks import default_task_params

    return _pairs({**default_task_params(task), **dict(given)})


def _param_types(kind: str, name: str) -> dict[str, str]:
    """Field name -> annotation text of a registered model's Params ({} when unknown)."""
    from bench.models import REGISTRY

    cls = REGISTRY.get(name) if kind == "model" else None
    return {f.name: str(f.type) for f in dataclasses.fields(cls.Params)} if cls is not None else {}


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {value!r}")


def _pairs(value: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, Mapping):
        items = value.items()
    else:
        items = [tuple(p) for p in value]
    return tuple(sorted((str(k), _freeze(v)) for k, v in items))


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _check_basic(cfg: RunConfig) -> None:
    """Field-level checks that need no registry or data (method checks live in bench.methods)."""
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if cfg.profile not in PROFILES:
        raise ConfigError(f"unknown profile {cfg.profile!r}; choose from {', '.join(PROFILES)}")
    from bench.data.labels import check_rule
    from bench.data.types import DataError

    try:
        check_rule(label_family(cfg.dataset), cfg.label_rule)
    except DataError as err:
        raise ConfigError(f"{cfg.dataset}: {err}") from err
    if cfg.scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {cfg.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    if tuple(canonical_modalities(cfg.modalities)) != tuple(cfg.modalities):
        raise ConfigError(f"modalities must be in canonical order {MODALITIES}, got {cfg.modalities}")
    positive = {"batch_size": cfg.batch_size, "step_every": cfg.step_every,
                "max_epochs": cfg.max_epochs, "ratio_every": cfg.ratio_every}
    for name, value in positive.items():
        if int(value) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if cfg.lr <= 0 or any(lr <= 0 for _, lr in cfg.group_lrs):
        raise ConfigError("learning rates must be > 0")
    groups = {g for g, _ in cfg.group_lrs}
    bad_groups = groups - set(cfg.modalities) - {"head"}
    if bad_groups:
        raise ConfigError(f"group_lrs names {sorted(bad_groups)}, not a modality of this run nor 'head'")
    if cfg.window_start < 0:
        raise ConfigError("window_start must be >= 0")
    if cfg.window_end >= 0 and cfg.window_end < cfg.window_start:
        raise ConfigError(f"modulation window [{cfg.window_start}, {cfg.window_end}] is empty")
    if cfg.window_start > cfg.max_epochs - 1:
        raise ConfigError(
            f"modulation window starts at epoch {cfg.window_start}, beyond the epochs cap "
            f"({cfg.max_epochs} epochs: 0..{cfg.max_epochs - 1})"
        )


def make_config(dataset: str = "synth-mosi", profile: str = "quick", **fields: Any) -> RunConfig:
    """A RunConfig with the thesis defaults for this dataset and profile, then `fields` on top."""
    names = {f.name for f in dataclasses.fields(RunConfig)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise ConfigError(f"unknown option(s): {', '.join(unknown)}")
    if profile not in PROFILE_SETTINGS:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    values: dict[str, Any] = {"dataset": dataset, "profile": profile,
                              "max_epochs": PROFILE_SETTINGS[profile].max_epochs}
    values.update(dataset_defaults(dataset))
    values.update(fields)
    if "modalities" in values:
        values["modalities"] = canonical_modalities(values["modalities"])
    for key in PAIR_FIELDS:
        if key in values:
            values[key] = _pairs(values[key])
    # A window given past the cap is an error, but the default window is clipped to short profiles.
    if "window_end" not in fields and values.get("window_end", 4) >= values["max_epochs"]:
        values["window_end"] = values["max_epochs"] - 1
    return RunConfig(**values)
