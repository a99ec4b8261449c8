"""Conformance: the contract of each model capability checked on a tiny batch, and smoke runs of what a
plugin offers (`bench check FILE.py`). tests/test_conformance.py runs the same contracts on the built-ins.

A model declares capabilities (bench.models.CAPABILITIES); a method that requires one relies on it without
checking. So a model whose `modality_logits` do not sum to its logits, or whose output width is wrong,
would train "ok" and give wrong numbers. `model_problems` says, per capability, what does not hold.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import RunConfig
from bench.data.types import Dataset, SplitArrays
from bench.methods import REGISTRY as METHODS
from bench.methods import get_method
from bench.methods.base import needed_runs
from bench.models import REGISTRY as MODELS
from bench.models import model_spec
from bench.plan.resolve import make_config
from bench.plugins import load
from bench.tasks import make_task
from bench.train import RunResult, SplitTensors, train_run

# The tiny dataset's modalities: widths, steps, and how much class signal each carries.
DIMS = {"text": 6, "audio": 3, "vision": 4}
STEPS = {"text": 5, "audio": 7, "vision": 6}
MODALITIES_BY_COUNT: dict[int, tuple[str, ...]] = {1: ("text",), 2: ("audio", "vision"),
                                                   3: ("text", "audio", "vision")}
ATOL = 1e-5  # float32 sums of a few products


def tiny_split(n: int, rng: np.random.Generator, num_classes: int = 3, signal: float = 1.5) -> SplitArrays:
    """n samples whose text carries a clear class signal, vision a weak one, audio none."""
    labels = rng.integers(0, num_classes, size=n)
    strength = {"text": signal, "vision": signal / 3, "audio": 0.0}
    features, lengths = {}, {}
    for m, dim in DIMS.items():
        x = rng.normal(size=(n, STEPS[m], dim)).astype(np.float32)  # (N, T, D)
        x[:, :, 0] += strength[m] * (labels[:, None] - 1)
        length = rng.integers(1, STEPS[m] + 1, size=n)
        for i, steps in enumerate(length):
            x[i, steps:] = 0.0
        features[m], lengths[m] = x, length.astype(np.int64)
    regression = (labels - 1).astype(np.float32)
    ids = np.array([f"clip{i}" for i in range(n)])
    return SplitArrays(features, lengths, labels.astype(np.int64), regression, ids)


def make_tiny_dataset(n_train: int = 64, n_valid: int = 24, n_test: int = 24, seed: int = 0,
                      num_classes: int = 3, name: str = "synth-mosi") -> Dataset:
    """A tiny in-memory dataset (no files, no generator): train / valid / test of three modalities."""
    rng = np.random.default_rng(seed)
    train = tiny_split(n_train, rng, num_classes)
    return Dataset(
        name=name, num_classes=num_classes, modalities=("text", "audio", "vision"),
        train=train, valid=tiny_split(n_valid, rng, num_classes), test=tiny_split(n_test, rng, num_classes),
        dev_index=np.arange(0, n_train, 4), fingerprint=f"tiny-{seed}", synthetic=True, source="tests",
    )


def tiny_batch(data: Dataset, modalities: tuple[str, ...], task: str, size: int = 8) -> Batch:
    """The first `size` training rows of `data` as a Batch with the task's targets."""
    tensors = SplitTensors(data.split("train"), modalities, torch.device("cpu"), make_task(task))
    return tensors.batch(torch.arange(size))


# -- the capability contracts -------------------------------------------------------------------------


def _differs(a: Tensor, b: Tensor) -> float:
    """The largest absolute difference of two tensors of one shape."""
    return float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0


def _shape_problem(name: str, value: object, shape: tuple[int, ...]) -> list[str]:
    if not isinstance(value, Tensor):
        return [f"{name} is a {type(value).__name__}, not a tensor"]
    if tuple(value.shape) != shape:
        return [f"{name} has shape {tuple(value.shape)}, expected {shape}"]
    if not bool(torch.isfinite(value).all()):
        return [f"{name} holds NaN or infinity"]
    return []


def _features(model: nn.Module, batch: Batch, size: int) -> tuple[dict[str, Tensor], list[str]]:
    """model.encode(batch), checked: every modality, (B, feature_dim(m)) each."""
    problems: list[str] = []
    features = model.encode(batch)
    for m in batch.inputs:
        if m not in features:
            problems.append(f"features: encode(batch) has no {m!r}")
            continue
        problems += _shape_problem(f"features: encode(batch)[{m!r}]", features[m], (size, int(model.feature_dim(m))))
    return features, problems


def check_features(model: nn.Module, batch: Batch, logits: Tensor) -> list[str]:
    """encode -> {m: (B, feature_dim(m))}; fuse(encode(batch)) is the forward's prediction."""
    if not all(hasattr(model, name) for name in ("encode", "fuse", "feature_dim")):
        return ["features: the model lacks encode, fuse or feature_dim"]
    features, problems = _features(model, batch, batch.size)
    if problems:
        return problems
    gap = _differs(model.fuse(features), logits)
    return [f"features: fuse(encode(batch)) differs from forward(batch).logits by {gap:.3g}"] if gap > ATOL else []


def check_modality_outputs(model: nn.Module, batch: Batch, logits: Tensor) -> list[str]:
    """ModelOutput.modality_logits: one (B, K) per modality, detached, summing to the fused logits."""
    outputs = model(batch).modality_logits
    problems = []
    for m in batch.inputs:
        if m not in outputs:
            problems.append(f"modality_outputs: modality_logits has no {m!r}")
            continue
        problems += _shape_problem(f"modality_outputs: modality_logits[{m!r}]", outputs[m], tuple(logits.shape))
        if isinstance(outputs[m], Tensor) and outputs[m].requires_grad:
            problems.append(f"modality_outputs: modality_logits[{m!r}] is not detached")
    if problems:
        return problems
    gap = _differs(sum(outputs[m] for m in batch.inputs), logits)
    return [f"modality_outputs: the modality logits sum to the fused logits only up to {gap:.3g}"] if gap > ATOL else []


def check_linear_head(model: nn.Module, batch: Batch, logits: Tensor) -> list[str]:
    """model.head is one Linear over the concatenated z_m; head_slices() tile its input columns in order."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        return ["linear_head: model.head is not an nn.Linear"]
    slices = model.head_slices()
    start, problems = 0, []
    for m in batch.inputs:
        cols = slices.get(m)
        if cols is None:
            problems.append(f"linear_head: head_slices() has no {m!r}")
            continue
        if cols.start != start or cols.stop - cols.start != int(model.feature_dim(m)):
            problems.append(f"linear_head: head_slices()[{m!r}] = {cols.start}:{cols.stop}, expected "
                            f"{start}:{start + int(model.feature_dim(m))} (feature_dim, in modality order)")
        start = cols.stop
    if not problems and start != head.in_features:
        problems.append(f"linear_head: the slices cover {start} of the head's {head.in_features} input columns")
    return problems


def check_zero_inputs(model: nn.Module, batch: Batch, logits: Tensor) -> list[str]:
    """encode_zeros(batch) is encode of the batch with every input zeroed, at the batch's true lengths."""
    zeros = model.encode_zeros(batch)
    expected = model.encode(batch.with_zeroed(tuple(batch.inputs)))
    problems = []
    for m in batch.inputs:
        if m not in zeros:
            problems.append(f"zero_inputs: encode_zeros(batch) has no {m!r}")
            continue
        gap = _differs(zeros[m], expected[m]) if zeros[m].shape == expected[m].shape else math.inf
        if gap > ATOL:
            problems.append(f"zero_inputs: encode_zeros(batch)[{m!r}] differs from encode of zeroed inputs "
                            f"by {gap:.3g}")
    return problems


def check_encoders(model: nn.Module, batch: Batch, logits: Tensor) -> list[str]:
    """model.encoders[m] per modality; encoder_parameters(m, include_biases) are parameters of that encoder."""
    encoders = getattr(model, "encoders", None)
    if encoders is None:
        return ["encoders: the model has no encoders"]
    problems = []
    for m in batch.inputs:
        if m not in encoders:
            problems.append(f"encoders: model.encoders has no {m!r}")
            continue
        own = {id(p) for p in encoders[m].parameters()}
        for include_biases in (False, True):
            stray = [p for p in model.encoder_parameters(m, include_biases) if id(p) not in own]
            if stray:
                problems.append(f"encoders: encoder_parameters({m!r}, {include_biases}) holds parameters outside "
                                f"model.encoders[{m!r}]")
    return problems


# capability -> its check; capabilities without one here (encoder_sizes, single_modality) are exercised by
# building the model (spec sizes, one modality)
CONTRACTS: dict[str, Callable[[nn.Module, Batch, Tensor], list[str]]] = {
    "features": check_features,
    "modality_outputs": check_modality_outputs,
    "linear_head": check_linear_head,
    "zero_inputs": check_zero_inputs,
    "encoders": check_encoders,
}


def model_problems(model_name: str, modalities: tuple[str, ...], task: str, data: Dataset | None = None) -> list[str]:
    """What does not hold of the model's output width and of each capability it declares, on a tiny batch
    of `modalities` for `task` (eval mode, so dropout does not blur the sums)."""
    data = data or make_tiny_dataset()
    cfg = make_config("synth-mosi", "smoke", modalities=modalities, model=model_name, task=task)
    task_obj = make_task(task)
    torch.manual_seed(0)
    try:
        model = MODELS[model_name].build(model_spec(cfg, data.feature_dims, task_obj.output_size(data.num_classes)))
    except Exception as err:  # a plugin's constructor: say what failed, do not stop the other checks
        return [f"build: {type(err).__name__}: {err}"]
    model.eval()
    batch = tiny_batch(data, modalities, task)
    with torch.no_grad():
        logits = model(batch).logits
    problems = _shape_problem("forward(batch).logits", logits, (batch.size, task_obj.output_size(data.num_classes)))
    if problems:
        return problems
    for capability in sorted(MODELS[model_name].capabilities):
        contract = CONTRACTS.get(capability)
        if contract is None or (capability == "single_modality" and len(modalities) > 1):
            continue
        with torch.no_grad():
            try:
                problems += contract(model, batch, logits)
            except Exception as err:  # noqa: BLE001 - a broken promise of any kind is a finding
                problems.append(f"{capability}: {type(err).__name__}: {err}")
    return problems


# -- plugins -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One check of `bench check`: what it covered and what failed (empty: it holds)."""

    what: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def modality_counts(*parts: type) -> list[int]:
    """The modality counts (1 to 3) every one of `parts` (method or model classes) takes."""
    return [n for n in MODALITIES_BY_COUNT if all(p.min_modalities <= n <= p.max_modalities for p in parts)]


def model_checks(model_name: str) -> list[Check]:
    """The contracts of one model for every task and modality count it takes."""
    model = MODELS[model_name]
    tasks = sorted({task for method in METHODS.values() for task in method.tasks})
    return [Check(f"model {model_name}: {task}, {n} modalities",
                  tuple(model_problems(model_name, MODALITIES_BY_COUNT[n], task)))
            for task in tasks for n in modality_counts(model)]


def smoke_cases(methods: Iterable[str], models: Iterable[str]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(method, model, task, modalities) for each method x model x task the registries call compatible, at the
    largest modality count both take."""
    cases = []
    for method_name in methods:
        method = METHODS[method_name]
        for model_name in models:
            model = MODELS[model_name]
            counts = modality_counts(method, model)
            if not method.requires <= model.capabilities or not counts:
                continue
            cases += [(method_name, model_name, task, MODALITIES_BY_COUNT[max(counts)]) for task in method.tasks]
    return cases


def smoke_run(method: str, model: str, task: str, modalities: tuple[str, ...], data: Dataset,
              cache: dict[str, RunResult]) -> Check:
    """One smoke run (and the runs it needs) on the tiny data: ok, with finite metrics."""
    what = f"run {method} on {model}, {task}, {'+'.join(modalities)}"
    try:
        cfg = make_config("synth-mosi", "smoke", method=method, model=model, task=task, modalities=modalities)
        result = _train_with_needs(cfg, data, cache)
    except Exception as err:  # noqa: BLE001 - the plugin's code: report, go on
        return Check(what, (f"{type(err).__name__}: {err}",))
    problems = [] if result.status == "ok" else [str(result.error)]
    bad = sorted(k for k, v in (result.metrics or {}).items() if not math.isfinite(v))
    problems += [f"non-finite metrics: {', '.join(bad)}"] if bad and result.status == "ok" else []
    return Check(what, tuple(problems))


def _train_with_needs(cfg: RunConfig, data: Dataset, cache: dict[str, RunResult]) -> RunResult:
    method = get_method(cfg.method)
    deps: dict[str, Mapping[str, Tensor]] = {}
    for need in needed_runs(method, cfg):
        if need.run_id not in cache:
            cache[need.run_id] = _train_with_needs(need, data, cache)
        if cache[need.run_id].status != "ok":
            raise RuntimeError(f"the run it needs ({need.method}) failed: {cache[need.run_id].error}")
        deps[need.run_id] = cache[need.run_id].state_dict
    return train_run(cfg, deps=deps, dataset=data)


def check_plugin(paths: str | Iterable[str], progress: Callable[[Check], None] | None = None) -> list[Check]:
    """Load plugin files; check the contracts of every model they register, then one smoke run per method x
    model x task they offer: their methods on every compatible model, every compatible method on their models."""
    parts = [part for path in ([paths] if isinstance(paths, str) else paths) for part in load(path)]
    mine = {kind: [p.partition(" ")[2] for p in parts if p.startswith(f"{kind} ")] for kind in ("method", "model")}
    checks: list[Check] = []

    def record(check: Check) -> None:
        checks.append(check)
        if progress is not None:
            progress(check)

    broken = set()
    for model_name in mine["model"]:
        for check in model_checks(model_name):
            record(check)
            if not check.ok:
                broken.add(model_name)
    others = [name for name in METHODS if not name.startswith("test_") and name not in mine["method"]]
    cases = smoke_cases(mine["method"], list(MODELS)) + smoke_cases(others, mine["model"])
    # a model that breaks its promises gives methods wrong inputs: no run of it says anything more
    cases = [case for case in cases if case[1] not in broken]
    data, cache = make_tiny_dataset(), {}
    for case in dict.fromkeys(cases):
        record(smoke_run(*case, data=data, cache=cache))
    return checks
