"""The method interface: the hooks the training loop calls, and nothing method-specific in the loop.

A method is a subclass of `Method` in its own file, registered with `@register`. It declares the
tasks it supports (`tasks`), the model it runs on unless told otherwise (`default_model`) and the model
capabilities it uses (`requires`, names from bench.models.CAPABILITIES); `validate_config` checks them
before anything trains. `build(ctx)` returns the model (default: the run's registered model);
`optimizers(model, cfg)` the optimizers the loop builds (default: one, from `param_groups`). The loop calls:

    on_train_start(model, state)                  once, before epoch 0
    for each epoch:
        fresh_optimizer(epoch, state) -> bool       True: a new optimizer (and schedule) from here on
        on_epoch_start(model, state)
        epoch_batches(model, state, default) -> the epoch's mini-batches, as rows of the training split
        for each batch:  loss(model, batch, state) -> (loss, logs); loss.backward()
        every `step_every` batches:  after_backward(model, state) -> logs; every optimizer steps
        (a method with `owns_step = True` instead gets train_step(model, batch, state) -> (loss, logs)
        per batch and steps its optimizers itself, calling state.check_gradients() before each step)
        on_epoch_end(model, state) -> logs
        validation (if checkpoint_epoch(epoch, state)): checkpoint, scheduler, early stopping

`epoch_batches` is the data-level hook: a method that owns the order or the composition of an epoch's
batches (curriculum, re-sampling, per-modality subsets) returns its own list of row tensors, each one
mini-batch (any length, rows may repeat or be left out); the loop builds, trains and steps each in that
order (`step_every` groups count the method's batches). `default` is the loop's own list (the run's
seeded shuffle, drawn every epoch whether used or not, cut every batch_size), so a method that returns
it unchanged trains exactly as before. A method's own randomness here comes from a generator it seeds
from cfg.seed and state.epoch (see `epoch_generator`). Nothing else tells `loss` which composition a
batch belongs to: a method finds it from `batch.index` (the batch's rows) and its own scratch.

`logs` are flat dicts of floats. A key "series/modality" (e.g. "ratio/text") becomes a trajectory
row with that series and modality; a key without "/" has modality "". Rows go to the "train" split
unless the key names another first: "valid:proto_acc/text". Methods never write files.

Besides the hooks, the class declares what the rest of the harness reads about it, so no table outside
its file names it: `display_name`, `table_order`, `is_baseline`, `is_reference_baseline` (report
labels, row order, baseline roles) and `thesis` / `thesis_params` / `thesis_lr` (the presets' thesis
settings); the store takes its parameter columns from `Params`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bench import registry
from bench.batch import Batch, ModelOutput  # re-exported: methods import both from here
from bench.config import ConfigError, RunConfig
from bench.data.registry import spec_for
from bench.models import ModelSpec, check_model_params, model_class
from bench.plugins import restamp
from bench.tasks import Task, make_task, task_class

Logs = dict[str, float]


@dataclass
class TrainState:
    """What hooks may read (and, in `scratch`, keep) during one run."""

    cfg: RunConfig
    params: Any  # the method's Params dataclass instance
    device: torch.device
    num_classes: int  # the task's output width (K classes, or 1 for regression)
    task: Task | None = None  # the run's task: its loss, targets and metrics
    optimizer: torch.optim.Optimizer | None = None  # the first of `optimizers`
    optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict)  # name -> optimizer
    # The loop's non-finite gradient check, for methods that step their own optimizers (owns_step).
    check_gradients: Any = None
    # The loop's optimizer factory (OptimizerPlan -> torch optimizer, the run's kind and settings), for methods
    # that train a copy of the model on the side (G-Blend).
    build_optimizer: Any = None
    epoch: int = 0
    step: int = 0  # optimizer steps taken so far
    generator: torch.Generator | None = None  # seeded, for a method's own randomness (e.g. GE noise)
    # The loop's splits by name ("train", "valid", and "dev" in dev-set runs), read through `batches`.
    # The state holds them itself, not a link back to the loop: no reference cycle keeps a finished
    # run's data alive in a worker that goes on to its next job.
    splits: Mapping[str, Any] = field(default_factory=dict)
    scratch: dict[str, Any] = field(default_factory=dict)  # method-owned state between hook calls

    def __post_init__(self) -> None:
        if self.task is None:  # a state made by hand (tests): the config's task
            self.task = make_task(self.cfg.task, dict(self.cfg.task_params))

    @property
    def in_window(self) -> bool:
        return self.cfg.in_window(self.epoch)

    def epoch_generator(self, salt: int = 0) -> torch.Generator:
        """A CPU generator seeded by the run's seed, this epoch and `salt`: a method's own draws for the
        epoch's batches (epoch_batches) repeat for the same config and seed."""
        return torch.Generator().manual_seed((self.cfg.seed * 1_000_003 + self.epoch) * 8191 + salt)

    def batches(self, split: str, shuffle: bool = False, batch_size: int | None = None) -> Iterator[Batch]:
        """Mini-batches of 'train', 'dev' (dev-set runs only) or 'valid'; a shuffle is seeded by seed and epoch."""
        source = self.splits.get(split)
        if source is None:
            raise ConfigError(f"split {split!r} is not available in this run (dev_set={self.cfg.dev_set})")
        generator = torch.Generator().manual_seed(self.cfg.seed * 1009 + self.epoch) if shuffle else None
        return source.iterate(batch_size or self.cfg.batch_size, generator)


@dataclass(frozen=True)
class NoParams:
    """A method without hyper-parameters."""


@dataclass(frozen=True)
class BuildContext:
    """What `Method.build` receives: the model spec, the run's config, its Params, the needed runs' states."""

    spec: ModelSpec
    cfg: RunConfig
    params: Any
    deps: Mapping[str, Mapping[str, Tensor]]

    def model(self, spec: ModelSpec | None = None) -> nn.Module:
        """The run's registered model (`cfg.model`), for this spec or another (e.g. spec.only(m))."""
        return model_class(self.cfg.model).build(spec if spec is not None else self.spec)


@dataclass
class OptimizerPlan:
    """One optimizer a method asks the loop for: its parameter groups and, optionally, its own settings."""

    name: str
    groups: list[dict[str, Any]]
    kind: str = ""  # "adam" | "sgd"; "" = the run's optimizer
    lr: float | None = None  # None = the run's lr (groups may carry their own "lr")
    weight_decay: float | None = None
    scheduled: bool = True  # stepped by the plateau scheduler when the method uses one


@dataclass(frozen=True)
class ThesisSettings:
    """What the thesis (or the paper it follows) sets for a method beyond the presets' shared recipe
    (Adam 5e-4; SGD 1e-2 on MOSI, 5e-3 on MOSEI; the profile's epochs; plateau schedule). Presets, grid
    files and `bench run` start from it (`bench.presets.thesis_config`); options given on top win."""

    params: Mapping[str, Any] = field(default_factory=dict)  # method_params of the standard configuration
    window: tuple[int, int] | None = None  # modulation window (first, last epoch), clipped to the epochs
    dev_ratio_every: int = 1  # ratio_every in the dev-set configuration (steps between dev measurements)
    sgd_lr: float | None = None  # SGD learning rate on every dataset, instead of the per-dataset one
    scheduler: str | None = None  # RunConfig scheduler instead of the default ("none": constant lr)
    full_epochs: int | None = None  # epochs at the full profile, instead of the profile's


# What a method whose design comes only from a paper's text says on every row and plot of it.
RECONSTRUCTED = "reconstructed from the paper's description"


class Method:
    """Base class: the default hooks give plain cross-entropy training of `build`'s model."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = NoParams
    min_modalities: ClassVar[int] = 2
    max_modalities: ClassVar[int] = 3
    trains: ClassVar[bool] = True  # False: nothing to optimise (the soft-voting ensemble)
    # True when `dev_set` changes what the method computes (ratios, scores, prototypes from the dev split)
    has_dev_set_variant: ClassVar[bool] = False
    # Why a --dev-set run of the method is refused, e.g. "computes no ratio or score from the data" (empty: it
    # is allowed); validate_config raises the one error for every method that sets it
    no_dev_set: ClassVar[str] = ""
    # True: every run holds the dev split out of training and offers it as state.batches("dev"), whatever
    # cfg.dev_set says (a method that always needs a held-out split, e.g. G-Blend); see `uses_dev_split`
    holds_out_dev: ClassVar[bool] = False
    description: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ("classification",)  # the tasks the method defines a form for
    default_model: ClassVar[str] = "late_fusion"
    requires: ClassVar[frozenset[str]] = frozenset()  # model capabilities used (bench.models.CAPABILITIES)
    owns_step: ClassVar[bool] = False  # True: train_step does forward, backward and the optimizer steps
    # The version of what the method computes: part of every run id (RunConfig.code). Bump it when a change
    # alters the numbers of a configuration that exists already, so its stored runs are not reused.
    version: ClassVar[int] = 1

    # -- what the method's file states about itself (read by presets, store and report) --------------
    # display_name, table_order and is_reference_baseline name one method, so a subclass does not inherit
    # them (see __init_subclass__); the others are inherited like any ClassVar.
    display_name: ClassVar[str] = ""  # label in tables and plots; defaults to `name`
    table_order: ClassVar[int | None] = None  # rank in the thesis's row order; None: after, alphabetically
    # A plain joint-training baseline: configurations that only change how a balancing method measures
    # imbalance (dev set, EMA prototypes, modulation window, table 6.5a's lr) leave it at its standard
    # configuration (same run ids), as the thesis prints the standard figures beside them.
    is_baseline: ClassVar[bool] = False
    is_reference_baseline: ClassVar[bool] = False  # the baseline reports test the other methods against
    thesis: ClassVar[ThesisSettings] = ThesisSettings()
    # Where the implementation comes from, when not from public code: RECONSTRUCTED for a method built
    # from its paper's text alone. Reports print it beside every row and plot of the method.
    provenance: ClassVar[str] = ""
    # What the harness cannot do as the paper does and approximates instead (e.g. "text: frozen BERT
    # token features, not fine-tuned"); reports print these beside the method's rows.
    approximations: ClassVar[tuple[str, ...]] = ()
    # Named variants (ablations) a preset row may ask for by configuration label: label -> method_params
    # on top of the standard ones, e.g. {"no_kl": {"use_kl": False}}. Reports show the label as the row's
    # configuration ("no kl").
    variants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "display_name" not in own:
            cls.display_name = cls.name
        if "table_order" not in own:
            cls.table_order = None
        if "is_reference_baseline" not in own:
            cls.is_reference_baseline = False

    @classmethod
    def thesis_params(cls, modalities: tuple[str, ...]) -> dict[str, Any]:
        """The thesis's method_params for this modality set (standard configuration); default `thesis.params`."""
        return dict(cls.thesis.params)

    @classmethod
    def paper_fields(cls, recipe: str, profile: str) -> dict[str, Any]:
        """RunConfig fields the method's own paper sets (batch size, learning rate, step_every, epochs,
        scheduler, ...), applied over the dataset recipe; `recipe` names the dataset's block of
        bench/recipes.toml ("mosi", "mosei", "generic", ...), where per-dataset numbers live. Default: none."""
        return {}

    @classmethod
    def thesis_lr(cls, recipe: str, modalities: tuple[str, ...], optimizer: str, step_every: int) -> float | None:
        """A learning rate the thesis tuned for this dataset recipe / modalities / optimizer / step_every;
        None (the default): the shared recipe's."""
        return None

    # -- configuration -------------------------------------------------------------------------
    def validate(self, cfg: RunConfig, params: Any) -> None:
        """Raise ConfigError for combinations this method cannot run (called before training)."""

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        """Runs whose best checkpoints this run needs (same seed), e.g. the unimodal runs."""
        return []

    # -- model -----------------------------------------------------------------------------------
    def build(self, ctx: BuildContext) -> nn.Module:
        """The model; `ctx.deps` maps each needed run's run_id to its best state_dict."""
        return ctx.model()

    def param_groups(self, model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
        """Optimizer parameter groups; default: `cfg.group_lrs` per encoder / head, else `cfg.lr`."""
        from bench.models import default_param_groups

        return default_param_groups(model, cfg)

    def optimizers(self, model: nn.Module, cfg: RunConfig) -> list[OptimizerPlan]:
        """The optimizers of a run (several, each with its groups and settings); default: one."""
        return [OptimizerPlan("main", self.param_groups(model, cfg))]

    # -- training hooks ---------------------------------------------------------------------------
    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        return {}

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        return {}

    def epoch_batches(self, model: nn.Module, state: TrainState, default: list[Tensor]) -> Sequence[Tensor]:
        """This epoch's mini-batches, each a 1-D int64 tensor of training-split rows, in training order.
        Called after on_epoch_start (the model in whatever mode that left it; the loop sets train mode
        afterwards). Default: `default`, the loop's seeded shuffle cut every batch_size."""
        return default

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        """Forward pass and objective (a batch mean). Default: the task's loss on the fused output."""
        out = model(batch)
        return state.task.loss(out.logits, batch.labels), {}

    def train_step(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        """With `owns_step`: one batch's forward, backward and optimizer steps; returns the (detached)
        objective and logs. Call state.check_gradients() before stepping an optimizer."""
        raise NotImplementedError(f"method {self.name!r} sets owns_step but defines no train_step")

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        """Gradient edits on the (accumulated) gradients, once per optimizer step, before step()."""
        return {}

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        return {}

    def checkpoint_epoch(self, epoch: int, state: TrainState) -> bool:
        """Whether to validate / checkpoint / early-stop after this epoch (ReconBoost: stage ends)."""
        return True

    def fresh_optimizer(self, epoch: int, state: TrainState) -> bool:
        """Whether the loop replaces the optimizer before this epoch (> 0): no moments or step counts carry
        over, learning rates restart at the config's (ReconBoost: every phase start)."""
        return False

    def uses_scheduler(self, cfg: RunConfig) -> bool:
        return cfg.scheduler == "plateau"

    def uses_dev_split(self, cfg: RunConfig) -> bool:
        """Whether the loop carves the dev split out of the training data: cfg.dev_set or `holds_out_dev`."""
        return cfg.dev_set or self.holds_out_dev

    def held_out_share(self, cfg: RunConfig) -> float | None:
        """The share of the training rows the carved dev split takes in this method's runs (e.g. G-Blend's
        8 %); None (the default): the dataset's fixed dev split (bench.data.splits.dev_size)."""
        return None


def needed_runs(method: Method, cfg: RunConfig) -> list[RunConfig]:
    """The runs `cfg` needs (`method.needs`), each pinned to the code of its own parts when `cfg` is pinned:
    what the planner schedules and the trainer looks up, so both agree on the run ids."""
    return [restamp(need) for need in method.needs(cfg)]


def dataset_recipe(dataset: str) -> str:
    """The recipe-table name of a run's dataset (bench/recipes.toml), for settings read at train time."""

    return spec_for(dataset).recipe


# -- gradient helpers (shared by methods) ---------------------------------------------------------


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by a constant."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, coeff: float) -> Tensor:
        ctx.coeff = coeff
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return grad_output * ctx.coeff, None


def scale_gradient(x: Tensor, coeff: float) -> Tensor:
    """x in the forward pass; the gradient reaching x is coeff times the gradient reaching the result."""
    return _ScaleGradient.apply(x, coeff)


# -- registry -------------------------------------------------------------------------------------

REGISTRY: dict[str, type[Method]] = {}


class DuplicateMethodError(ValueError):
    """A second class registered under a name that is taken."""


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its `name`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in REGISTRY and REGISTRY[cls.name] is not cls:
        taken = REGISTRY[cls.name]
        raise DuplicateMethodError(f"method name {cls.name!r} registered twice (already by "
                                   f"{taken.__module__}.{taken.__qualname__})")
    REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The registered class of `name`; `Method` itself (every declaration at its default) when unknown."""
    return REGISTRY.get(name, Method)


def method_sort_key(name: str) -> tuple[bool, int, str]:
    """Sort key of a method name: by `table_order`; methods without one (or unknown) after, alphabetically."""
    order = method_class(name).table_order
    return (order is None, order or 0, name)


def method_order() -> list[str]:
    """The registered method names in the thesis's row order (see `method_sort_key`)."""
    return sorted(REGISTRY, key=method_sort_key)


def get_method(name: str) -> Method:
    """The registered method `name`; an unknown name lists the registered ones."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown method {name!r}; registered methods: {', '.join(sorted(REGISTRY))}"
                          f"{registry.PLUGIN_HINT}")
    return REGISTRY[name]()


def resolve_params(method: Method, cfg: RunConfig) -> Any:
    """The method's Params from cfg.method_params; unknown names are errors listing the known ones."""
    params_cls = method.Params
    known = {f.name: f for f in dataclasses.fields(params_cls)}
    given = dict(cfg.method_params)
    unknown = sorted(set(given) - set(known))
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise ConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for method {method.name!r}; it takes: {listed}"
        )
    try:
        return params_cls(**given)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad parameters for method {method.name!r}: {err}") from err


def validate_config(cfg: RunConfig, available_modalities: tuple[str, ...] | None = None) -> Any:
    """Every check that needs the registry; returns the resolved Params. Raises ConfigError."""
    method = get_method(cfg.method)
    n = len(cfg.modalities)
    if not method.min_modalities <= n <= method.max_modalities:
        want = (f"exactly {method.min_modalities}" if method.min_modalities == method.max_modalities
                else f"{method.min_modalities} to {method.max_modalities}")
        raise ConfigError(
            f"method {cfg.method!r} needs {want} modalities, got {n} ({', '.join(cfg.modalities)})"
        )
    if available_modalities is not None:
        missing = [m for m in cfg.modalities if m not in available_modalities]
        if missing:
            raise ConfigError(
                f"dataset {cfg.dataset!r} has no modality {missing[0]!r} "
                f"(it has {', '.join(available_modalities)})"
            )
    check_task_and_model(method, cfg)
    if cfg.dev_set and method.no_dev_set:
        raise ConfigError(f"{cfg.method} {method.no_dev_set}; it has no dev-set variant (drop --dev-set)")
    params = resolve_params(method, cfg)
    method.validate(cfg, params)
    return params


def check_choices(method: str, params: Any, choices: Mapping[str, Sequence[str]]) -> None:
    """ConfigError naming the first parameter whose value is not one of its allowed choices."""
    for name, allowed in choices.items():
        value = getattr(params, name)
        if value not in allowed:
            raise ConfigError(f"{method}: {name} must be one of {', '.join(allowed)}, got {value!r}")


def check_non_negative(method: str, params: Any, names: Sequence[str]) -> None:
    """ConfigError naming the first parameter (a loss weight, a rate) that is not a finite number >= 0."""
    for name in names:
        value = getattr(params, name)
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{method}: {name} must be a finite number >= 0, got {value}")


def check_task_and_model(method: Method, cfg: RunConfig) -> None:
    """The task is one the method supports, the model offers every capability the method uses."""
    task_class(cfg.task)
    if cfg.task not in method.tasks:  # before the task's options: they may be the method's own task's
        raise ConfigError(f"method {method.name!r} has no {cfg.task} form (it supports: {', '.join(method.tasks)}; "
                          f"--task {method.tasks[0]})")
    make_task(cfg.task, dict(cfg.task_params))
    model = model_class(cfg.model)
    check_model_params(cfg.model, dict(cfg.model_params))
    missing = sorted(method.requires - model.capabilities)
    if missing:
        raise ConfigError(
            f"method {method.name!r} needs the model capabilities {', '.join(missing)}, which model "
            f"{cfg.model!r} does not offer (it offers: {', '.join(sorted(model.capabilities)) or 'none'})"
        )
    n = len(cfg.modalities)
    if not model.min_modalities <= n <= model.max_modalities:
        raise ConfigError(f"model {cfg.model!r} takes {model.min_modalities} to {model.max_modalities} "
                          f"modalities, got {n} ({', '.join(cfg.modalities)})")
    if method.owns_step and cfg.step_every != 1:
        raise ConfigError(f"method {method.name!r} steps its own optimizers: step_every must be 1")


__all__ = ["REGISTRY", "Batch", "BuildContext", "DuplicateMethodError", "Logs", "Method", "ModelOutput",
           "NoParams", "OptimizerPlan", "ThesisSettings", "TrainState", "check_choices", "check_non_negative",
           "check_task_and_model",
           "get_method", "method_class", "method_order", "method_sort_key", "register", "resolve_params",
           "scale_gradient", "validate_config"]
