"""A tiny in-memory dataset for training-loop tests (no files, no generator)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from bench.data.types import Dataset, SplitArrays

DIMS = {"text": 6, "audio": 3, "vision": 4}
TV = ("text", "vision")  # the modality tuples the method tests use most
TAV = ("text", "audio", "vision")
LN2, LN3 = math.log(2.0), math.log(3.0)  # cross-entropy of a uniform guess over 2 / 3 classes
STEPS = {"text": 5, "audio": 7, "vision": 6}


def tiny_split(n: int, rng: np.random.Generator, num_classes: int = 3, signal: float = 1.5) -> SplitArrays:
    """n samples whose text carries a clear class signal, vision a weak one, audio none."""
    labels = rng.integers(0, num_classes, size=n)
    strength = {"text": signal, "vision": signal / 3, "audio": 0.0}
    features, lengths = {}, {}
    for m, dim in DIMS.items():
        x = rng.normal(size=(n, STEPS[m], dim)).astype(np.float32)
        x[:, :, 0] += strength[m] * (labels[:, None] - 1)
        length = rng.integers(1, STEPS[m] + 1, size=n)
        for i, L in enumerate(length):
            x[i, L:] = 0.0
        features[m], lengths[m] = x, length.astype(np.int64)
    regression = (labels - 1).astype(np.float32)
    ids = np.array([f"clip{i}" for i in range(n)])
    return SplitArrays(features, lengths, labels.astype(np.int64), regression, ids)


def make_tiny_dataset(n_train: int = 64, n_valid: int = 24, n_test: int = 24, seed: int = 0,
                      num_classes: int = 3, name: str = "synth-mosi") -> Dataset:
    rng = np.random.default_rng(seed)
    train = tiny_split(n_train, rng, num_classes)
    return Dataset(
        name=name, num_classes=num_classes, modalities=("text", "audio", "vision"),
        train=train, valid=tiny_split(n_valid, rng, num_classes), test=tiny_split(n_test, rng, num_classes),
        dev_index=np.arange(0, n_train, 4), fingerprint=f"tiny-{seed}", synthetic=True, source="tests",
    )


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
