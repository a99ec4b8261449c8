"""CML: Calibrating Multimodal Learning (Ma, Zhang, Zhang, Wu, Fu, Zhou and Hu, ICML 2023; official code
QingyangZhang/CML, cpm/CPM_Nets.py `rank_loss` and `train`, cpm/util/get_sn.py `get_sn_for_multi_input`,
cpm/main.py; second reading BalanceBenchmark's balancemm/trainer/CML_trainer.py; docs/methods/cml.md).

The principle: the confidence must not rise when a modality is removed. Each training sample gets a chain
of nested modality subsets S_0 = all, S_1, ..., S_{n-1}: S_j drops the first j modalities of an order.
The prediction on S_j is the run model's fusion of the features with the dropped modalities' z_m set to
zero (for late fusion: sum_{m in S_j} z_m W_m^T + b, BalanceBenchmark's out_s - out_removed + b/n).
With c_j = max_k softmax(f(S_j))_k and p_j its argmax, per batch:

    L = (1/n) sum_j CE(f(S_j), y) + lam * sum_{j < n-1} R_j
    R_j = sum_i ReLU((c_{j+1,i} - c_{j,i}) * s_i),   s_i = not (p_{j+1,i} = y_i and p_{j,i} != y_i)   (official)
        = ReLU(sum_i (c_{j+1,i} - c_{j,i}))                                                       (BalanceBenchmark)

Orders (`order`): "sample" (official): a random order per training sample, drawn once for the run;
"epoch" (BalanceBenchmark): one random order per epoch shared by every sample. Outside the modulation
window: CE(f(S_0), y) alone. Classification only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import Logs, Method, ThesisSettings, TrainState, check_choices, register

ORDER_KEY = "cml/orders"  # (N_train, n) int64: each training row's modality order ("sample"), or (1, n)
ORDERS = ("sample", "epoch")
PENALTIES = ("masked", "batch_sum")


@dataclass(frozen=True)
class CMLParams:
    lam: float = 0.1  # weight of the confidence penalty (BalanceBenchmark's lam; the official --beta sweeps 0..100)
    penalty: str = "masked"  # "masked": official rank_loss; "batch_sum": BalanceBenchmark's conf_loss
    order: str = "sample"  # "sample": official per-sample orders; "epoch": BalanceBenchmark's per-epoch order


# -- the formulas ------------------------------------------------------------------------------------


def confidence_and_prediction(logits: Tensor) -> tuple[Tensor, Tensor]:
    """c = max_k softmax(logits)_k (B,), differentiable, and its argmax (B,)."""
    return torch.softmax(logits, dim=1).max(dim=1)


def confidence_penalty(more: tuple[Tensor, Tensor], fewer: tuple[Tensor, Tensor], labels: Tensor,
                       penalty: str = "masked") -> tuple[Tensor, int]:
    """R between a subset (`more`: confidence, prediction) and the subset with one modality fewer; and the
    number of samples the mask keeps (official `sign.sum()`; every sample for "batch_sum").

    masked:    sum_i ReLU((c_fewer,i - c_more,i) * s_i), s_i = 0 only where the smaller subset is right and
               the larger one wrong (the official "trick 1")
    batch_sum: ReLU(sum_i (c_fewer,i - c_more,i))  (BalanceBenchmark: its mask is computed but unused)
    """
    (conf_more, pred_more), (conf_fewer, pred_fewer) = more, fewer
    gap = conf_fewer - conf_more  # (B,)
    if penalty == "batch_sum":
        return torch.relu(gap.sum()), int(gap.numel())
    keep = ~((pred_fewer == labels) & (pred_more != labels))  # (B,) bool
    return torch.relu(gap * keep.to(gap.dtype)).sum(), int(keep.sum())


def chain_keep_masks(orders: Tensor, modalities: int) -> list[Tensor]:
    """For orders (B, n) (each row a permutation of 0..n-1), the keep masks (B, n) of S_0, ..., S_{n-1}:
    S_j drops the modalities at the first j places of each row's order."""
    masks = []
    keep = torch.ones(orders.shape[0], modalities, dtype=torch.bool)
    for j in range(modalities):
        if j > 0:
            keep = keep.clone()
            keep[torch.arange(orders.shape[0]), orders[:, j - 1]] = False
        masks.append(keep)
    return masks


def masked_features(features: Mapping[str, Tensor], keep: Tensor) -> dict[str, Tensor]:
    """z_m where modality m (by its place in `features`) is kept for the row, zeros where it is dropped."""
    return {m: z * keep[:, k].to(z.dtype).unsqueeze(1) for k, (m, z) in enumerate(features.items())}


def draw_orders(rows: int, modalities: int, generator: torch.Generator | None) -> Tensor:
    """(rows, n) int64: a uniformly random permutation of the modality places per row."""
    return torch.rand(rows, modalities, generator=generator).argsort(dim=1)


# -- the method -------------------------------------------------------------------------------------------


@register
class CML(Method):
    name = "cml"
    Params = CMLParams
    description = "CML: a modality subset's confidence may not exceed the larger subset's (nested chains)"
    display_name = "CML"
    table_order = 314
    requires = frozenset({"features"})
    thesis = ThesisSettings(params={"lam": 0.1, "penalty": "masked", "order": "sample"}, window=(0, -1))

    no_dev_set = "computes no ratio or score from the data"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.lam >= 0:
            raise ConfigError(f"cml: lam must be >= 0, got {params.lam}")
        check_choices("cml", params, {"penalty": PENALTIES, "order": ORDERS})

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        if state.params.order == "sample":
            rows = state.splits["train"].size
            state.scratch[ORDER_KEY] = draw_orders(rows, len(state.cfg.modalities), state.generator)
        return {}

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        if state.params.order == "epoch":
            state.scratch[ORDER_KEY] = draw_orders(1, len(state.cfg.modalities), state.generator)
        return {}

    def batch_orders(self, batch: Batch, state: TrainState) -> Tensor:
        """(B, n): each row's modality order."""
        orders = state.scratch[ORDER_KEY]
        if state.params.order == "epoch":
            return orders.expand(batch.size, -1)
        return orders[batch.index.cpu()]

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: CMLParams = state.params
        features = model.encode(batch)  # m -> (B, D_m), in the run's modality order
        labels = batch.labels
        if not state.in_window:
            return state.task.loss(model.fuse(features), labels), {"in_window": 0.0}
        n = len(features)
        masks = chain_keep_masks(self.batch_orders(batch, state), n)
        subset_logits = [model.fuse(masked_features(features, keep.to(labels.device))) for keep in masks]
        classification = sum(state.task.loss(logits, labels) for logits in subset_logits) / n
        confidences = [confidence_and_prediction(logits) for logits in subset_logits]
        penalty, kept = torch.zeros((), device=labels.device), 0
        for more, fewer in zip(confidences, confidences[1:], strict=False):
            term, count = confidence_penalty(more, fewer, labels, params.penalty)
            penalty, kept = penalty + term, kept + count
        logs: Logs = {"in_window": 1.0, "loss_subsets": float(classification.detach()),
                      "penalty": float(penalty.detach()), "penalty_kept": kept / (batch.size * (n - 1))}
        logs.update({f"confidence_drop{j}": float(c.detach().mean()) for j, (c, _) in enumerate(confidences)})
        return classification + params.lam * penalty, logs
