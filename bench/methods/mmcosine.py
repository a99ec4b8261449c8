"""MMCosine: multi-modal cosine loss (Xu, Feng, Zhang and Hu, ICASSP 2023, "MMCosine: Multi-Modal Cosine Loss
Towards Balanced Audio-Visual Fine-Grained Learning"; official code GeWu-Lab/MMCosine_ICASSP23, main_CD.py
`train_epoch` / `valid`, models/fusion_modules.py `ConcatFusion`; docs/methods/mmcosine.md).

The run model's linear fusion head W = [W_m1 | W_m2 | ...] (K x sum D_m) is read per modality: W_m holds the
columns of modality m (`head_slices`). Per batch, with z_m the encoder output of m (B, D_m):

    c_m = s * normalize(z_m) normalize(W_m)^T          (B, K): the cosine of z_m and each class row of W_m,
                                                        times the scaling s (official default 10)
    L   = CE(sum_m c_m, y)                             the head's bias takes no part in it

Evaluation (`eval_logits`): "head" (default, the official `valid`): the fused logits are the run model's
plain head output W [z_1; ...] + b; "cosine" (BalanceBenchmark's MMCosine_trainer validation_step): the
fused logits are sum_m c_m. In both, the per-modality outputs are the c_m (the official acc_a / acc_v).
Outside the modulation window the loss is the plain task loss on the head's output (BalanceBenchmark's
modulation_starts / modulation_ends; the official code has no window). Classification only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.config import ConfigError, RunConfig
from bench.methods.base import BuildContext, Logs, Method, ThesisSettings, TrainState, check_choices, register
from bench.methods.heads import ModelWrapper

EVAL_LOGITS = ("head", "cosine")


@dataclass(frozen=True)
class MMCosineParams:
    scaling: float = 10.0  # s: official main_CD.py --scaling default and README (BalanceBenchmark's config: 15)
    eval_logits: str = "head"  # "head": the official valid (plain head output); "cosine": BalanceBenchmark


# -- the formulas ------------------------------------------------------------------------------------


def cosine_logits(features: Tensor, weight: Tensor, scaling: float) -> Tensor:
    """s * cos(z_i, w_k) for every sample i and class k: features (B, D), weight (K, D) -> (B, K).

    Each sample's feature and each class row of the weight are L2-normalised (the official code normalises
    W^T (D, K) along dim 0, i.e. each class's row of W over its D columns).
    """
    return scaling * F.normalize(features, dim=1) @ F.normalize(weight, dim=1).T


def target_logit_mean(logits: Tensor, labels: Tensor) -> float:
    """Mean over the batch of the true class's logit (the official tensorboard `logit_a` / `logit_v`)."""
    return float(logits.detach().gather(1, labels.view(-1, 1)).mean())


# -- the model: the run's model, read through cosine logits ----------------------------------------------


class CosineModel(ModelWrapper):
    """The run's model (a linear fusion head over the concatenated z_m) and its scaled cosine logits; every
    other attribute (encoders, encode, fuse, head, ...) is the run model's."""

    def __init__(self, model: nn.Module, scaling: float, eval_logits: str = "head") -> None:
        super().__init__()
        self.model = model
        self.scaling = scaling
        self.eval_logits = eval_logits

    def modality_cosine_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """c_m for every modality: (B, K), through the head's weight columns of m."""
        weight = self.model.head.weight  # (K, sum D_m)
        return {m: cosine_logits(features[m], weight[:, cols], self.scaling)
                for m, cols in self.model.head_slices().items()}

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        cosine = self.modality_cosine_logits(features)
        logits = sum(cosine.values()) if self.eval_logits == "cosine" else self.fuse(features)
        return ModelOutput(logits=logits, features=features,
                           modality_logits={m: c.detach() for m, c in cosine.items()})


# -- the method -------------------------------------------------------------------------------------------


@register
class MMCosine(Method):
    name = "mmcosine"
    Params = MMCosineParams
    description = "MMCosine: per-modality L2-normalised features and head weights, scaled cosine logits summed"
    display_name = "MMCosine"
    table_order = 311
    requires = frozenset({"features", "linear_head"})
    # Official main_CD.py: --scaling 10, cosine loss at every step of every epoch.
    thesis = ThesisSettings(params={"scaling": 10.0, "eval_logits": "head"}, window=(0, -1))

    no_dev_set = "computes no ratio or score from the data"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.scaling > 0:
            raise ConfigError(f"mmcosine: scaling must be > 0, got {params.scaling}")
        check_choices("mmcosine", params, {"eval_logits": EVAL_LOGITS})

    def build(self, ctx: BuildContext) -> nn.Module:
        return CosineModel(ctx.model(), ctx.params.scaling, ctx.params.eval_logits)

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        features = model.encode(batch)  # m -> (B, D_m)
        cosine = model.modality_cosine_logits(features)  # m -> (B, K)
        labels = batch.labels
        logs: Logs = {"in_window": float(state.in_window)}
        for m, logits in cosine.items():
            logs[f"logit_target/{m}"] = target_logit_mean(logits, labels)
            logs[f"loss_unimodal/{m}"] = float(F.cross_entropy(logits.detach(), labels))
        if not state.in_window:
            return state.task.loss(model.fuse(features), labels), logs
        return state.task.loss(sum(cosine.values()), labels), logs
