"""UMT and UME (Du, Teng, Li, Liu, Yuan, Wang, Yuan and Zhao, ICML 2023, "On Uni-Modal Feature Learning in
Supervised Multi-Modal Learning"; docs/methods/umt.md). No official code was found; UMT follows
BalanceBenchmark's trainer (GeWu-Lab/BalanceBenchmark, balancemm/trainer/UMT_trainer.py) and the paper's
description; UME, which BalanceBenchmark does not have, is reconstructed from the paper's description.

Both build on the same seed's unimodal runs (`needs`, as unipre and ensemble: bench/methods/baselines.py).

UMT (Uni-Modal Teacher): a fresh multimodal model (the student) and, frozen, the unimodal model of every
modality m (its teacher). Per batch, with z_m the student's encoder output and t_m the teacher's (B, D_m):

    L = CE(f(z), y) + w * sum_m MSE(z_m, t_m)       MSE: the mean over the B x D_m elements; w = 10

Outside the modulation window only CE(f(z), y) (BalanceBenchmark's modulation_starts / _ends).

UME (Uni-Modal Ensemble): no training of its own; the prediction is the mean of the unimodal models' output
logits ("logits", our reading of the paper), or of their class probabilities ("probabilities", the
harness's soft-voting `ensemble`). Both are classification only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import (
    RECONSTRUCTED,
    BuildContext,
    Logs,
    Method,
    ThesisSettings,
    TrainState,
    check_choices,
    register,
)
from bench.methods.baselines import SoftVotingEnsemble, mean_outputs, unimodal_config, unimodal_models
from bench.methods.heads import ModelWrapper
from bench.tasks import make_task

UME_COMBINES = ("logits", "probabilities")


@dataclass(frozen=True)
class UMTParams:
    distill_weight: float = 10.0  # w: BalanceBenchmark's UMT `scaling` (configs/trainer_config.yaml)


@dataclass(frozen=True)
class UMEParams:
    combine: str = "logits"  # "logits": the mean of the unimodal logits; "probabilities": the soft vote


# -- the formulas ------------------------------------------------------------------------------------


def distillation_losses(student: Mapping[str, Tensor], teacher: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """MSE(z_m, t_m) per modality: the mean over every element of (B, D_m); the teacher side is a constant."""
    return {m: F.mse_loss(z, teacher[m].detach()) for m, z in student.items()}


def umt_objective(fused_loss: Tensor, distill: Mapping[str, Tensor], weight: float) -> Tensor:
    """L = L_fused + w * sum_m MSE_m."""
    return fused_loss + weight * sum(distill.values())


# -- the model: the student and its frozen teachers -------------------------------------------------------


class TeacherStudent(ModelWrapper):
    """The run's model (the student, `model`; forward is its own) and the frozen unimodal models (`teachers`),
    kept in eval mode whatever mode the wrapper is put in."""

    def __init__(self, model: nn.Module, teachers: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.model = model
        self.teachers = nn.ModuleDict(dict(teachers))
        for param in self.teachers.parameters():
            param.requires_grad_(False)
        self.teachers.eval()

    def train(self, mode: bool = True) -> TeacherStudent:
        super().train(mode)
        self.teachers.eval()
        return self

    @torch.no_grad()
    def teacher_features(self, batch: Batch) -> dict[str, Tensor]:
        """t_m of every modality: (B, D_m), each from its own unimodal model."""
        return {m: teacher.encode(batch)[m] for m, teacher in self.teachers.items()}


# -- the methods ------------------------------------------------------------------------------------------


@register
class UMT(Method):
    name = "umt"
    display_name = "UMT"
    table_order = 312
    description = "Uni-Modal Teacher: the same seed's unimodal encoders distilled (feature MSE) into a fresh model"
    Params = UMTParams
    requires = frozenset({"features", "single_modality"})
    thesis = ThesisSettings(params={"distill_weight": 10.0}, window=(0, -1))
    no_dev_set = "computes no ratio or score from the data"

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        return [unimodal_config(cfg, m) for m in cfg.modalities]

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.distill_weight >= 0:
            raise ConfigError(f"umt: distill_weight must be >= 0, got {params.distill_weight}")

    def build(self, ctx: BuildContext) -> nn.Module:
        return TeacherStudent(ctx.model(), unimodal_models(ctx))

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        features = model.encode(batch)  # m -> z_m (B, D_m), the student's
        fused_loss = state.task.loss(model.fuse(features), batch.labels)
        distill = distillation_losses(features, model.teacher_features(batch))
        logs: Logs = {"loss_multimodal": float(fused_loss.detach()), "in_window": float(state.in_window)}
        logs.update({f"distill/{m}": float(value.detach()) for m, value in distill.items()})
        if not state.in_window:
            return fused_loss, logs
        return umt_objective(fused_loss, distill, state.params.distill_weight), logs


@register
class UME(Method):
    name = "ume"
    Params = UMEParams
    trains = False
    description = "Uni-Modal Ensemble: the mean of the same seed's unimodal models' logits (no training)"
    display_name = "UME"
    table_order = 313
    requires = frozenset({"single_modality"})
    provenance = RECONSTRUCTED
    thesis = ThesisSettings(params={"combine": "logits"})
    no_dev_set = "computes no ratio or score from the data"

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        return [unimodal_config(cfg, m) for m in cfg.modalities]

    def validate(self, cfg: RunConfig, params: Any) -> None:
        check_choices("ume", params, {"combine": UME_COMBINES})

    def build(self, ctx: BuildContext) -> nn.Module:
        task = make_task(ctx.cfg.task, dict(ctx.cfg.task_params))
        return SoftVotingEnsemble(unimodal_models(ctx), task, mean_outputs if ctx.params.combine == "logits" else None)
