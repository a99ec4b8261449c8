"""Run configuration: one frozen RunConfig per training run, its run id, and the data profiles.

The ground floor of bench: this module imports nothing else from bench (and no torch). Every field that
changes a result lives in RunConfig; the run id is a hash of all of them. RunConfig is a plain value: it
holds fields, converts to and from a dict and hashes itself, and it never resolves anything. The planning
chain (bench.plan.resolve) fills in what a user left open before a config is made, so the id covers what the
run really uses: `method_params` holds every parameter of the method, `label_rule` the rule in force, `model`
and `model_params` / `task_params` every resolved value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MODALITIES: tuple[str, ...] = ("text", "audio", "vision")
"""The MSA datasets' modalities in canonical order (the fused vector is concatenated in this order); a
dataset may declare other names (bench.data.spec)."""

# Version of the run-id scheme, stored in every result row (`id_scheme`). 2: the id covers the label
# rule and every resolved method parameter; 3: also the task, the model and their resolved parameters.
# 4: also the code: each part's declared `version` and, for a part a plugin file defines, that file's hash
# (the `code` field, filled in by the planner: bench.plugins.code_identity).
# Rows without the column were written by scheme 1.
RUN_ID_SCHEME = 4

OPTIMIZERS = ("adam", "sgd")
# RunConfig fields held as sorted (name, value) pairs.
PAIR_FIELDS = ("method_params", "task_params", "model_params", "group_lrs", "code")
PROFILES = ("smoke", "quick", "full")
SCHEDULERS = ("plateau", "none")


# The code identity of a config's parts (RunConfig.code), installed by bench.plugins, the layer that knows the
# registries; empty until it is imported.
CODE_IDENTITY: list[Callable[[RunConfig], tuple[tuple[str, str], ...]]] = []
CODE_PARTS = frozenset({"dataset", "method", "model", "task"})


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


ALIASES = {"video": "vision", "v": "vision", "a": "audio", "t": "text", "l": "text"}


def modality_names(modalities: Iterable[str] | str) -> list[str]:
    """'text,vision' / 'audio+vision' / a sequence -> the names as given (aliases of the three MSA names
    resolved, lower case); an empty list or a name given twice is a ConfigError."""
    if isinstance(modalities, str):
        parts = [p.strip() for p in modalities.replace("+", ",").split(",") if p.strip()]
    else:
        parts = [str(p).strip() for p in modalities]
    parts = [ALIASES.get(p.lower(), p.lower()) for p in parts]
    if not parts or any(not p for p in parts):
        raise ConfigError("no modality given; choose from " + ", ".join(MODALITIES) + " or a dataset's own names")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"modality listed twice in {modalities!r}")
    return parts


def canonical_modalities(modalities: Iterable[str] | str, order: Sequence[str] | None = None) -> tuple[str, ...]:
    """The modalities in canonical order: `order` (a dataset's declared names, which refuses any other
    name) or, without one, text, audio, vision first and any other names after them, sorted."""
    parts = modality_names(modalities)
    if order is not None:
        unknown = [p for p in parts if p not in order]
        if unknown:
            raise ConfigError(f"unknown modality {unknown[0]!r}; choose from {', '.join(order)}")
        return tuple(m for m in order if m in parts)
    return tuple(sorted(parts, key=_default_rank))


def _default_rank(name: str) -> tuple[int, str]:
    return (MODALITIES.index(name), "") if name in MODALITIES else (len(MODALITIES), name)


def modality_key(modalities: Iterable[str]) -> str:
    """Thesis-style key of a modality set, the store's `modalities` column: 'audio+vision', 'text+vision',
    'audio+vision+text'. A set with any other name is keyed by every name, sorted ('physio+text')."""
    mods = set(modalities)
    if not mods <= set(MODALITIES):
        return "+".join(sorted(mods))
    if mods == {"text", "vision"}:
        return "text+vision"  # the thesis's own spelling; no single order gives all three keys
    return "+".join(m for m in ("audio", "vision", "text") if m in mods)


@dataclass(frozen=True)
class RunConfig:
    """Everything that changes the result of one training run."""

    dataset: str = "synth-mosi"
    # How class labels are made from the scores (bench.data.labels): "sign" (MOSI, 3 classes),
    # "binned" ([133]'s bins) or "round" (MOSEI, 7 classes); the planner fills in the dataset's default.
    label_rule: str = ""
    modalities: tuple[str, ...] = ("text", "vision")
    method: str = "concat"
    # Method hyper-parameters as sorted (name, value) pairs, validated against the method's Params.
    method_params: tuple[tuple[str, Any], ...] = ()
    # The task (bench.tasks): "classification" (the thesis's) or "regression" (MMSA's), and its options.
    task: str = "classification"
    task_params: tuple[tuple[str, Any], ...] = ()
    # The architecture (bench.models); the planner fills in the method's default model and every parameter
    # (late_fusion: table 6.1's sizes from the dataset's recipe).
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
    # The code the run is meant for, as sorted (part, identity) pairs: ("method", "agm@1"), ("model",
    # "late_fusion@1"), ...; a part a plugin file defines adds the file's SHA-256 ("mmcosine@1+3f2a..."). The
    # planner fills it in (bench.plugins.code_identity) and the trainer refuses a run whose code has changed
    # since, so an edited plugin or a bumped version trains anew. () = not pinned (a config made by hand).
    code: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
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

    def in_window(self, epoch: int) -> bool:
        """Whether modulation is active in this (0-based) epoch."""
        end = self.max_epochs - 1 if self.window_end < 0 else self.window_end
        return self.window_start <= epoch <= end

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with `changes`; a pinned config whose dataset, method, model or task changes is pinned to
        the code of its new parts (CODE_IDENTITY), so a derived config never carries another part's code."""
        new = dataclasses.replace(self, **changes)
        if self.code and "code" not in changes and CODE_PARTS & set(changes) and CODE_IDENTITY:
            new = dataclasses.replace(new, code=CODE_IDENTITY[0](new))
        return new

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Inverse of to_dict (decodes; resolves nothing); unknown keys are errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown RunConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        if "modalities" in values:
            values["modalities"] = tuple(modality_names(values["modalities"]))
        for key in PAIR_FIELDS:
            if key in values and values[key] is not None:
                values[key] = as_pairs(values[key])
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
        if not parts and value.strip():  # "," is a typo, not "no noise"
            raise ConfigError(f"test noise levels must be numbers, got {value!r}")
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


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON-serialisable: {value!r}")


def as_pairs(value: Any) -> tuple[tuple[str, Any], ...]:
    if isinstance(value, Mapping):
        items = value.items()
    else:
        items = [tuple(p) for p in value]
    return tuple(sorted((str(k), _freeze(v)) for k, v in items))


def _freeze(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


# Seeds must fit the generators: torch's CPU generator and numpy use 32 bits, so seed 2**32 would repeat
# seed 0 under another run id (and 2**63 does not fit the store's int64 column).
SEED_LIMIT = 2**32


def non_finite(value: Any) -> float | None:
    """The first NaN or +-Infinity inside `value` (a number, or lists, tuples and dicts of them), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else value
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        for item in value:
            found = non_finite(item)
            if found is not None:
                return found
    return None


def check_seed(seed: Any) -> int:
    """`seed` when it is an integer in [0, 2**32); else a ConfigError."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ConfigError(f"seed must be an integer in [0, 2**32) = [0, {SEED_LIMIT - 1}], got {seed!r}")
    return seed


def _check_finite(cfg: RunConfig) -> None:
    """No NaN or +-Infinity in any field (range checks such as `x < 0` are False for NaN)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        named = [(f"{f.name}.{key}", item) for key, item in value] if f.name in PAIR_FIELDS else [(f.name, value)]
        for name, item in named:
            bad = non_finite(item)
            if bad is not None:
                raise ConfigError(f"{name} must be a finite number, got {bad}")


def _check_basic(cfg: RunConfig) -> None:
    """Field-level checks that need no registry or data (the planner checks the rest: bench.plan.resolve)."""
    _check_finite(cfg)
    check_seed(cfg.seed)
    if cfg.optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
    if cfg.profile not in PROFILES:
        raise ConfigError(f"unknown profile {cfg.profile!r}; choose from {', '.join(PROFILES)}")
    if cfg.scheduler not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {cfg.scheduler!r}; choose from {', '.join(SCHEDULERS)}")
    if not cfg.modalities or len(set(cfg.modalities)) != len(cfg.modalities):
        raise ConfigError(f"modalities must be distinct names, got {cfg.modalities}")
    positive = {"batch_size": cfg.batch_size, "step_every": cfg.step_every,
                "max_epochs": cfg.max_epochs, "ratio_every": cfg.ratio_every}
    for name, value in positive.items():
        if int(value) < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if not cfg.lr > 0 or any(not lr > 0 for _, lr in cfg.group_lrs):
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
