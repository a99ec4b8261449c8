"""A tiny in-memory dataset for training-loop tests (no files, no generator), the spec files that declare
test data files, and a schema-true CH-SIMS file (true feature widths and sequence lengths, small N)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from bench.conformance import DIMS, STEPS, make_tiny_dataset, tiny_split  # noqa: F401  (the tests' tiny data)
from bench.data.types import Dataset

SIMS_SHAPES = {"text": (39, 768), "audio": (400, 33), "vision": (55, 709)}  # MMSA unaligned_39.pkl
SIMS_SCORE_KEYS = {"text": "regression_labels_T", "audio": "regression_labels_A", "vision": "regression_labels_V"}

TV = ("text", "vision")  # the modality tuples the method tests use most
TAV = ("text", "audio", "vision")
LN2, LN3 = math.log(2.0), math.log(3.0)  # cross-entropy of a uniform guess over 2 / 3 classes


def smoke_config(**fields: Any) -> Any:
    """A smoke-profile synth-mosi RunConfig (text+vision unless `modalities` is given)."""
    from bench.plan.resolve import make_config

    return make_config("synth-mosi", "smoke", **{"modalities": TV, **fields})


def bare_state(cfg: Any, epoch: int = 0, generator_seed: int = 0) -> Any:
    """A TrainState for calling one method's hooks directly, outside a training loop."""
    from bench.methods import TrainState, validate_config

    return TrainState(cfg=cfg, params=validate_config(cfg), device=torch.device("cpu"), num_classes=3,
                      epoch=epoch, generator=torch.Generator().manual_seed(generator_seed))


def series_by_step(result: Any, series: str, modality: str) -> dict[int, float]:
    """A run's trajectory values of one series and modality, keyed by the logged step."""
    return {row["step"]: row["value"] for row in result.trajectory
            if row["series"] == series and row["modality"] == modality}


def whole_split(dataset: Dataset, split: str, modalities: tuple[str, ...]) -> Any:
    """Every row of a split as one Batch."""
    from bench.train import SplitTensors

    tensors = SplitTensors(dataset.split(split), modalities, torch.device("cpu"))
    return tensors.batch(torch.arange(tensors.size))


def declare(data_file: Any, **keys: Any) -> Any:
    """Write `<stem>.spec.toml` beside a data file (default: like = "mosi"), so it loads by path."""
    from pathlib import Path

    from bench.data.registry import spec_file_beside, write_spec_file

    path = Path(data_file)
    return write_spec_file(spec_file_beside(path), **(keys or {"like": "mosi"}))


def sims_record(sizes: tuple[int, int, int] = (20, 8, 8), seed: int = 0) -> dict[str, Any]:
    """An MMSA-schema CH-SIMS record: text 39 x 768 (no lengths key), audio 400 x 33, vision 55 x 709 with
    lengths, scores on SIMS's 0.2 grid in [-1, 1], regression_labels_T/_A/_V, ids and raw text."""
    rng = np.random.default_rng(seed)
    record: dict[str, Any] = {}
    for split, n in zip(("train", "valid", "test"), sizes, strict=True):
        scores = (rng.integers(-5, 6, size=n) / 5).astype(np.float32)  # (N,) multiples of 0.2
        part: dict[str, Any] = {"id": np.array([f"video_{split}_{i // 3}$_${i % 3}" for i in range(n)]),
                                "raw_text": np.array(["\u4e00" * 4] * n, dtype=object),
                                "regression_labels": scores}
        for key in SIMS_SCORE_KEYS.values():
            part[key] = np.clip(scores + rng.choice([-0.2, 0.0, 0.2], size=n), -1, 1).astype(np.float32)
        for m, (steps, dim) in SIMS_SHAPES.items():
            lengths = rng.integers(1, steps + 1, size=n)  # (N,)
            x = rng.normal(size=(n, steps, dim)).astype(np.float32) + 0.5  # (N, T, D), no all-zero step
            x[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
            part[m] = x
            if m != "text":
                part[f"{m}_lengths"] = lengths.astype(np.int64)
        record[split] = part
    return record


def physio_record(sizes: tuple[int, int, int] = (12, 6, 6), seed: int = 3) -> dict[str, Any]:
    """An MMSA-schema record with a modality of its own: scores in [-3, 3] on a 0.5 grid, text 4 x 6 (no
    lengths key) and physio 9 x 2 with lengths."""
    rng = np.random.default_rng(seed)
    record = {}
    for split, size in zip(("train", "valid", "test"), sizes, strict=True):
        record[split] = {"regression_labels": rng.choice(np.arange(-6, 7) / 2, size=size).astype(np.float32),
                         "text": rng.normal(size=(size, 4, 6)).astype(np.float32) + 0.5,  # (N, T, D)
                         "physio": rng.normal(size=(size, 9, 2)).astype(np.float32) + 0.5,
                         "physio_lengths": rng.integers(1, 10, size=size)}
    return record


def method_setup(dataset: Dataset, method: str, modalities: tuple[str, ...] = TV,
                 deps: dict[str, Any] | None = None, **fields: Any) -> tuple[Any, Any, Any, Any]:
    """(method, built model, bare state, the train split's tensors) of a smoke config, seeded as a run is."""
    from bench.methods import BuildContext, get_method
    from bench.models import model_spec
    from bench.train import SplitTensors, seed_everything

    cfg = smoke_config(method=method, modalities=modalities, **fields)
    state = bare_state(cfg)
    seed_everything(cfg.seed)
    spec = model_spec(cfg, dataset.feature_dims, dataset.num_classes)
    built = get_method(method)
    model = built.build(BuildContext(spec, cfg, state.params, deps or {}))
    return built, model, state, SplitTensors(dataset.train, modalities, torch.device("cpu"))


def loss_outside_window(tiny: Dataset, name: str) -> tuple[float, float, dict[str, float]]:
    """A method's objective on 8 rows at epoch 2 of a run whose window ends at epoch 1, the plain
    cross-entropy of its model's prediction there, and the hook's logs."""
    method, model, state, train = method_setup(tiny, name, TV, window_start=0, window_end=1, max_epochs=3)
    state.epoch = 2
    batch = train.batch(torch.arange(0, 8))
    loss, logs = method.loss(model, batch, state)
    plain = torch.nn.functional.cross_entropy(model(batch).logits, batch.labels)
    return float(loss.detach()), float(plain.detach()), logs
