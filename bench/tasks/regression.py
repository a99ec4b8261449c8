"""Regression (the MSA field's protocol, as MMSA runs it): predict the score in the dataset's range.

Loss: L1 (MMSA's default) or MSE. Metrics: the run's dataset spec names the set (`metric_set`,
bench.metrics.METRIC_SETS): "mmsa" (MOSI / MOSEI, [-3, 3]: Acc-2 has0/non0, F1, Acc-7, Acc-5, MAE,
Corr; the store's columns of always) or "mmsa-sims" (CH-SIMS, [-1, 1]: Acc-2/3/5, F1, MAE, Corr, in
their own columns). The checkpoint is the best validation loss (MMSA's KeyEval "Loss") or, as an
option, the best of any metric of the set (e.g. MAE, has0 Acc-2).

Per-modality labels (a spec's `per_modality_labels`, CH-SIMS `regression_labels_T/_A/_V`): each modality's
output (the model's per-modality prediction, `prediction_<m>`) is scored against its own label (`<m>_own_<k>`)
and against the multimodal label (`<m>_mm_<k>`) for the keys MODALITY_VIEW_KEYS, and the predictions file
keeps each modality's own label as `target_<m>` beside `prediction_<m>`. On the SIMS metric set these are
result columns (`test_<m>_own_acc2`, ...; MODALITY_VIEW_MODALITIES); a dataset without per-modality labels
keeps its columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from bench.config import ConfigError
from bench.data.types import DataError, SplitArrays
from bench.metrics import METRIC_SETS, REGRESSION_METRICS, SIMS_REGRESSION_METRICS, MetricSet
from bench.tasks.base import Selection, Task, register

LOSSES = ("l1", "mse")
# any metric of a set may pick the checkpoint (SATI: acc2_has0); use_dataset checks it is the run's set's
CHECKPOINTS = ("loss", *dict.fromkeys((*REGRESSION_METRICS, *SIMS_REGRESSION_METRICS)))
DEFAULT_BOUND = 3.0  # MOSI / MOSEI scores lie in [-3, 3]
# The per-modality view: these metrics of each modality's output against its own label ("own") and against
# the multimodal label ("mm"). acc2 and corr do not depend on the output's scale (a late-fusion modality
# output is its additive share of the fused prediction); mae does, and is kept as MMSA reports it.
MODALITY_VIEW_KEYS = ("acc2", "corr", "mae")
MODALITY_VIEW_AGAINST = ("own", "mm")
MODALITY_VIEW_MODALITIES = ("text", "audio", "vision")  # the SIMS layout's modalities: result columns


def modality_view_key(modality: str, against: str, key: str) -> str:
    """'text_own_acc2': metric `key` of modality `modality`'s output against its own label or the multimodal one."""
    return f"{modality}_{against}_{key}"


@dataclass(frozen=True)
class RegressionParams:
    loss: str = "l1"  # "l1" (MMSA) or "mse"
    checkpoint: str = "loss"  # validation metric behind checkpoint / early stop / scheduler: "loss" or a metric

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint must be one of {', '.join(CHECKPOINTS)}, got {self.checkpoint!r}")


def modality_view_columns() -> tuple[str, ...]:
    """The SIMS metric set's per-modality result columns: test_<m>_<own|mm>_<k>."""
    return tuple(f"test_{modality_view_key(m, a, k)}" for m in MODALITY_VIEW_MODALITIES
                 for a in MODALITY_VIEW_AGAINST for k in MODALITY_VIEW_KEYS)


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

    metric_set: MetricSet = METRIC_SETS["mmsa"]  # until use_dataset says otherwise: MOSI / MOSEI
    bound: float = DEFAULT_BOUND
    modality_labels: tuple[str, ...] = ()  # modalities with their own label in the data (the spec says)

    def use_dataset(self, spec: Any) -> None:
        """Take the spec's metric set and score range; a set other than "mmsa" brings its own metric
        keys (and so its own result columns, directions and headline)."""
        super().use_dataset(spec)
        if spec is None:
            return
        self.modality_labels = tuple(spec.per_modality_labels)
        self.metric_set = METRIC_SETS[spec.metric_set]
        self.bound = spec.labels.bound if spec.labels.score_range is not None else DEFAULT_BOUND
        if spec.metric_set == "mmsa":
            return
        keys = self.metric_set.keys
        if self.params.checkpoint not in ("loss", *keys):
            raise ConfigError(f"checkpoint {self.params.checkpoint!r} is not a metric of {spec.name}'s set "
                              f"{spec.metric_set!r}; choose from loss, {', '.join(keys)}")
        # instance attributes over the class's MOSI / MOSEI ones (the class keeps the store's pinned columns)
        self.metric_directions = {**self.metric_set.directions, "loss": "min"}  # type: ignore[misc]
        self.headline = keys[0]  # type: ignore[misc]
        self.summary_metrics = keys  # type: ignore[misc]
        self.progress_metrics = (keys[0], "mae")  # type: ignore[misc]
        self.valid_metrics = tuple(self.metric_directions)  # type: ignore[misc]
        self.epoch_metrics = ("loss", "mae", "corr", keys[0])  # type: ignore[misc]

    @classmethod
    def metric_set_columns(cls, metric_set: str = "mmsa") -> tuple[str, ...]:
        """Today's columns for "mmsa"; test_<k> then val_<k> of the set's metrics and loss for another set."""
        if metric_set == "mmsa":
            return cls.columns()
        keys = (*METRIC_SETS[metric_set].keys, "loss")
        view = modality_view_columns() if metric_set == "mmsa-sims" else ()
        return (*(f"test_{k}" for k in keys), *(f"val_{k}" for k in keys), *view)

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

    def per_sample_loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """|o_i - y_i| (l1) or (o_i - y_i)^2 (mse) of each sample: outputs (B, 1), targets (B,) -> (B,)."""
        difference = outputs.squeeze(1) - targets
        return difference.abs() if self.params.loss == "l1" else difference.pow(2)

    def sample_error(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """(o_i - y_i)^2 of each sample, detached, whatever the training loss (MCR's and AGM's score): (B,)."""
        return (outputs.detach().float().squeeze(1) - targets.float()) ** 2

    def hits(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The sign is right: (o_i > 0) == (y_i > 0), (B,) bool (Acc-2's has-zero reading)."""
        return (outputs.detach().squeeze(1) > 0) == (targets > 0)

    def average_members(self, member_outputs: Sequence[Tensor]) -> Tensor:
        """The members' mean score (B, 1)."""
        return torch.stack(list(member_outputs)).mean(dim=0)

    def selection(self) -> Selection:
        return Selection(self.params.checkpoint, self.metric_directions[self.params.checkpoint])

    def metrics(self, outputs: Tensor, targets: Tensor, modality_outputs: Mapping[str, Tensor],
                split: SplitArrays) -> dict[str, float]:
        prediction = outputs.squeeze(1).double()  # (N,)
        truth = targets.double().cpu()
        metrics = self.metric_set.compute(prediction.numpy(), truth.numpy(), self.bound)
        metrics["loss"] = float(self.loss(outputs.double(), truth))
        out = {k: metrics[k] for k in (*self.metric_set.keys, "loss")}
        out.update(self.modality_view(modality_outputs, truth.numpy(), split))
        return out

    def modality_view(self, modality_outputs: Mapping[str, Tensor], truth: np.ndarray,
                      split: SplitArrays) -> dict[str, float]:
        """`<m>_own_<k>` and `<m>_mm_<k>` for each modality that has an output and its own label here."""
        out: dict[str, float] = {}
        for modality in self.modality_labels:
            if modality not in modality_outputs or modality not in split.modality_scores:
                continue
            prediction = modality_outputs[modality].squeeze(1).double().cpu().numpy()  # (N,)
            own = np.asarray(split.modality_scores[modality], dtype=np.float64)  # (N,)
            for against, target in (("own", own), ("mm", truth)):
                scored = self.metric_set.compute(prediction, target, self.bound)
                out.update({modality_view_key(modality, against, k): scored[k] for k in MODALITY_VIEW_KEYS})
        return out

    def prediction_columns(self, outputs: Tensor, targets: Tensor, modality_outputs: Mapping[str, Tensor],
                           split: SplitArrays) -> dict[str, np.ndarray]:
        """target, prediction, prediction_<m> (the model's per-modality outputs) and, where the data has
        per-modality labels, target_<m> (modality m's own label) beside it."""
        columns = {"target": targets.cpu().numpy().astype(np.float64),
                   "prediction": outputs.squeeze(1).cpu().numpy().astype(np.float64)}
        for modality, mod_outputs in modality_outputs.items():
            columns[f"prediction_{modality}"] = mod_outputs.squeeze(1).cpu().numpy().astype(np.float64)
            if modality in self.modality_labels and modality in split.modality_scores:
                columns[f"target_{modality}"] = np.asarray(split.modality_scores[modality], dtype=np.float64)
        return columns
