"""G2D, Gradient-Guided Distillation (Rakib and Bagavathi, "G2D: Boosting Multimodal Learning with
Gradient-Guided Distillation", ICCV 2025; official code rAIson-Lab/G2D: student.py (train,
distillation_loss, feature_loss), utils/utils.py (modulate_gradients_based_on_scores_from_two_modalities),
config.py (the 'aT+aTF+vT+vTF-to-mS' experiment), teacher.py; docs/methods/g2d.md).

The teachers are the same seed's unimodal runs (their best checkpoints, frozen, eval mode). Per batch,
with s the student's fused logits, z_m its encoder outputs, t_m and z_m^T teacher m's logits and features:

    L = CE(s, y) + sum_m [ w_logit T^2 KL(softmax(t_m / T) || softmax(s / T)) + w_feat MSE(z_m, z_m^T) ]
        (T = 1, w_logit = w_feat = 1: the official configuration)

Sequential modality prioritisation, after the backward pass and inside the modulation window: each
teacher's confidence on the batch, rho_m = sum_i softmax(t_m)_i[y_i]; the gradient of every weight tensor
(>= 2 dims) of encoder m is multiplied by k_m, k_m = 1 for the least confident teacher's modality and 0
for the others (two modalities: the official rule, the more confident teacher's modality is frozen for
the step; a tie leaves every k_m = 1). Classification only.
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
from bench.methods.base import BuildContext, Logs, Method, ThesisSettings, TrainState, register
from bench.methods.baselines import unimodal_config, unimodal_models
from bench.methods.umt import TeacherStudent, distillation_losses

STEP_KEY = "g2d/coefficients"  # the step's k_m, from `loss` to `after_backward`


@dataclass(frozen=True)
class G2DParams:
    logit_weight: float = 1.0  # w_logit (config.py: logit_audio_loss_weight = logit_video_loss_weight = 1.0)
    feature_weight: float = 1.0  # w_feat (config.py: audio/video_feature_loss_weight = 1.0)
    kd_temperature: float = 1.0  # T (config.py: temp_audio = temp_video = 1)


# -- the formulas ------------------------------------------------------------------------------------


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 KL(softmax(t / T) || softmax(s / T)), summed over classes, mean over the batch: (B, K) each."""
    log_student = F.log_softmax(student_logits / temperature, dim=1)
    teacher = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * temperature ** 2


def confidence_scores(teacher_logits: Mapping[str, Tensor], labels: Tensor) -> dict[str, float]:
    """rho_m = sum over the batch of teacher m's softmax probability of the true class."""
    return {m: float(F.softmax(t.detach().double(), dim=1).gather(1, labels[:, None]).sum())
            for m, t in teacher_logits.items()}


def prioritised_coefficients(scores: Mapping[str, float]) -> dict[str, float]:
    """k_m: 1 for the least confident teacher's modality, 0 for the others; all 1 when every score ties."""
    low = min(scores.values())
    if all(s == low for s in scores.values()):
        return {m: 1.0 for m in scores}
    weakest = min(scores, key=lambda m: scores[m])  # first in modality order among equals
    return {m: float(m == weakest) for m in scores}


# -- the method -------------------------------------------------------------------------------------


@register
class G2D(Method):
    name = "g2d"
    Params = G2DParams
    description = "Gradient-Guided Distillation: unimodal teachers, logit and feature distillation, SMP"
    display_name = "G2D"
    table_order = 234
    requires = frozenset({"features", "encoders", "single_modality"})
    # config.py: weights 1, temperature 1; modulation from epoch 0 to 150 (of 300).
    thesis = ThesisSettings(params={"logit_weight": 1.0, "feature_weight": 1.0, "kd_temperature": 1.0},
                            window=(0, 150))

    no_dev_set = "measures its teachers on the training batch"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.logit_weight >= 0 or not params.feature_weight >= 0:
            raise ConfigError("g2d needs logit_weight >= 0 and feature_weight >= 0")
        if not params.kd_temperature > 0:
            raise ConfigError(f"g2d kd_temperature must be > 0, got {params.kd_temperature}")

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        return [unimodal_config(cfg, m) for m in cfg.modalities]

    def build(self, ctx: BuildContext) -> nn.Module:
        return TeacherStudent(ctx.model(), unimodal_models(ctx))

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: G2DParams = state.params
        labels = batch.labels
        with torch.no_grad():
            teacher_logits = {m: teacher(batch).logits for m, teacher in model.teachers.items()}  # m -> (B, K)
        features = model.encode(batch)  # m -> z_m (B, D_m)
        feature_terms = distillation_losses(features, model.teacher_features(batch))  # UMT's feature MSE
        fused = model.fuse(features)  # (B, K)
        objective = state.task.loss(fused, labels)
        logs: Logs = {"loss_multimodal": float(objective.detach())}
        for m in features:
            logit_term = distillation_loss(fused, teacher_logits[m], params.kd_temperature)
            feature_term = feature_terms[m]
            objective = objective + params.logit_weight * logit_term + params.feature_weight * feature_term
            logs[f"loss_logit_kd/{m}"] = float(logit_term.detach())
            logs[f"loss_feature_kd/{m}"] = float(feature_term.detach())
        scores = confidence_scores(teacher_logits, labels)
        state.scratch[STEP_KEY] = prioritised_coefficients(scores)
        logs.update({f"teacher_score/{m}": s for m, s in scores.items()})
        return objective, logs

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        coefficients: dict[str, float] = state.scratch.pop(STEP_KEY)
        applied = coefficients if state.in_window else {m: 1.0 for m in coefficients}
        for m, k in applied.items():
            if k != 1.0:
                for param in model.encoder_parameters(m):  # weight tensors (>= 2 dims), as the official 4-D
                    if param.grad is not None:
                        param.grad.mul_(k)
        return {f"coefficient/{m}": k for m, k in applied.items()}
