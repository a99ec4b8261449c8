"""AGM: adaptive gradient modulation through Shapley mono-modal outputs (methods.md "AGM"; thesis 5.2.2;
Li et al., ICCV 2023).

Per micro-batch (`loss`):

    f_M        full input, train mode
    f_S        every proper subset S (the empty set included), eval mode with autograd on, the raw inputs of
               the modalities outside S zeroed
    o_m        = sum_{S in M minus m} |S|!(n-|S|-1)!/n! (f_{S+m} - f_S) + f_empty/n   (sum_m o_m = f_M)
    s_m        = mean_i -log max(softmax(o_m,i)_{y_i}, 1e-8)             (a loss: lower is better)
    r_m        = exp(n/(n-1) (mean_j s_j - s_m))                          ("strength", logged as strength/m)
    tau_m      = the same formula on S_m, the running mean of the earlier s_m (0 at first, so tau = 1)
    k_m        = exp(alpha min(tau_m - r_m, c)) inside the window, 1 outside
    loss       = CE(sum_m grad_scale(o_m, k_m), y): the forward value is f_M, the gradient into o_m is
                 k_m times the gradient into the sum
    after backward (`after_backward`): if an element of the head weight's gradient is outside [-1, 1], clip
    the global gradient norm to 1.

Regression (our form; the AGM paper and official code are classification-only): o_m are the same Shapley
outputs of the (B, 1) prediction, the loss is the task's (L1), and s_m = mean_i (o_m,i - y_i)^2, a loss as in
classification ("mse", the default). regression_score = "mcr_inverse" takes the score of the MCR/Synergy
code's AGM_reg instead, s_m = B / MSE_m (higher is better, so it modulates the other way round: see
docs/methods.md); the r, tau and k formulas are ours in both.

Dev-set variant: s_m from the whole dev split (the same Shapley outputs, eval mode, no gradient) every
`ratio_every` optimizer steps; r, tau and the running mean then change only when a new score is measured.
Evaluation uses the plain LateFusionModel forward (the full model, as the official code evaluates).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig
from bench.methods.base import Batch, Logs, Method, ThesisSettings, TrainState, check_choices, register, scale_gradient
from bench.models import behaves_the_same_in_train_and_eval
from bench.tasks import Task, make_task

if TYPE_CHECKING:
    from bench.models import LateFusionModel

STATE_KEY = "agm/state"
HEAD_GRAD_LIMIT = 1.0  # clip when a head weight gradient element leaves [-1, 1] ...
CLIP_MAX_NORM = 1.0  # ... to this global norm


REGRESSION_SCORES = ("mse", "mcr_inverse")


@dataclass(frozen=True)
class AGMParams:
    alpha: float = 2.0
    clip_c: float = 7.0  # c in k = exp(alpha * min(tau - r, c))
    # "mse" = the mean per-sample error of o_m (squared error in regression, clamped NLL in classification);
    # "mcr_inverse" = batch size / that mean, the score of the MCR code's AGM_reg (made for regression)
    regression_score: str = "mse"


@dataclass
class AGMState:
    """What AGM carries between micro-batches (kept in state.scratch)."""

    running: dict[str, float] = field(default_factory=dict)  # S_m: mean of the s_m measured so far
    measured: int = 0  # how many scores the running mean holds
    scores: dict[str, float] = field(default_factory=dict)  # the latest s_m
    running_before: dict[str, float] = field(default_factory=dict)  # S_m that gave tau (before the update)
    strengths: dict[str, float] = field(default_factory=dict)  # r_m from the latest scores
    taus: dict[str, float] = field(default_factory=dict)  # tau_m from the running scores
    dev_refreshed_at: int = -1  # optimizer step of the last dev-split measurement


# -- Shapley mono-modal outputs -----------------------------------------------------------------------


def shapley_weight(size: int, n: int) -> float:
    """|S|! (n - |S| - 1)! / n! for a coalition S of `size` modalities not containing m."""
    return math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)


def proper_subsets(modalities: Sequence[str]) -> Iterator[frozenset[str]]:
    """Every subset except the full set, the empty set included."""
    for size in range(len(modalities)):
        for subset in combinations(modalities, size):
            yield frozenset(subset)


def coalition_logits(model: LateFusionModel, batch: Batch,
                     present: Mapping[str, Tensor] | None = None) -> dict[frozenset[str], Tensor]:
    """f_S (B, K) for every proper subset S: eval mode, autograd on, inputs outside S zeroed.

    Late fusion lets each encoder see only its own modality, so the pass on `batch.with_zeroed(M - S)` equals
    the head on [z_m if m in S else z_m(zeros)]: one encoder pass on the real inputs and one on the zeroed
    inputs give every coalition (7 full passes become 2 for three modalities), with the same gradients.
    The zeroed encoding depends on the length only (`encode_zeros`: one zero sequence per modality), and
    `present`, the train-mode encoding of the real inputs, is reused when the model has no mode-dependent
    layer, so that its eval-mode value is the same tensor of numbers.
    """
    was_training = model.training
    model.eval()
    try:
        if present is None or not behaves_the_same_in_train_and_eval(model):
            present = model.encode(batch)  # m -> (B, out_m)
        absent = model.encode_zeros(batch)  # m -> (B, out_m), zero inputs
        return {
            subset: model.fuse({m: present[m] if m in subset else absent[m] for m in model.modalities})
            for subset in proper_subsets(model.modalities)
        }
    finally:
        model.train(was_training)


def mono_modal_outputs(coalitions: Mapping[frozenset[str], Tensor],
                       modalities: Sequence[str]) -> dict[str, Tensor]:
    """o_m = Shapley value of m plus f_empty / n, so that the o_m sum to f_M exactly.

    `coalitions` holds f_S for every subset S of `modalities`, the full and the empty set included.
    """
    n = len(modalities)
    empty = coalitions[frozenset()]
    outputs = {}
    for modality in modalities:
        others = [m for m in modalities if m != modality]
        output = empty / n
        for size in range(n):
            weight = shapley_weight(size, n)
            for subset in combinations(others, size):
                without = frozenset(subset)
                output = output + weight * (coalitions[without | {modality}] - coalitions[without])
        outputs[modality] = output
    return outputs


def shapley_outputs(model: LateFusionModel, batch: Batch, full_logits: Tensor,
                    present: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """o_m (B, K) for a batch whose full-input logits f_M are `full_logits` (from encodings `present`)."""
    coalitions = coalition_logits(model, batch, present)
    coalitions[frozenset(model.modalities)] = full_logits
    return mono_modal_outputs(coalitions, model.modalities)


# -- scores, strengths, coefficients -------------------------------------------------------------------


def as_task(task: Task | str) -> Task:
    """A task instance (a name is made with its default options)."""
    return make_task(task) if isinstance(task, str) else task


def sample_losses(outputs: Tensor, targets: Tensor, task: Task | str) -> Tensor:
    """The per-sample error behind s_m, the task's `sample_error`: -log max(p_y, 1e-8) (classification,
    the official clamp) or the squared error (regression): (B,)."""
    return as_task(task).sample_error(outputs, targets)


def score_from_mean_loss(mean_loss: float, rule: str, batch_size: int) -> float:
    """s_m from the mean per-sample error: the error itself ("mse"), or MCR's batch size / error
    ("mcr_inverse", the score of the MCR code's AGM_reg)."""
    if rule == "mcr_inverse":
        return batch_size / max(mean_loss, 1e-12)
    return mean_loss


def mono_modal_scores(outputs: Mapping[str, Tensor], labels: Tensor, task: Task | str = "classification",
                      rule: str = "mse") -> dict[str, float]:
    """s_m = mean_i of the task's per-sample error of o_m (see `sample_losses`), then the score `rule`."""
    return {m: score_from_mean_loss(float(sample_losses(out, labels, task).mean()), rule, int(labels.shape[0]))
            for m, out in outputs.items()}


def relative_strengths(scores: Mapping[str, float]) -> dict[str, float]:
    """exp(n/(n-1) * (mean_j s_j - s_m)): > 1 for a modality with a lower loss than average."""
    n = len(scores)
    mean = sum(scores.values()) / n
    return {m: math.exp(n / (n - 1) * (mean - s)) for m, s in scores.items()}


def agm_coefficient(tau: float, strength: float, alpha: float, clip_c: float) -> float:
    """k = exp(alpha * min(tau - r, c)): < 1 when m is stronger than its history, > 1 when weaker."""
    return math.exp(alpha * min(tau - strength, clip_c))


def record_scores(agm: AGMState, scores: Mapping[str, float]) -> None:
    """A new measurement: r from it, tau from the earlier ones, then fold it into the running mean."""
    running = {m: agm.running.get(m, 0.0) for m in scores}  # 0 before the first measurement: tau = 1
    agm.scores = dict(scores)
    agm.running_before = running
    agm.strengths = relative_strengths(scores)
    agm.taus = relative_strengths(running)
    agm.measured += 1
    agm.running = {m: running[m] + (scores[m] - running[m]) / agm.measured for m in scores}


# -- gradient scaling -------------------------------------------------------------------------------


def clip_if_head_gradient_large(model: LateFusionModel) -> bool:
    """Clip the global grad norm to 1 when a head weight gradient element is outside [-1, 1]."""
    grad = model.head.weight.grad
    fired = grad is not None and bool((grad.abs() > HEAD_GRAD_LIMIT).any())
    if fired:
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=CLIP_MAX_NORM)
    return fired


# -- the method -------------------------------------------------------------------------------------


@torch.no_grad()
def dev_split_scores(model: LateFusionModel, state: TrainState) -> dict[str, float]:
    """s_m over the whole dev split: Shapley outputs in eval mode, no gradient, mean over samples."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    count = 0
    try:
        for batch in state.batches("dev"):
            outputs = shapley_outputs(model, batch, model(batch).logits)
            for modality, logits in outputs.items():
                losses = sample_losses(logits, batch.labels, state.task)
                totals[modality] = totals.get(modality, 0.0) + float(losses.sum())
            count += batch.size
    finally:
        model.train(was_training)
    rule = state.params.regression_score
    return {m: score_from_mean_loss(total / max(count, 1), rule, state.cfg.batch_size)
            for m, total in totals.items()}


@register
class AGM(Method):
    name = "agm"
    has_dev_set_variant = True
    requires = frozenset({"features", "zero_inputs", "linear_head"})
    tasks = ("classification", "regression")
    Params = AGMParams
    description = "Adaptive Gradient Modulation: Shapley mono-modal outputs, gradient into o_m scaled by k_m"
    display_name = "AGM"
    table_order = 90
    # Thesis appendix A: alpha 2, modulation in epochs 0..9, the dev-set strengths every 2 steps.
    thesis = ThesisSettings(params={"alpha": 2.0}, window=(0, 9), dev_ratio_every=2)

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.alpha > 0:
            raise ConfigError(f"agm: alpha must be > 0, got {params.alpha}")
        if not params.clip_c > 0:
            raise ConfigError(f"agm: clip_c must be > 0, got {params.clip_c}")
        check_choices("agm", params, {"regression_score": REGRESSION_SCORES})

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        features = model.encode(batch)  # m -> z_m (B, out_m), train mode
        full_logits = model.fuse(features)  # f_M (B, K)
        outputs = shapley_outputs(model, batch, full_logits, features)  # m -> o_m (B, K), with gradient
        agm = self.update_scores(model, batch, outputs, state)
        params = state.params
        coeffs = {
            m: agm_coefficient(agm.taus[m], agm.strengths[m], params.alpha, params.clip_c) if state.in_window
            else 1.0
            for m in model.modalities
        }
        # sum_m o_m equals f_M; only the gradient into each o_m is rescaled
        fused = sum(scale_gradient(outputs[m], coeffs[m]) for m in model.modalities)  # (B, K)
        logs = self.step_logs(agm, coeffs) | {"in_window": float(state.in_window)}
        return state.task.loss(fused, batch.labels), logs

    def update_scores(self, model: LateFusionModel, batch: Batch, outputs: Mapping[str, Tensor],
                      state: TrainState) -> AGMState:
        """Measure s_m (batch, or dev split when due) and update r, tau and the running scores."""
        agm = state.scratch.setdefault(STATE_KEY, AGMState())
        if not state.cfg.dev_set:
            record_scores(agm, mono_modal_scores(outputs, batch.labels, state.task,
                                                 state.params.regression_score))
        elif self.dev_refresh_due(agm, state):
            record_scores(agm, dev_split_scores(model, state))
            agm.dev_refreshed_at = state.step
        return agm

    @staticmethod
    def dev_refresh_due(agm: AGMState, state: TrainState) -> bool:
        """Every ratio_every optimizer steps, once per step even when it spans several micro-batches."""
        if agm.measured == 0:
            return True
        return state.step % state.cfg.ratio_every == 0 and agm.dev_refreshed_at != state.step

    @staticmethod
    def step_logs(agm: AGMState, coeffs: Mapping[str, float]) -> Logs:
        logs: Logs = {}
        for modality, coeff in coeffs.items():
            logs[f"score/{modality}"] = agm.scores[modality]
            logs[f"running_score/{modality}"] = agm.running_before[modality]
            logs[f"r/{modality}"] = agm.strengths[modality]
            logs[f"tau/{modality}"] = agm.taus[modality]
            logs[f"coeff/{modality}"] = coeff
            logs[f"strength/{modality}"] = agm.strengths[modality]
        return logs

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        return {"clip_fired": float(clip_if_head_gradient_large(model))}
