"""CGGM: Classifier-Guided Gradient Modulation (Guo, Jin, Chen, Zhao, NeurIPS 2024; docs/methods/cggm.md).

Official code: zrguo/CGGM, `src/msatrain.py::train_model` (the loop), `models/msamodel.py::ClassifierGuided`
(the helper heads), `src/eval_metrics.py::train_eval_senti` / `train_eval_iemo` / `cal_cos`, runners
`run/mosi_run.py` (regression, L1) and `run/iemo_run.py` (classification).

Per optimizer step t (micro-batches of the step pooled):

    helper m    g_m(z_m.detach()): one head per modality on the DETACHED encoder output, trained on the
                task's loss by its own Adam (lr helper_lr); no gradient reaches the encoders from it
    eps_m(t)    accuracy of g_m on the step's batch: argmax (classification) or sign, (g_m > 0) == (y > 0)
                with y = 0 counted as negative (regression, the official `exclude_zero=False`)
    Delta_m(t)  eps_m(t) - eps_m(t-1), eps_m(-1) = 0 (carried across epochs, as in the official code)
    B_m(t)      (S + 1e-8 - Delta_m) / (S + 1e-8), S = sum_k Delta_k (the official 1e-8 in both)
    after the backward pass, inside the window: every gradient of encoder m  g <- rho * B_m * g, except
                the LSTM's input map (scale "encoders", the official: only `encoders.{i}`, not `proj.{i}`)
    cos_m(t)    cosine of the flattened helper output weight V_m (K, D_m) and the fused head's slice W_m (K, D_m)
    L_gm(t)     (sum_m |B_m| - sum_m B_m cos_m) / M
    then the global norm of the model's (not the helpers') gradients is clipped to clip_norm, and both step.

L_gm(t) is added, times lam, to the task loss of step t+1, as in the official code: its value and its gradient
are those at step t's weights and coefficients (a snapshot: W_eval = W_snapshot + (W - W.detach())), and its
gradient reaches the fused head weight only (the helper weights in it are constants: the official code
zeroes the helpers' gradients after that backward pass).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.config import ConfigError, RunConfig
from bench.methods.base import (
    Batch,
    BuildContext,
    Logs,
    Method,
    OptimizerPlan,
    ThesisSettings,
    TrainState,
    check_choices,
    register,
    resolve_params,
)
from bench.methods.heads import UnimodalHeads
from bench.tasks import Task, make_task

if TYPE_CHECKING:
    from bench.models import LateFusionModel

OFFICIAL_EPS = 1e-8  # added to sum_k Delta_k in the numerator and the denominator of B_m
HELPERS = ("linear", "official_tail")
DEGENERATE = ("official", "skip")
SCALES = ("encoders", "all")
# The input map of late_fusion's SequenceEncoder (the LSTM's input-to-hidden weights): the counterpart of
# the official `proj.i` (Conv1d from the raw features to the model width), which the official code leaves
# unscaled. "encoders" scales every other tensor of encoder m, as the official `encoders.{i}` name test.
INPUT_MAP = ("lstm.weight_ih_l0", "lstm.bias_ih_l0")
STATE_KEY = "cggm/state"


@dataclass(frozen=True)
class CGGMParams:
    rho: float = 1.3  # --rou, run/mosi_run.py and run/iemo_run.py
    lam: float = 0.2  # --lamda: weight of the direction loss L_gm
    helper_lr: float = 5e-4  # --cls_lr: learning rate of the helper heads' own Adam
    clip_norm: float = 0.8  # --clip: global grad-norm clip of the model's parameters (0 = off)
    # "linear": g_m = Linear(D_m -> K) on z_m (ours); "official_tail": the official head without its
    # transformer, out(relu(P(P(z_m)))) with one D_m x D_m layer P applied twice, as `Classifier.forward` does
    helper: str = "linear"
    # sum_k Delta_k = 0 with Delta != 0: "official" keeps the 1e-8 (B_m ~ 1e7, bounded only by the clip);
    # "skip" (ours) sets every B_m = 1 when |sum_k Delta_k| <= 1e-8
    degenerate: str = "official"
    # which tensors of encoder m get rho * B_m: "encoders" (official: the parameters named `encoders.{i}`,
    # not the input projection `proj.{i}`; here every tensor but the LSTM's input map, INPUT_MAP);
    # "all": every encoder tensor, the input map included (the harness's former reading)
    scale: str = "encoders"


@dataclass
class CGGMState:
    """What CGGM carries between hook calls (state.scratch)."""

    previous: dict[str, float] = field(default_factory=dict)  # eps_m(t-1); 0 before the first step
    correct: dict[str, float] = field(default_factory=dict)  # the current step's helper hits per modality
    seen: int = 0  # the current step's samples
    # L_gm of the previous step, frozen: coefficients B_m, helper weights V_m and the fused head weight W
    snapshot: tuple[dict[str, float], dict[str, Tensor], Tensor] | None = None


# -- the formulas ---------------------------------------------------------------------------------------


def helper_hits(outputs: Tensor, targets: Tensor, task: Task | str) -> float:
    """Samples the helper gets right, as the task counts them (`Task.hits`): argmax == y (classification),
    (out > 0) == (y > 0) (regression)."""
    task = make_task(task) if isinstance(task, str) else task
    return float(task.hits(outputs, targets).sum())


def improvements(accuracies: Mapping[str, float], previous: Mapping[str, float]) -> dict[str, float]:
    """Delta_m = eps_m(t) - eps_m(t-1), a missing previous value counting as 0."""
    return {m: acc - previous.get(m, 0.0) for m, acc in accuracies.items()}


def balance_coefficients(deltas: Mapping[str, float], degenerate: str = "official") -> dict[str, float]:
    """B_m = (S + 1e-8 - Delta_m) / (S + 1e-8), S = sum_k Delta_k; "skip": every B_m = 1 when |S| <= 1e-8."""
    total = sum(deltas.values())
    if degenerate == "skip" and abs(total) <= OFFICIAL_EPS:
        return {m: 1.0 for m in deltas}
    if degenerate not in DEGENERATE:
        raise ConfigError(f"cggm: unknown degenerate rule {degenerate!r}; choose from {', '.join(DEGENERATE)}")
    shifted = total + OFFICIAL_EPS
    return {m: (shifted - d) / shifted for m, d in deltas.items()}


def head_cosines(helper_weights: Mapping[str, Tensor], fused_weight: Tensor,
                 slices: Mapping[str, slice]) -> dict[str, Tensor]:
    """cos_m between the flattened helper weight V_m (K, D_m) and the fused head's columns W_m (K, D_m)."""
    return {m: F.cosine_similarity(v.reshape(-1), fused_weight[:, slices[m]].reshape(-1), dim=0)  # ()
            for m, v in helper_weights.items()}


def direction_loss(coeffs: Mapping[str, float], cosines: Mapping[str, Tensor | float]) -> Tensor | float:
    """L_gm = (sum_m |B_m| - sum_m B_m cos_m) / M."""
    magnitude = sum(abs(b) for b in coeffs.values())
    aligned = sum(coeffs[m] * cosines[m] for m in coeffs)
    return (magnitude - aligned) / len(coeffs)


def at_snapshot(param: Tensor, snapshot: Tensor) -> Tensor:
    """A tensor with the snapshot's value whose gradient flows into `param` unchanged (identity Jacobian)."""
    return snapshot + (param - param.detach())


def scaled_parameters(encoder: nn.Module, scale: str) -> list[nn.Parameter]:
    """The tensors of one encoder that CGGM's rho * B_m multiplies: all, or all but the input map (an encoder
    without an LSTM input map, e.g. mlp_late_fusion's, has none to leave out: every tensor, ours)."""
    if scale == "all":
        return list(encoder.parameters())
    return [param for name, param in encoder.named_parameters() if name not in INPUT_MAP]


# -- the model: the run's model plus the helper heads ------------------------------------------------------


class HelperHead(nn.Module):
    """g_m: Linear(D -> K) ("linear"), or out(relu(P(P(z)))) with one D x D layer P ("official_tail")."""

    def __init__(self, width: int, outputs: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.proj = nn.Linear(width, width) if kind == "official_tail" else None
        self.out_layer = nn.Linear(width, outputs)

    def forward(self, z: Tensor) -> Tensor:  # z: (B, D) -> (B, K)
        if self.proj is not None:
            z = F.relu(self.proj(self.proj(z)))
        return self.out_layer(z)


class CGGMModel(UnimodalHeads):
    """The run's late-fusion model (`base`, what evaluation and checkpoints use) and one helper head g_m per
    modality (training only): the shared UnimodalHeads with CGGM's head. Forward is the base model's."""

    def __init__(self, base: nn.Module, modalities: Sequence[str], output_size: int, helper: str) -> None:
        super().__init__(base, modalities, output_size,
                         make_head=lambda width, outputs: HelperHead(width, outputs, helper))

    @property
    def base(self) -> nn.Module:
        return self.model

    @property
    def helpers(self) -> nn.ModuleDict:
        return self.unimodal_heads


# -- the method ---------------------------------------------------------------------------------------------


@register
class CGGM(Method):
    name = "cggm"
    Params = CGGMParams
    tasks = ("classification", "regression")
    requires = frozenset({"encoders", "features", "linear_head"})
    description = ("Classifier-Guided Gradient Modulation: helper heads' accuracy gains scale the encoder "
                   "gradients; a cosine term aligns the fused head with them")
    display_name = "CGGM"
    table_order = 150
    # The official runners modulate every step of every epoch (no window).
    thesis = ThesisSettings(params={"rho": 1.3, "lam": 0.2, "helper_lr": 5e-4, "clip_norm": 0.8}, window=(0, -1))

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.rho > 0:
            raise ConfigError(f"cggm: rho must be > 0, got {params.rho}")
        if params.lam < 0:
            raise ConfigError(f"cggm: lam must be >= 0, got {params.lam}")
        if not params.helper_lr > 0:
            raise ConfigError(f"cggm: helper_lr must be > 0, got {params.helper_lr}")
        if params.clip_norm < 0:
            raise ConfigError(f"cggm: clip_norm must be >= 0 (0 = off), got {params.clip_norm}")
        check_choices("cggm", params, {"helper": HELPERS, "degenerate": DEGENERATE, "scale": SCALES})

    def build(self, ctx: BuildContext) -> nn.Module:
        return CGGMModel(ctx.model(), ctx.spec.modalities, ctx.spec.num_classes, ctx.params.helper)

    def optimizers(self, model: nn.Module, cfg: RunConfig) -> list[OptimizerPlan]:
        """The model's optimizer (the run's), and the helpers' own Adam (official: lr cls_lr, no decay,
        not scheduled)."""
        from bench.models import default_param_groups

        params = resolve_params(self, cfg)
        helpers = [{"name": "helpers", "params": list(model.helpers.parameters())}]
        return [OptimizerPlan("main", default_param_groups(model.base, cfg)),
                OptimizerPlan("helpers", helpers, kind="adam", lr=params.helper_lr, weight_decay=0.0,
                              scheduled=False)]

    # -- hooks ----------------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        base: LateFusionModel = model.base
        cggm = state.scratch.setdefault(STATE_KEY, CGGMState())
        features = base.encode(batch)  # m -> z_m (B, D_m)
        task_loss = state.task.loss(base.fuse(features), batch.labels)
        helper_losses = {}
        for m in base.modalities:
            out = model.helpers[m](features[m].detach())  # (B, K): no gradient into the encoder
            helper_losses[m] = state.task.loss(out, batch.labels)
            cggm.correct[m] = cggm.correct.get(m, 0.0) + helper_hits(out, batch.labels, state.task)
        cggm.seen += batch.size
        loss = task_loss + sum(helper_losses.values())
        if cggm.snapshot is not None and state.in_window:
            loss = loss + state.params.lam * self._previous_direction_loss(base, cggm.snapshot)
        logs = {f"helper_loss/{m}": float(value.detach()) for m, value in helper_losses.items()}
        return loss, logs

    @staticmethod
    def _previous_direction_loss(base: LateFusionModel, snapshot: tuple[dict[str, float], dict[str, Tensor], Tensor]
                                 ) -> Tensor:
        """L_gm of the previous step: its coefficients and weights, its gradient into the head weight."""
        coeffs, helper_weights, fused_weight = snapshot
        weight = at_snapshot(base.head.weight, fused_weight)  # (K, sum D_m), value of the snapshot
        return direction_loss(coeffs, head_cosines(helper_weights, weight, base.head_slices()))

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        base: LateFusionModel = model.base
        params: CGGMParams = state.params
        cggm: CGGMState = state.scratch[STATE_KEY]
        accuracies = {m: cggm.correct[m] / max(cggm.seen, 1) for m in base.modalities}
        deltas = improvements(accuracies, cggm.previous)
        coeffs = balance_coefficients(deltas, params.degenerate)
        cggm.previous, cggm.correct, cggm.seen = accuracies, {}, 0
        in_window = state.in_window
        scales = {m: (params.rho * coeffs[m] if in_window else 1.0) for m in base.modalities}
        if in_window:
            for m, scale in scales.items():
                for param in scaled_parameters(base.encoders[m], params.scale):
                    if param.grad is not None:
                        param.grad.mul_(scale)
        with torch.no_grad():
            helper_weights = {m: model.helpers[m].out_layer.weight.detach().clone() for m in base.modalities}
            fused_weight = base.head.weight.detach().clone()
            cosines = head_cosines(helper_weights, fused_weight, base.head_slices())
            value = float(direction_loss(coeffs, cosines))
        cggm.snapshot = (dict(coeffs), helper_weights, fused_weight) if in_window and params.lam > 0 else None
        logs: Logs = {"in_window": float(in_window), "direction_loss": value}
        if params.clip_norm > 0:
            logs["grad_norm"] = float(nn.utils.clip_grad_norm_(base.parameters(), params.clip_norm))
        for m in base.modalities:
            logs[f"eps/{m}"] = accuracies[m]
            logs[f"delta/{m}"] = deltas[m]
            logs[f"coeff/{m}"] = coeffs[m]
            logs[f"scale/{m}"] = scales[m]
            logs[f"cos/{m}"] = float(cosines[m])
        return logs


__all__ = ["CGGM", "CGGMModel", "CGGMParams", "CGGMState", "HelperHead", "at_snapshot", "balance_coefficients",
           "direction_loss", "head_cosines", "helper_hits", "improvements", "scaled_parameters"]
