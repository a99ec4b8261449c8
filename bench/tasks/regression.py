"""Regression (the MSA field's protocol, as MMSA runs it): predict the score in [-3, 3].

Loss: L1 (MMSA's default) or MSE. Metrics: bench.metrics.regression_metrics, MMSA's definitions.
The checkpoint is the best validation loss (MMSA's KeyEval "Loss") or, as an option,
the best of any MMSA metric (e.g. MAE, has0 Acc-2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from bench.data.types import DataError, SplitArrays
from bench.metrics import REGRESSION_METRICS, regression_metrics
from bench.tasks.base import Selection, Task, register

LOSSES = ("l1", "mse")
CHECKPOINTS = ("loss", *REGRESSION_METRICS)  # any MMSA metric may pick the checkpoint (SATI: acc2_has0)


@dataclass(frozen=True)
class RegressionParams:
    loss: str = "l1"  # "l1" (MMSA) or "mse"
    checkpoint: str = "loss"  # validation metric behind checkpoint / early stop / scheduler: "loss" or a metric

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {self.checkpoint!r}")


@register
class Regression(Task):
    name = "regression"
    Params = RegressionParams
    description = "sentiment score in [-3, 3], L1 loss, MMSA metrics (Acc-2 has0/non0, F1, Acc-7, Acc-5, MAE, Corr)"
    target_dtype = torch.float32
    metric_directions: ClassVar[dict[str, str]] = {
        "acc2_has0": "max", "acc2_non0": "max", "f1_has0": "max", "f1_non0": "max", "acc7": "max",
        "acc5": "max", "mae": "min", "corr": "max", "loss": "min",
    }
    headline = "acc2_non0"
    summary_metrics = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "mae", "corr")
    progress_metrics = ("acc2_non0", "mae")
    valid_metrics = tuple(metric_directions)
    epoch_metrics = ("loss", "mae", "corr", "acc2_non0", "acc7")

    def output_size(self, num_classes: int) -> int:
        return 1

    def targets(self, split: SplitArrays, where: str) -> np.ndarray:
        if split.regression is None:
            raise DataError(f"{where}: no regression labels (scores) in this data: --task regression needs them")
        return np.asarray(split.regression, dtype=np.float32)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        # outputs: (B, 1); targets: (B,)
        prediction = outputs.squeeze(1)
        if self.params.loss == "mse":
            return F.mse_loss(prediction, targets)
        return F.l1_loss(prediction, targets)

    def selection(self) -> Selection:
        return Selection(self.params.checkpoint, self.metric_directions[self.params.checkpoint])

    def metrics(self, outputs: Tensor, targets: Tensor, modality_outputs: Mapping[str, Tensor],
                split: SplitArrays) -> dict[str, float]:
        prediction = outputs.squeeze(1).double()  # (N,)
        truth = targets.double().cpu()
        metrics = regression_metrics(prediction.numpy(), truth.numpy())
        metrics["loss"] = float(self.loss(outputs.double(), truth))
        return {k: metrics[k] for k in (*REGRESSION_METRICS, "loss")}

    def prediction_columns(self, outputs: Tensor, targets: Tensor, modality_outputs: Mapping[str, Tensor],
                           split: SplitArrays) -> dict[str, np.ndarray]:
        """target, prediction, and prediction_<m> (the model's per-modality outputs)."""
        columns = {"target": targets.cpu().numpy().astype(np.float64),
                   "prediction": outputs.squeeze(1).cpu().numpy().astype(np.float64)}
        for modality, mod_outputs in modality_outputs.items():
            columns[f"prediction_{modality}"] = mod_outputs.squeeze(1).cpu().numpy().astype(np.float64)
        return columns
