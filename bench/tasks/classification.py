"""Classification (the thesis's protocol): K classes, cross-entropy, the best validation loss wins."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from bench.config import MODALITIES
from bench.data.types import SplitArrays
from bench.metrics import classification_metrics
from bench.tasks.base import Task, register

MIN_PROB = 1e-8  # the probability floor of `sample_error` (AGM's official clamp)


@register
class Classification(Task):
    name = "classification"
    description = "K sentiment classes (MOSI 3, MOSEI 7), cross-entropy, checkpoint on validation loss"
    target_dtype = torch.long
    metric_directions: ClassVar[dict[str, str]] = {
        "acc": "max", "loss": "min", "f1": "max", **{f"acc_{m}": "max" for m in MODALITIES},
        **{f"loss_{m}": "min" for m in MODALITIES},
        # MSA-style extras derived from the class probabilities (bench.metrics.sentiment_metrics)
        "acc2_has0": "max", "acc2_non0": "max", "mae": "min", "corr": "max",
    }
    headline = "acc"
    summary_metrics = ("acc", "loss")
    progress_metrics = ("acc", "loss")
    valid_metrics = ("acc", "loss")

    def output_size(self, num_classes: int) -> int:
        return num_classes

    def targets(self, split: SplitArrays, where: str) -> np.ndarray:
        return np.asarray(split.labels)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(outputs, targets)

    def per_sample_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """-log p(y_i) of each sample: outputs (B, K) logits, targets (B,) classes -> (B,)."""
        return F.cross_entropy(outputs, targets, reduction="none")

    def sample_error(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """-log max(p(y_i), 1e-8): the NLL with p floored (AGM's official clamp), detached: (B,)."""
        nll = F.cross_entropy(outputs.detach().float(), targets, reduction="none")
        return nll.clamp(max=-math.log(MIN_PROB))

    def hits(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """argmax == y: (B,) bool."""
        return outputs.detach().argmax(dim=1) == targets

    def average_members(self, member_outputs: Sequence[Tensor]) -> Tensor:
        """log of the members' mean class distribution (B, K): cross-entropy on it is the soft vote's NLL."""
        mean_probs = torch.stack([torch.softmax(z, dim=1) for z in member_outputs]).mean(dim=0)
        return torch.log(mean_probs.clamp_min(1e-12))

    def metrics(self, outputs: Tensor, targets: Tensor, modality_outputs: Mapping[str, Tensor],
                split: SplitArrays) -> dict[str, float]:
        regression = None if split.regression is None else np.asarray(split.regression)
        # MAE / Corr of the expected class value only mean something for unit-step classes on [-3, 3]
        spec = self.dataset_spec
        expected_value = spec is None or spec.metric_set == "mmsa"
        return classification_metrics(outputs, targets, modality_outputs, regression, expected_value)

    def epoch_series(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """acc (%) and raw CE, fused and per modality (the thesis's curves), whatever the modality names."""
        logs = {}
        for key, value in metrics.items():
            name, _, modality = key.partition("_")
            if name in ("acc", "loss"):  # acc_<m> / loss_<m>: every modality the data declares
                series_key = f"{name}/{modality}" if modality else name
                logs[series_key] = value / 100.0 if name == "loss" else value
        return logs

    def prediction_columns(self, outputs: Tensor, targets: Tensor, modality_outputs: Mapping[str, Tensor],
                           split: SplitArrays) -> dict[str, np.ndarray]:
        """target, predicted class, probs (N, K), score (the continuous label) and prediction_<m> (argmax)."""
        probs = torch.softmax(outputs.double(), dim=1).numpy()  # (N, K)
        columns: dict[str, np.ndarray] = {
            "target": targets.cpu().numpy().astype(np.int64),
            "prediction": probs.argmax(axis=1).astype(np.int64),
        }
        columns["probs"] = probs
        if split.regression is not None:
            columns["score"] = np.asarray(split.regression, dtype=np.float64)
        for modality, mod_outputs in modality_outputs.items():
            columns[f"prediction_{modality}"] = mod_outputs.argmax(dim=1).cpu().numpy().astype(np.int64)
        return columns

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The store's original metric columns, in their original order."""
        return ("test_acc", "test_loss", "val_acc", "val_loss", "test_f1", *(f"test_acc_{m}" for m in MODALITIES))
