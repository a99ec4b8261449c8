"""One training run: seed -> model -> loop -> best checkpoint -> test metrics + trajectory.

The loop knows no method: everything method-specific happens in the method's hooks.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig
from bench.data import Dataset, SplitArrays, load_dataset
from bench.data.registry import spec_for
from bench.methods import (
    Batch,
    BuildContext,
    Method,
    ModelOutput,
    OptimizerPlan,
    TrainState,
    get_method,
    validate_config,
)
from bench.methods.base import needed_runs
from bench.models import model_class, model_spec
from bench.plugins import code_changes, plugin_files_of
from bench.tasks import Task, all_result_columns, make_task

EVAL_BATCH = 512
# Splits up to this many bytes are copied into (device) memory once; larger ones are read per batch.
PRELOAD_BYTES = 2 << 30


class TrainingFailure(Exception):
    """A run that cannot go on (non-finite loss or gradient, out of memory): recorded as `failed`."""

    def __init__(self, epoch: int, reason: str) -> None:
        super().__init__(f"epoch {epoch}: {reason}")
        self.epoch = epoch
        self.reason = reason


@dataclass
class RunResult:
    """Everything one run produced; the store turns it into files."""

    config: RunConfig
    status: str  # "ok" | "failed"
    error: str | None
    metrics: dict[str, float]
    trajectory: list[dict[str, Any]]
    state_dict: dict[str, Tensor] | None
    wall_s: float
    device: str
    data_fingerprint: str
    synthetic: bool
    torch_version: str = field(default_factory=lambda: torch.__version__)
    # Per-sample predictions of the best checkpoint: split -> column -> (N,) values (bench.store writes them).
    predictions: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    # Test-time evaluations of the best checkpoint (cfg.test_noise, cfg.test_dataset): one dict per
    # evaluation with kind ("noise" / "ood"), sigma, test_dataset and the task's test_<metric> values.
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    # The result row's metric columns: every registered task's, taken when the run is made (bench.store
    # builds the row's and the evaluations file's schema from them, so a late-registered task keeps its).
    metric_columns: tuple[str, ...] = ()
    # The plugin files that define a part of the run, as {"path", "sha256"} (the row records them, so later
    # commands load them again).
    plugin_files: list[dict[str, str]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.config.run_id


# -- data on the device -----------------------------------------------------------------------------


class SplitTensors:
    """A split ready for batching: preloaded tensors when small enough, else per-batch reads."""

    def __init__(self, split: SplitArrays, modalities: tuple[str, ...], device: torch.device,
                 task: Task | None = None, where: str = "split") -> None:
        task = task if task is not None else make_task("classification")
        self.task = task
        self.modalities = modalities
        self.device = device
        self.size = split.size
        self.split = split
        nbytes = sum(split.features[m].nbytes for m in modalities)
        self.preloaded = nbytes <= PRELOAD_BYTES
        self.lengths = {m: torch.tensor(np.asarray(split.lengths[m]), dtype=torch.long) for m in modalities}
        # the task's targets: class indices (classification) or scores (regression)
        self.labels = torch.tensor(task.targets(split, where), dtype=task.target_dtype)
        if self.preloaded:
            self.features = {
                m: torch.from_numpy(np.array(split.features[m], dtype=np.float32, copy=True)).to(device)
                for m in modalities
            }
            self.labels_on_device = self.labels.to(device)

    def batch(self, index: Tensor) -> Batch:
        """Rows `index` (CPU int64), each modality trimmed to the longest true length in the batch."""
        lengths = {m: self.lengths[m][index] for m in self.modalities}
        inputs = {}
        for m in self.modalities:
            steps = int(lengths[m].max())
            if self.preloaded:
                inputs[m] = self.features[m][index.to(self.device), :steps]
            else:
                rows = np.sort(index.numpy())  # sorted reads are cheap on a memory map
                order = torch.as_tensor(np.searchsorted(rows, index.numpy()))
                block = torch.from_numpy(np.asarray(self.split.features[m][rows, :steps], dtype=np.float32))
                inputs[m] = block[order].to(self.device)
        labels = self.labels_on_device[index.to(self.device)] if self.preloaded else self.labels[index].to(
            self.device
        )
        return Batch(inputs=inputs, lengths=lengths, labels=labels, index=index)

    def batch_rows(self, batch_size: int, generator: torch.Generator | None = None) -> list[Tensor]:
        """The rows of each mini-batch: a shuffled order (with a generator) or row order, cut every batch_size."""
        order = torch.randperm(self.size, generator=generator) if generator is not None else torch.arange(
            self.size
        )
        return [order[start:start + batch_size] for start in range(0, self.size, batch_size)]

    def iterate(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """Mini-batches in a shuffled order (with a generator) or in row order."""
        for rows in self.batch_rows(batch_size, generator):
            yield self.batch(rows)


# -- evaluation ---------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model: nn.Module, split: SplitTensors,
            transform: Callable[[Batch], Batch] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Fused logits (N, K) and per-modality logits, in row order, model in eval mode (`transform`: applied
    to each batch first, e.g. test-time noise)."""
    was_training = model.training
    model.eval()
    fused, per_modality = [], {}
    for batch in split.iterate(EVAL_BATCH):
        out = model(batch if transform is None else transform(batch))
        fused.append(out.logits.float().cpu())
        for m, logits in out.modality_logits.items():
            per_modality.setdefault(m, []).append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(fused), {m: torch.cat(chunks) for m, chunks in per_modality.items()}


@dataclass
class Evaluation:
    """A split's metrics and the outputs they came from (for the predictions file)."""

    metrics: dict[str, float]
    outputs: Tensor  # (N, output_size)
    modality_outputs: dict[str, Tensor]


def evaluate_split(model: nn.Module, split: SplitTensors, task: Task | None = None,
                   transform: Callable[[Batch], Batch] | None = None) -> Evaluation:
    task = task if task is not None else split.task
    outputs, per_modality = predict(model, split, transform)
    return Evaluation(task.metrics(outputs, split.labels, per_modality, split.split), outputs, per_modality)


def evaluate(model: nn.Module, split: SplitTensors, task: Task | None = None) -> dict[str, float]:
    """The task's metrics of the model on a split (classification: acc %, loss CE x 100, f1, per modality)."""
    return evaluate_split(model, split, task).metrics


def prediction_columns(evaluation: Evaluation, split: SplitTensors, task: Task) -> dict[str, np.ndarray]:
    """The predictions file's columns of one split: `sample` (the file's ids), then the task's columns."""
    columns = {"sample": np.asarray(split.split.ids).astype(str)}
    columns.update(task.prediction_columns(evaluation.outputs, split.labels, evaluation.modality_outputs,
                                           split.split))
    return columns


# -- test-time evaluations: feature noise, another dataset's test split ----------------------------------


def noise_generator(seed: int, sigma: float) -> torch.Generator:
    """A CPU generator seeded from the run seed and the noise level: the same config draws the same noise."""
    digest = hashlib.sha256(f"test-noise:{int(seed)}:{float(sigma)!r}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def add_feature_noise(inputs: Mapping[str, Tensor], lengths: Mapping[str, Tensor], sigma: float,
                      generator: torch.Generator) -> dict[str, Tensor]:
    """Every modality's features plus N(0, sigma^2) noise at its valid steps (t < length); padding stays 0.

    Noise is drawn on the CPU in modality order, so the numbers do not depend on the device.
    """
    noisy = {}
    for m, features in inputs.items():  # features: (B, T, D)
        noise = torch.randn(features.shape, generator=generator, dtype=torch.float32) * float(sigma)
        valid = torch.arange(features.shape[1])[None, :] < lengths[m][:, None]  # (B, T) bool
        noisy[m] = features + (noise * valid[..., None]).to(device=features.device, dtype=features.dtype)
    return noisy


def noise_transform(seed: int, sigma: float) -> Callable[[Batch], Batch]:
    """A batch transform adding seeded test-time noise (a fresh generator per evaluation)."""
    generator = noise_generator(seed, sigma)

    def transform(batch: Batch) -> Batch:
        return dataclasses.replace(batch, inputs=add_feature_noise(batch.inputs, batch.lengths, sigma, generator))

    return transform


def evaluation_row(kind: str, metrics: Mapping[str, float], sigma: float = math.nan,
                   test_dataset: str = "") -> dict[str, Any]:
    """One stored evaluation: its kind, sigma / test dataset, and the task's metrics as test_<name>."""
    return {"kind": kind, "sigma": float(sigma), "test_dataset": test_dataset,
            **{f"test_{name}": float(value) for name, value in metrics.items()}}


def transfer_mismatches(modalities: tuple[str, ...], task: str, source_name: str, source: Dataset,
                        target_name: str, target: Dataset) -> list[str]:
    """Why a model trained on `source` cannot be tested on `target`: one line per mismatch ([] when none).

    The requested modalities must exist in both with the same feature sizes; a classification run also
    needs the same number of classes. Step counts may differ (the models read the true lengths).
    """
    problems = []
    # the target's sizes as the split the run is tested on holds them
    source_dims = source.feature_dims
    target_dims = {m: int(x.shape[-1]) for m, x in target.test.features.items()}
    for m in modalities:
        if m not in target.modalities:
            problems.append(f"{m}: in {source_name}, not in {target_name}")
        elif source_dims.get(m) != target_dims.get(m):
            problems.append(f"{m}: {source_dims.get(m)} features in {source_name}, {target_dims.get(m)} in "
                            f"{target_name}")
    if task == "classification" and source.num_classes != target.num_classes:
        problems.append(f"classes: {source.num_classes} in {source_name}, {target.num_classes} in {target_name}")
    specs = [getattr(d, "spec", None) for d in (source, target)]  # a hand-made Dataset may have none
    ranges = [None if spec is None else spec.labels.score_range for spec in specs]
    if None not in ranges and ranges[0] != ranges[1]:
        problems.append(f"scores: in {list(ranges[0])} in {source_name}, in {list(ranges[1])} in {target_name}")
    return problems


def check_transfer(cfg: RunConfig, source: Dataset, target: Dataset) -> None:
    """ConfigError naming every mismatch between the run's data and its test_dataset."""
    problems = transfer_mismatches(cfg.modalities, cfg.task, cfg.dataset, source, cfg.test_dataset, target)
    if problems:
        raise ConfigError(f"--test-dataset {cfg.test_dataset} does not fit runs on {cfg.dataset}: "
                          + "; ".join(problems))


def ood_label_rule(cfg: RunConfig) -> str | None:
    """The run's label rule when the test dataset's spec admits it, else that spec's default rule."""
    return cfg.label_rule if cfg.label_rule in spec_for(cfg.test_dataset).labels.rules else None


def load_ood_dataset(cfg: RunConfig) -> Dataset:
    """The out-of-domain dataset of a run, at the run's profile."""
    return load_dataset(cfg.test_dataset, cfg.profile, label_rule=ood_label_rule(cfg))


# -- the loop -----------------------------------------------------------------------------------------


def check_finite_gradients(model: nn.Module, epoch: int = -1, step: int | None = None) -> None:
    """Raise TrainingFailure on a non-finite gradient: the total norm is finite only when every element is."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
        where = "" if step is None else f" at step {step}"
        raise TrainingFailure(epoch, f"non-finite gradient (exploding){where}")


# -- the first batch's checks: a model's output width and the capabilities it and the method declare ------

# ModelOutput fields that only a model offering the capability fills (empty otherwise).
CAPABILITY_FIELDS = {"modality_outputs": "modality_logits", "features": "features"}


class UndeclaredCapability(dict):
    """An empty ModelOutput field that the model does not fill: reading it is an error naming what the method
    should declare (else the method's term would silently be an empty sum)."""

    def __init__(self, method: str, model: str, capability: str, name: str) -> None:
        super().__init__()
        self.message = (f"method {method!r} reads ModelOutput.{name}, which model {model!r} does not fill: "
                        f"declare requires = {{{capability!r}}} in the method (then runs on models without it "
                        "are refused before training)")

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise ConfigError(self.message)

    __getitem__ = get = items = keys = values = __iter__ = __len__ = __contains__ = _refuse


def check_first_output(output: Any, batch_size: int, output_size: int, cfg: RunConfig, method: Method) -> Any:
    """One forward pass's output on the first training batch: the logits' width is the task's, and a field
    of a capability that neither the model offers nor the method declares refuses to be read."""
    if not isinstance(output, ModelOutput):
        return output
    logits = output.logits
    width = int(logits.shape[-1]) if logits.dim() == 2 else (1 if logits.dim() == 1 else -1)
    if width != output_size:  # the batch dimension may differ (a method may stack or split batches)
        raise ConfigError(f"model {cfg.model!r} returned logits of shape {tuple(logits.shape)} for a batch of "
                          f"{batch_size}; the {cfg.task} task needs {output_size} output(s) per sample")
    offered = model_class(cfg.model).capabilities
    for capability, name in CAPABILITY_FIELDS.items():
        if capability not in offered and capability not in method.requires and not getattr(output, name):
            setattr(output, name, UndeclaredCapability(method.name, cfg.model, capability, name))
    return output


@contextlib.contextmanager
def first_batch_checks(model: nn.Module, batch_size: int, output_size: int, cfg: RunConfig,
                       method: Method) -> Iterator[None]:
    """check_first_output on every forward pass of `model` inside the block (a forward hook: no extra pass)."""

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        return check_first_output(output, batch_size, output_size, cfg, method)

    handle = model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def check_epoch_rows(rows: list[Tensor], size: int, method: str) -> list[Tensor]:
    """The mini-batches a method's `epoch_batches` gave: each a non-empty 1-D int64 tensor of rows in
    [0, size); ValueError naming the method otherwise (a bug in the method, not in the run's config)."""
    for k, index in enumerate(rows):
        if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype != torch.long or not len(index):
            raise ValueError(f"method {method!r}: epoch_batches gave batch {k} as {index!r}; each batch must be "
                             "a non-empty 1-D int64 tensor of training rows")
        if int(index.min()) < 0 or int(index.max()) >= size:
            raise ValueError(f"method {method!r}: epoch_batches gave batch {k} rows outside [0, {size})")
    return rows


class Trainer:
    """Runs one RunConfig; small methods so each stage of the loop reads on its own."""

    def __init__(self, cfg: RunConfig, method: Method, params: Any, data: Dataset, model: nn.Module,
                 device: torch.device, on_epoch: Callable[[int, dict[str, float]], None] | None) -> None:
        self.cfg, self.method, self.model, self.device = cfg, method, model, device
        self.on_epoch = on_epoch
        self.trajectory: list[dict[str, Any]] = []
        # the metric set and score range of the run's dataset (its spec)
        self.task = task = make_task(cfg.task, dict(cfg.task_params), getattr(data, "spec", None))
        mods = cfg.modalities

        def tensors(split: SplitArrays, name: str) -> SplitTensors:
            return SplitTensors(split, mods, device, task, where=f"{cfg.dataset} {name}")

        carve_dev = method.uses_dev_split(cfg)
        share = method.held_out_share(cfg) if carve_dev else None
        if share is not None:
            data = data.with_dev_share(share)
        self.train_split = tensors(data.split("train", carve_dev=carve_dev), "train")
        self.valid_split = tensors(data.valid, "valid")
        self.test_split = tensors(data.test, "test")
        self.dev_split = tensors(data.split("dev"), "dev") if carve_dev else None
        self.shuffle = torch.Generator().manual_seed(cfg.seed)
        self.optimizers, self.schedulers = build_optimizers(method, model, cfg) if method.trains else ({}, [])
        self.state = TrainState(
            cfg=cfg, params=params, device=device, num_classes=task.output_size(data.num_classes), task=task,
            optimizer=next(iter(self.optimizers.values()), None), optimizers=self.optimizers,
            generator=torch.Generator(device=device).manual_seed(cfg.seed + 7919),
            splits={"train": self.train_split, "valid": self.valid_split, "dev": self.dev_split},
        )
        # bound to the model, not to the loop: no reference cycle keeps a finished run alive
        self.state.check_gradients = functools.partial(check_finite_gradients, model)
        self.state.build_optimizer = functools.partial(optimizer_from_plan, cfg=cfg)
        self.selection = task.selection()
        self.best_state: dict[str, Tensor] | None = None
        self.best_score = self.selection.worst
        self.best_epoch = -1
        self.best_valid: Evaluation | None = None
        self.epochs_run = 0
        self.predictions: dict[str, dict[str, np.ndarray]] = {}

    def log(self, epoch: int, split: str, logs: Mapping[str, float]) -> None:
        """Append flat logs as trajectory rows: keys 'series/modality', or 'split:series/modality'."""
        for key, value in logs.items():
            row_split, _, name = key.rpartition(":")
            series, _, modality = name.partition("/")
            split_of_row = row_split or split
            self.trajectory.append({"epoch": epoch, "step": self.state.step, "split": split_of_row,
                                    "series": series, "modality": modality, "value": float(value)})

    def fit(self) -> None:
        self.log(0, "train", self.method.on_train_start(self.model, self.state))
        if not self.method.trains:
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_epoch = 0
            return
        bad_epochs = 0
        for epoch in range(self.cfg.max_epochs):
            self.state.epoch = epoch
            self.epochs_run = epoch + 1
            if epoch > 0 and self.method.fresh_optimizer(epoch, self.state):
                self.renew_optimizer()
            self.log(epoch, "train", self.method.on_epoch_start(self.model, self.state))
            train_loss = self.train_epoch(epoch)
            self.log(epoch, "train", {"loss": train_loss})
            self.log(epoch, "train", self.method.on_epoch_end(self.model, self.state))
            if not self.method.checkpoint_epoch(epoch, self.state):
                continue
            improved = self.validate(epoch)
            bad_epochs = 0 if improved else bad_epochs + 1
            if self.cfg.early_stopping and bad_epochs >= self.cfg.patience:
                break

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The first optimizer (the only one unless the method defines several)."""
        return next(iter(self.optimizers.values()), None)

    def renew_optimizer(self) -> None:
        """New optimizers and schedules, as the method asks: nothing of the old ones carries over."""
        self.optimizers, self.schedulers = build_optimizers(self.method, self.model, self.cfg)
        self.state.optimizers = self.optimizers
        self.state.optimizer = self.optimizer

    def zero_grad(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.zero_grad(set_to_none=True)

    def step_optimizers(self) -> None:
        for optimizer in self.optimizers.values():
            optimizer.step()

    def epoch_rows(self) -> list[Tensor]:
        """This epoch's mini-batches as training-split rows: the method's `epoch_batches` over the default
        (the seeded shuffle cut every batch_size; the shuffle is drawn every epoch, used or not)."""
        default = self.train_split.batch_rows(self.cfg.batch_size, self.shuffle)
        rows = list(self.method.epoch_batches(self.model, self.state, default))
        return check_epoch_rows(rows, self.train_split.size, self.method.name)

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training data; returns the mean objective."""
        rows = self.epoch_rows()
        self.model.train()
        n_batches = len(rows)
        every = self.cfg.step_every
        total, count = 0.0, 0
        if self.method.owns_step:
            return self.train_epoch_owned(epoch, rows)
        self.zero_grad()
        step_logs: dict[str, float] = {}
        for i, batch in enumerate(map(self.train_split.batch, rows)):
            group_start = (i // every) * every
            group_size = min(every, n_batches - group_start)  # the last group may be short
            with self.checked(epoch, i, batch):
                loss, logs = self.method.loss(self.model, batch, self.state)
            if not torch.isfinite(loss):
                raise TrainingFailure(epoch, f"non-finite loss ({float(loss.detach())}) at step {self.state.step}")
            (loss / group_size).backward()
            step_logs.update(logs)
            total += float(loss.detach()) * batch.size
            count += batch.size
            if i - group_start + 1 == group_size:
                step_logs.update(self.method.after_backward(self.model, self.state))
                self.check_gradients(epoch)
                self.step_optimizers()
                self.zero_grad()
                self.state.step += 1
                if step_logs:
                    self.log(epoch, "train", step_logs)
                step_logs = {}
        return total / max(count, 1)

    def train_epoch_owned(self, epoch: int, rows: list[Tensor]) -> float:
        """One pass for a method that steps its own optimizers (owns_step): the loop keeps the checks."""
        total, count = 0.0, 0
        for i, batch in enumerate(map(self.train_split.batch, rows)):
            try:
                with self.checked(epoch, i, batch):
                    loss, logs = self.method.train_step(self.model, batch, self.state)
            except TrainingFailure as failure:  # raised by state.check_gradients(), which knows no epoch
                raise TrainingFailure(epoch, f"{failure.reason} at step {self.state.step}") from None
            if not torch.isfinite(loss):
                raise TrainingFailure(epoch, f"non-finite loss ({float(loss)}) at step {self.state.step}")
            total += float(loss) * batch.size
            count += batch.size
            self.state.step += 1
            if logs:
                self.log(epoch, "train", logs)
        return total / max(count, 1)

    def checked(self, epoch: int, index: int, batch: Batch) -> contextlib.AbstractContextManager[None]:
        """The first batch's output checks (first_batch_checks) on batch 0 of epoch 0; nothing afterwards."""
        if epoch or index:
            return contextlib.nullcontext()
        return first_batch_checks(self.model, batch.size, self.state.num_classes, self.cfg, self.method)

    def check_gradients(self, epoch: int) -> None:
        """Fail on a non-finite gradient: the total norm is finite only when every element is."""
        check_finite_gradients(self.model, epoch, self.state.step)

    def validate(self, epoch: int) -> bool:
        """Validation metrics, checkpoint on improvement, scheduler step; True when improved."""
        evaluation = evaluate_split(self.model, self.valid_split, self.task)
        metrics = evaluation.metrics
        if not math.isfinite(metrics["loss"]):
            raise TrainingFailure(epoch, "non-finite validation loss")
        self.log(epoch, "valid", self.task.epoch_series(metrics))
        self.log(epoch, "train", {"lr": self.optimizer.param_groups[0]["lr"]})
        if self.on_epoch is not None:
            self.on_epoch(epoch, metrics)
        score = metrics[self.selection.metric]
        for scheduler in self.schedulers:
            scheduler.step(score)
        if self.selection.better(score, self.best_score):
            self.best_score = score
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_valid = evaluation  # the checkpoint's own validation pass: no second one later
            return True
        return False

    def final_metrics(self) -> dict[str, float]:
        """Test (and validation) metrics of the best checkpoint."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        test = evaluate_split(self.model, self.test_split, self.task)
        valid = self.best_valid or evaluate_split(self.model, self.valid_split, self.task)
        self.log(self.best_epoch, "test", self.task.epoch_series(test.metrics))
        metrics = self.task.result_metrics(test.metrics, valid.metrics)
        metrics.update({"best_epoch": float(self.best_epoch), "epochs": float(self.epochs_run)})
        self.predictions = {"test": prediction_columns(test, self.test_split, self.task),
                            "valid": prediction_columns(valid, self.valid_split, self.task)}
        return metrics

    def test_evaluations(self, ood: Dataset | None = None) -> list[dict[str, Any]]:
        """The best checkpoint (loaded by final_metrics) on the noisy test split, per cfg.test_noise level,
        and on `ood`'s test split (cfg.test_dataset)."""
        rows = []
        for sigma in self.cfg.test_noise:
            noisy = evaluate_split(self.model, self.test_split, self.task, noise_transform(self.cfg.seed, sigma))
            rows.append(evaluation_row("noise", noisy.metrics, sigma=sigma))
        if ood is not None:
            split = SplitTensors(ood.test, self.cfg.modalities, self.device, self.task,
                                 where=f"{self.cfg.test_dataset} test")
            rows.append(evaluation_row("ood", evaluate_split(self.model, split, self.task).metrics,
                                       test_dataset=self.cfg.test_dataset))
        return rows


# Devices where torch has fused Adam/SGD kernels for float parameters.
FUSED_OPTIMIZER_DEVICES = ("cpu", "cuda")


def fused_optimizer_options(groups: list[dict[str, Any]]) -> dict[str, bool]:
    """{"fused": True} when every parameter can take the fused kernel, else {} (the op-by-op loop).

    The fused step is one kernel per tensor instead of one op per term of the formula (`bench perf`:
    a concat run 1.06x faster with Adam on this CPU). Same update, rounded differently in the last bits.
    """
    params = [p for group in groups for p in group["params"]]
    fusable = all(p.is_floating_point() and p.device.type in FUSED_OPTIMIZER_DEVICES for p in params)
    return {"fused": True} if params and fusable else {}


def optimizer_from_plan(plan: OptimizerPlan, cfg: RunConfig) -> torch.optim.Optimizer:
    """One optimizer: the plan's kind / lr / weight decay, else the run's."""
    options = fused_optimizer_options(plan.groups)
    kind = plan.kind or cfg.optimizer
    lr = cfg.lr if plan.lr is None else plan.lr
    weight_decay = cfg.weight_decay if plan.weight_decay is None else plan.weight_decay
    if kind == "adam":
        return torch.optim.Adam(plan.groups, lr=lr, weight_decay=weight_decay, **options)
    if kind == "sgd":
        return torch.optim.SGD(plan.groups, lr=lr, momentum=cfg.momentum, weight_decay=weight_decay, **options)
    raise ConfigError(f"optimizer {plan.name!r}: unknown kind {kind!r}; choose from adam, sgd")


def build_optimizers(method: Method, model: nn.Module, cfg: RunConfig) -> tuple[
        dict[str, torch.optim.Optimizer], list[torch.optim.lr_scheduler.ReduceLROnPlateau]]:
    """The method's optimizers by name, in its order, and a plateau scheduler for each scheduled one
    (on the task's selection metric) when the method trains with one."""
    plans = method.optimizers(model, cfg)
    names = [plan.name for plan in plans]
    if len(set(names)) != len(names):
        raise ConfigError(f"method {method.name!r} names an optimizer twice: {names}")
    optimizers = {plan.name: optimizer_from_plan(plan, cfg) for plan in plans}
    mode = make_task(cfg.task, dict(cfg.task_params)).selection().mode
    schedulers = [build_scheduler(method, optimizers[plan.name], cfg, mode) for plan in plans if plan.scheduled]
    return optimizers, [s for s in schedulers if s is not None]


def build_optimizer(method: Method, model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """The first of the method's optimizers (the only one for every built-in method)."""
    return next(iter(build_optimizers(method, model, cfg)[0].values()))


def build_scheduler(method: Method, optimizer: torch.optim.Optimizer | None, cfg: RunConfig,
                    mode: str = "min") -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """ReduceLROnPlateau on the validation selection metric when the method trains with one, else None."""
    if optimizer is None or not method.uses_scheduler(cfg):
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=cfg.lr_factor,
                                                      patience=cfg.lr_patience)


def seed_everything(seed: int) -> None:
    """Seed every generator a run touches (CPU results are then bit-identical)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _is_out_of_memory(err: BaseException) -> bool:
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(err, oom)) or "out of memory" in str(err).lower()


def release_device_memory(trainer: Trainer) -> None:
    """After an out-of-memory failure, free what the run held so the worker's next job starts clean."""
    trainer.model.zero_grad(set_to_none=True)
    trainer.state.scratch.clear()
    if trainer.device.type == "cuda":
        torch.cuda.empty_cache()


def build_trainer(cfg: RunConfig, data: Dataset, deps: Mapping[str, Mapping[str, Tensor]] | None = None,
                  device: str = "cpu",
                  on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> Trainer:
    """Validate, seed and build the model and the loop for one run, without training it."""
    method = get_method(cfg.method)
    params = validate_config(cfg, data.modalities)
    if cfg.data_version and cfg.data_version != data.fingerprint:
        raise ConfigError(
            f"run {cfg.run_id} was configured for data {cfg.data_version[:12]}, but {cfg.dataset} is now "
            f"{data.fingerprint[:12]} (the data file or the surrogate changed): expand the preset again"
        )
    if data.label_rule not in ("", "given", cfg.label_rule):
        raise ConfigError(
            f"run {cfg.run_id} uses label rule {cfg.label_rule!r}, but the dataset was labelled with "
            f"{data.label_rule!r}: load it with load_dataset(..., label_rule={cfg.label_rule!r})"
        )
    changed = code_changes(cfg)
    if changed:
        raise ConfigError(
            f"run {cfg.run_id} was planned for other code than is loaded now ({'; '.join(changed)}): a plugin "
            "file or a declared version changed since; plan it again (bench run / bench grid do)"
        )
    deps = dict(deps or {})
    missing = [need.run_id for need in needed_runs(method, cfg) if need.run_id not in deps]
    if missing:
        raise ConfigError(
            f"method {cfg.method!r} needs the runs {', '.join(missing)} (unimodal, same seed) trained first; "
            "`bench run` / `bench grid` schedule them automatically"
        )
    torch_device = torch.device(device)
    seed_everything(cfg.seed)
    output_size = make_task(cfg.task, dict(cfg.task_params)).output_size(data.num_classes)
    spec = model_spec(cfg, data.feature_dims, output_size)
    model = method.build(BuildContext(spec=spec, cfg=cfg, params=params, deps=deps)).to(torch_device)
    return Trainer(cfg, method, params, data, model, torch_device, on_epoch)


def train_run(cfg: RunConfig, deps: Mapping[str, Mapping[str, Tensor]] | None = None, device: str = "cpu",
              dataset: Dataset | None = None,
              on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> RunResult:
    """Train one RunConfig. Bad config/data raise; numerical failures return status 'failed'."""
    started = time.perf_counter()
    data = dataset if dataset is not None else load_dataset(cfg.dataset, cfg.profile, label_rule=cfg.label_rule)
    ood = load_ood_dataset(cfg) if cfg.test_dataset else None
    if ood is not None:
        check_transfer(cfg, data, ood)  # before anything trains
    trainer = build_trainer(cfg, data, deps, device, on_epoch)
    status, error, metrics, evaluations = "ok", None, {}, []
    try:
        trainer.fit()
        metrics = trainer.final_metrics()
        evaluations = trainer.test_evaluations(ood)
    except TrainingFailure as failure:
        status, error = "failed", str(failure)
    except RuntimeError as err:
        if not _is_out_of_memory(err):
            raise
        status, error = "failed", f"epoch {trainer.state.epoch}: out of memory ({err})"
        release_device_memory(trainer)
    best = trainer.best_state if status == "ok" else None
    return RunResult(
        config=cfg, status=status, error=error, metrics=metrics, trajectory=trainer.trajectory,
        state_dict={k: v.detach().cpu() for k, v in best.items()} if best is not None else None,
        wall_s=time.perf_counter() - started, device=str(trainer.device),
        data_fingerprint=data.fingerprint, synthetic=data.synthetic,
        predictions=trainer.predictions if status == "ok" else {},
        evaluations=evaluations if status == "ok" else [],
        metric_columns=all_result_columns(data.spec.metric_set if getattr(data, "spec", None) else "mmsa"),
        plugin_files=[dataclasses.asdict(source) for source in plugin_files_of(cfg)],
    )
