"""CPSL, "A Conflict-Aware Penalty and Statistical Loss Framework for Balancing Modalities and Enhancing
Stability in Multimodal Sentiment Analysis" (Dai, Liang, Mai; arXiv 2605.28575): reconstructed from the
paper's description. Only the abstract is available and there is no public code (docs/methods/cpsl.md);
what it states is "CP detects and penalises gradient-norm conflicts at each step, SL aligns predicted
distribution statistics with the empirical ones, CP keeps the dominant modality's gradients from interfering
with SL". Every formula below is ours.

On the model `cpsl` (bench/models/cpsl.py) each modality m has an auxiliary output through the shared gated
fusion (parameters theta_s: the gate and fusion layer). One step, per micro-batch:

    L_task = task loss of the fused output;  L_m = task loss of m's auxiliary output
    g_m    = dL_m / d theta_s (flattened);   d = argmax_m |g_m| (the dominant modality)
    ratio  = |g_d| / max_{m != d} |g_m|;     cos = min_{m != d} cos(g_d, g_m)
    conflict when ratio > conflict_ratio (a norm conflict) or cos < 0 (a direction conflict)
    penalty (CP): the dominant modality's auxiliary loss is weighted by
        w_d = conflict_ratio / ratio      on a norm conflict (its gradient norm comes down to conflict_ratio
                                          times the next one's)
        w_d = direction_weight            on a direction conflict only;  w_d = 1 without a conflict
    SL, regression:      (mean(p) - mean(y))^2 + (var(p) - var(y))^2 [+ standardized 3rd, 4th moments]
    SL, classification:  KL(q || p_bar): q the batch's class frequencies, p_bar the batch mean of softmax
    CP on SL: on a conflicting step where g_sl = dL_SL / d theta_s points against g_d (g_sl . g_d < 0), SL's
        gradient on theta_s is g_sl - (g_sl . g_d / |g_d|^2) g_d (PCGrad-style projection)
    L = L_task + aux_weight * sum_m w_m L_m + sl_weight * L_SL

How: `loss` takes g_m and g_sl with autograd.grad on theta_s only (a backward through the heads and the
fusion layer, not the encoders) and returns the objective with the w_m as constants; the projection is a
zero-valued linear term sl_weight * <c, theta_s - theta_s.detach()>, c = (projected - g_sl), whose gradient
on theta_s is exactly the correction. The loop's backward, accumulation and optimizer steps stay as they are.
Every term, the gradient norms, the conflict and the weights are logged per step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.config import ConfigError, RunConfig
from bench.methods.base import RECONSTRUCTED, Batch, Logs, Method, TrainState, register
from bench.models.cpsl import CPSL_PARTS, CPSLParts

EPS = 1e-12
MAX_MOMENTS = 4


@dataclass(frozen=True)
class CPSLParams:
    """`aux_weight`: the auxiliary losses' weight; `sl_weight`: SL's; `conflict_ratio`: the norm ratio
    above which the dominant modality conflicts; `direction_weight`: its weight on a direction-only
    conflict; `moments`: how many moments SL matches (regression: 1 mean, 2 + variance, 3 + skewness,
    4 + kurtosis); `use_cp` / `use_sl`: the ablations."""

    aux_weight: float = 1.0
    sl_weight: float = 0.5
    conflict_ratio: float = 2.0
    direction_weight: float = 0.5
    moments: int = 2
    use_cp: bool = True
    use_sl: bool = True


# -- conflict-aware penalty (pure functions) ---------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """One step's comparison of the per-modality gradients on the shared parameters."""

    dominant: str
    ratio: float  # |g_d| / max_{m != d} |g_m| (inf when the others are all zero)
    cos: float  # min_{m != d} cos(g_d, g_m)
    by_norm: bool
    by_direction: bool

    @property
    def flagged(self) -> bool:
        return self.by_norm or self.by_direction


def flatten(grads: Sequence[Tensor]) -> Tensor:
    """One vector of every gradient tensor, in order."""
    return torch.cat([g.reshape(-1) for g in grads])


def cosine(a: Tensor, b: Tensor) -> float:
    """cos(a, b); 0 when either is zero."""
    denom = float(a.norm() * b.norm())
    return float(a @ b) / denom if denom > EPS else 0.0


def detect_conflict(gradients: Mapping[str, Tensor], conflict_ratio: float) -> Conflict:
    """The dominant modality (largest norm), its norm ratio to the next largest, its least cosine to the
    others, and whether either crosses its threshold (ratio > conflict_ratio, cos < 0)."""
    norms = {m: float(g.norm()) for m, g in gradients.items()}
    dominant = max(norms, key=lambda m: norms[m])
    others = [m for m in gradients if m != dominant]
    runner_up = max(norms[m] for m in others)
    ratio = norms[dominant] / runner_up if runner_up > EPS else (math.inf if norms[dominant] > EPS else 1.0)
    cos = min(cosine(gradients[dominant], gradients[m]) for m in others)
    return Conflict(dominant, ratio, cos, by_norm=ratio > conflict_ratio, by_direction=cos < 0.0)


def dominant_weight(conflict: Conflict, conflict_ratio: float, direction_weight: float) -> float:
    """The penalty: w_d = conflict_ratio / ratio on a norm conflict, direction_weight on a direction-only
    conflict, 1 without one."""
    if conflict.by_norm:
        return conflict_ratio / conflict.ratio
    if conflict.by_direction:
        return direction_weight
    return 1.0


def loss_weights(modalities: Sequence[str], conflict: Conflict | None, conflict_ratio: float,
                 direction_weight: float) -> dict[str, float]:
    """w_m of every auxiliary loss: 1, except the dominant modality's on a conflicting step."""
    weights = {m: 1.0 for m in modalities}
    if conflict is not None:
        weights[conflict.dominant] = dominant_weight(conflict, conflict_ratio, direction_weight)
    return weights


def project_out_conflict(gradient: Tensor, dominant: Tensor) -> Tensor:
    """gradient without its component along `dominant` when they point against each other (dot < 0)."""
    dot, size = float(gradient @ dominant), float(dominant @ dominant)
    if dot >= 0.0 or size <= EPS:
        return gradient
    return gradient - (dot / size) * dominant


def linear_correction(params: Sequence[nn.Parameter], correction: Tensor) -> Tensor:
    """<correction, theta - theta.detach()>: zero-valued, its gradient on theta is `correction`."""
    theta = flatten(list(params))
    return correction.detach() @ (theta - theta.detach())


# -- statistical loss (pure functions) ---------------------------------------------------------------


def standardized_moment(x: Tensor, order: int) -> Tensor:
    """E[((x - mean) / std)^order] over a batch (B,); population std."""
    centred = x - x.mean()
    std = centred.pow(2).mean().clamp(min=EPS).sqrt()
    return (centred / std).pow(order).mean()


def regression_statistics_loss(prediction: Tensor, target: Tensor, moments: int) -> Tensor:
    """(mean diff)^2 [+ (population variance diff)^2 [+ (standardized 3rd / 4th moment diff)^2]]; (B,) each."""
    loss = (prediction.mean() - target.mean()).pow(2)
    if moments >= 2:
        loss = loss + (prediction.var(unbiased=False) - target.var(unbiased=False)).pow(2)
    for order in range(3, moments + 1):
        loss = loss + (standardized_moment(prediction, order) - standardized_moment(target, order)).pow(2)
    return loss


def class_distribution_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """KL(q || p_bar): q the batch's class frequencies, p_bar the batch mean of softmax(logits). logits (B, K)."""
    batch, classes = logits.shape
    log_p_bar = torch.logsumexp(F.log_softmax(logits, dim=1), dim=0) - math.log(batch)  # (K,)
    q = torch.bincount(labels, minlength=classes).to(logits.dtype) / batch  # (K,)
    present = q > 0
    return (q[present] * (q[present].log() - log_p_bar[present])).sum()


def _regression_sl(outputs: Tensor, labels: Tensor, moments: int) -> Tensor:
    return regression_statistics_loss(outputs.squeeze(1), labels, moments)


def _classification_sl(outputs: Tensor, labels: Tensor, moments: int) -> Tensor:
    return class_distribution_loss(outputs, labels)


# The statistical loss's form for each task the method defines (`CPSL.tasks`): the paper's moments of the
# scores (regression), the class distribution (ours, classification).
STATISTICAL_LOSSES = {"regression": _regression_sl, "classification": _classification_sl}


def statistical_loss(task: str, outputs: Tensor, labels: Tensor, moments: int) -> Tensor:
    """SL of the fused outputs (B, K) in the form of `task` (a name of STATISTICAL_LOSSES)."""
    return STATISTICAL_LOSSES[task](outputs, labels, moments)


# -- the objective and its logs ----------------------------------------------------------------------


def total_objective(task_loss: Tensor, unimodal: Mapping[str, Tensor], weights: Mapping[str, float],
                    sl: Tensor | None, aux_weight: float, sl_weight: float) -> Tensor:
    """L = L_task + aux_weight * sum_m w_m L_m + sl_weight * L_SL (SL absent: no term)."""
    total = task_loss + aux_weight * sum(weights[m] * loss for m, loss in unimodal.items())
    return total if sl is None else total + sl_weight * sl


def step_logs(task_loss: Tensor, unimodal: Mapping[str, Tensor], sl: Tensor | None, total: Tensor,
              gradients: Mapping[str, Tensor] | None, conflict: Conflict | None, weights: Mapping[str, float],
              sl_cos: float | None, projected: bool) -> Logs:
    """loss/task, loss/<m>, loss/sl, loss/total; with CP: gnorm/<m>, dominant/<m>, weight/<m>, cp/ratio,
    cp/cos, cp/conflict, cp/norm_conflict, cp/direction_conflict; with both: cp/sl_cos, cp/sl_projected."""
    logs: Logs = {"loss/task": float(task_loss.detach()), "loss/total": float(total.detach())}
    for m, value in unimodal.items():
        logs[f"loss/{m}"] = float(value.detach())
    if sl is not None:
        logs["loss/sl"] = float(sl.detach())
    if gradients is not None and conflict is not None:
        for m, g in gradients.items():
            logs[f"gnorm/{m}"] = float(g.norm())
            logs[f"dominant/{m}"] = float(m == conflict.dominant)
            logs[f"weight/{m}"] = weights[m]
        logs.update({"cp/ratio": min(conflict.ratio, 1e6), "cp/cos": conflict.cos,
                     "cp/conflict": float(conflict.flagged), "cp/norm_conflict": float(conflict.by_norm),
                     "cp/direction_conflict": float(conflict.by_direction)})
    if sl_cos is not None:
        logs["cp/sl_cos"] = sl_cos
        logs["cp/sl_projected"] = float(projected)
    return logs


def shared_gradient(loss: Tensor, params: Sequence[nn.Parameter]) -> Tensor:
    """d loss / d params, flattened (zeros where a parameter is not reached); the graph is kept."""
    grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
    return flatten([torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)])


# -- the method --------------------------------------------------------------------------------------


@register
class CPSL(Method):
    name = "cpsl"
    Params = CPSLParams
    description = ("CPSL: conflict-aware penalty on the dominant modality's auxiliary loss (gradient norm "
                   "ratio / direction on the shared fusion) and a statistical loss matching batch statistics")
    display_name = "CPSL"
    tasks = ("regression", "classification")
    default_model = "cpsl"
    requires = frozenset({CPSL_PARTS})
    provenance = RECONSTRUCTED
    approximations = ("abstract only: every formula (conflict test, penalty, SL, projection) is ours",
                      "attention-pooled Linear encoders, not the paper's (pre-trained) encoders")
    variants = {"no_cp": {"use_cp": False}, "no_sl": {"use_sl": False}}

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if params.aux_weight < 0 or params.sl_weight < 0:
            raise ConfigError(f"cpsl aux_weight and sl_weight must be >= 0, got {params.aux_weight}, "
                              f"{params.sl_weight}")
        if not params.conflict_ratio >= 1.0:
            raise ConfigError(f"cpsl conflict_ratio must be >= 1, got {params.conflict_ratio}")
        if not 0.0 <= params.direction_weight <= 1.0:
            raise ConfigError(f"cpsl direction_weight must be in [0, 1], got {params.direction_weight}")
        if not (isinstance(params.moments, int) and 1 <= params.moments <= MAX_MOMENTS):
            raise ConfigError(f"cpsl moments must be an integer from 1 to {MAX_MOMENTS}, got {params.moments!r}")

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: CPSLParams = state.params
        labels = batch.labels
        parts: CPSLParts = model.parts(batch)
        task_loss = state.task.loss(parts.fused, labels)
        unimodal = {m: state.task.loss(out, labels) for m, out in parts.unimodal.items()}
        sl = statistical_loss(state.task.name, parts.fused, labels, params.moments) if params.use_sl else None
        gradients, conflict, sl_cos, projected = None, None, None, False
        correction_term = None
        if params.use_cp:
            shared = model.shared_parameters()
            gradients = {m: shared_gradient(loss, shared) for m, loss in unimodal.items()}  # m -> (P,)
            conflict = detect_conflict(gradients, params.conflict_ratio)
            if sl is not None:
                g_sl, g_d = shared_gradient(sl, shared), gradients[conflict.dominant]
                sl_cos = cosine(g_sl, g_d)
                if conflict.flagged:
                    corrected = project_out_conflict(g_sl, g_d)
                    projected = not torch.equal(corrected, g_sl)
                    if projected:
                        correction_term = params.sl_weight * linear_correction(shared, corrected - g_sl)
        weights = loss_weights(list(unimodal), conflict if conflict is not None and conflict.flagged else None,
                               params.conflict_ratio, params.direction_weight)
        total = total_objective(task_loss, unimodal, weights, sl, params.aux_weight, params.sl_weight)
        logs = step_logs(task_loss, unimodal, sl, total, gradients, conflict, weights, sl_cos, projected)
        return (total if correction_term is None else total + correction_term), logs
