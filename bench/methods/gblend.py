"""Gradient Blending, online (Wang, Tran, Feiszli, CVPR 2020, "What Makes Training Multi-modal
Classification Networks Hard?"; docs/methods/gblend.md). There is no official code; the public
reimplementations read are pliang279/MultiBench `training_structures/gradient_blend.py` and GeWu-Lab/
BalanceBenchmark `balancemm/trainer/GBlending_trainer.py`.

The model gets one extra head per modality, u_m = Linear(D_m -> K)(z_m) on the live encoder output, beside
the fused head; heads k in {m_1, ..., m_n, fused}. Training minimises

    L = sum_k w_k L_k                         L_k the task's loss (CE or L1) of head k, sum_k w_k = 1

The weights come from the overfitting-to-generalization ratio between two checkpoints N and N + n, with
L^T / L^V the mean loss of head k on the training rows / on the held-out dev split (eval mode, no gradient):

    O_N   = L^V_N - L^T_N                     (overfitting)
    G_k   = L^V_N - L^V_{N+n}                 (generalization gain: the drop of the held-out loss)
    dO_k  = O_{N+n} - O_N                     (growth of the overfitting)
    w_k   = r(G_k) / max(dO_k^2, 1e-12) / Z,  Z = sum_j r(G_j) / max(dO_j^2, 1e-12)
            r = |.| ("abs", as both reimplementations) or max(., 0) ("clip", ours)

re-estimated every `super_epoch` epochs ("online" G-Blend), at the start of epochs 0, n, 2n, ...:
- estimate = "copies" (the paper's estimator, as MultiBench and BalanceBenchmark run it): from the current
  model, one copy per head k is trained on L_k alone for `super_epoch` epochs (a fresh optimizer of the
  run's kind and lr); checkpoint N = the current model, N + n = the trained copy. The copies are then
  dropped; the main model trains the next super-epoch with the new weights.
- estimate = "in_situ" (ours, no extra training): checkpoints N and N + n are the main model itself at the
  start of the previous and of the current super-epoch; the first super-epoch uses uniform weights.
An estimate whose weights are not finite or sum to 0 keeps the previous weights (uniform at first).

The held-out split: a stratified `held_out_share` (MultiBench's v_rate, 8 %) of the training rows, which
every G-Blend run carves out of the training data (`holds_out_dev`, `held_out_share`), with or without
dev_set; 0 takes the dataset's dev split instead. The copies' SGD momentum is `copy_momentum` (MultiBench:
0). The modulation window is not used (the weights act throughout).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

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

if TYPE_CHECKING:
    pass

FUSED = "fused"  # the name of the fused head among the heads k
ESTIMATES = ("copies", "in_situ")
GAIN_RULES = ("abs", "clip")
SQUARE_FLOOR = 1e-12  # lower bound of dO^2 (a zero change would divide by zero)
EVAL_BATCH = 512
WEIGHTS_KEY = "gblend/weights"
CHECKPOINT_KEY = "gblend/checkpoint"  # in_situ: the losses at the start of the previous super-epoch
ESTIMATES_KEY = "gblend/estimates"  # how many estimates ran (seeds the copies' shuffles)

HeadLosses = dict[str, tuple[float, float]]  # head -> (train loss L^T, held-out loss L^V)


@dataclass(frozen=True)
class GBlendParams:
    super_epoch: int = 10  # epochs between estimates, and the copies' training length (BalanceBenchmark's 10)
    estimate: str = "copies"  # "copies" (the paper's estimator) or "in_situ" (ours: the main model's history)
    gain_rule: str = "abs"  # r(G): "abs" (both reimplementations) or "clip" = max(G, 0) (ours)
    # SGD momentum of the per-head copies: MultiBench's optimtype(params, lr, weight_decay) leaves it at 0;
    # 0.9 (the run's momentum) was the harness's former reading. Adam runs' copies are Adam: no effect there.
    copy_momentum: float = 0.0
    # share of the training rows held out for the estimates: MultiBench's v_rate 0.08 on every dataset;
    # 0: the dataset's dev split (100 MOSI / 200 MOSEI rows: 7.8 % / 1.2 %, the former reading)
    held_out_share: float = 0.08


# -- the formulas ---------------------------------------------------------------------------------------


def overfitting(train_loss: float, valid_loss: float) -> float:
    """O = L^V - L^T."""
    return valid_loss - train_loss


def gain_and_overfitting_change(before: tuple[float, float], after: tuple[float, float]) -> tuple[float, float]:
    """(G, dO) between two checkpoints of one head, each given as (L^T, L^V)."""
    gain = before[1] - after[1]
    change = overfitting(*after) - overfitting(*before)
    return gain, change


def blend_weights(gains: Mapping[str, float], changes: Mapping[str, float],
                  gain_rule: str = "abs") -> dict[str, float] | None:
    """w_k = r(G_k) / max(dO_k^2, 1e-12), normalised to sum 1; None when that is impossible (sum 0, inf, nan)."""
    if gain_rule not in GAIN_RULES:
        raise ConfigError(f"gblend: unknown gain_rule {gain_rule!r}; choose from {', '.join(GAIN_RULES)}")
    rule = abs if gain_rule == "abs" else (lambda g: max(g, 0.0))
    raw = {k: rule(gains[k]) / max(changes[k] ** 2, SQUARE_FLOOR) for k in gains}
    total = sum(raw.values())
    if not (math.isfinite(total) and total > 0):
        return None
    return {k: value / total for k, value in raw.items()}


def uniform_weights(heads: Sequence[str]) -> dict[str, float]:
    """1 / (number of heads) each: the weights before the first estimate."""
    return {k: 1.0 / len(heads) for k in heads}


def blended_loss(losses: Mapping[str, Tensor], weights: Mapping[str, float]) -> Tensor:
    """L = sum_k w_k L_k."""
    return sum(weights[k] * loss for k, loss in losses.items())


# -- the model: the run's model plus one unimodal head per modality ----------------------------------------


class GBlendModel(UnimodalHeads):
    """The run's late-fusion model (`base`; evaluation and checkpoint selection use its fused head) and a
    linear head on each modality's features (the shared UnimodalHeads), trained with the encoders."""

    def __init__(self, base: nn.Module, modalities: tuple[str, ...], output_size: int) -> None:
        super().__init__(base, modalities, output_size)
        self.modalities = tuple(modalities)

    @property
    def base(self) -> nn.Module:
        return self.model

    @property
    def unimodal(self) -> nn.ModuleDict:
        return self.unimodal_heads

    @property
    def heads(self) -> tuple[str, ...]:
        return (*self.modalities, FUSED)

    def head_outputs(self, batch: Batch) -> dict[str, Tensor]:
        """Every head's output (B, K): u_m for each modality and the fused prediction."""
        features = self.model.encode(batch)  # m -> z_m (B, D_m)
        outputs = self.unimodal_outputs(features)
        outputs[FUSED] = self.model.fuse(features)
        return outputs


# -- measuring the heads ------------------------------------------------------------------------------------


@torch.no_grad()
def split_losses(model: GBlendModel, state: TrainState, split: str, heads: Sequence[str]) -> dict[str, float]:
    """Mean loss per sample of each head over a whole split, eval mode, no gradient."""
    was_training = model.training
    model.eval()
    totals = {k: 0.0 for k in heads}
    count = 0
    try:
        for batch in state.batches(split, batch_size=EVAL_BATCH):
            outputs = model.head_outputs(batch)
            for k in heads:
                totals[k] += float(state.task.loss(outputs[k], batch.labels)) * batch.size
            count += batch.size
    finally:
        model.train(was_training)
    return {k: total / max(count, 1) for k, total in totals.items()}


def head_losses(model: GBlendModel, state: TrainState, heads: Sequence[str]) -> HeadLosses:
    """(L^T, L^V) of each head: the training rows (dev rows held out) and the dev split."""
    train = split_losses(model, state, "train", heads)
    dev = split_losses(model, state, "dev", heads)
    return {k: (train[k], dev[k]) for k in heads}


def set_sgd_momentum(optimizer: torch.optim.Optimizer, momentum: float) -> None:
    """An SGD optimizer's momentum in every group (Adam is left as it is)."""
    if isinstance(optimizer, torch.optim.SGD):
        for group in optimizer.param_groups:
            group["momentum"] = momentum


def train_copy_on_head(model: GBlendModel, head: str, state: TrainState, epochs: int, seed: int) -> GBlendModel | None:
    """A copy of the model trained `epochs` epochs on head's loss alone (fresh optimizer of the run's kind,
    SGD with the copy_momentum); None when its loss became non-finite."""
    trained = copy.deepcopy(model)
    trained.train()
    optimizer = state.build_optimizer(OptimizerPlan("gblend_copy", [{"params": list(trained.parameters())}]))
    set_sgd_momentum(optimizer, state.params.copy_momentum)
    source = state.splits["train"]
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed + epoch)
        for batch in source.iterate(state.cfg.batch_size, generator):
            optimizer.zero_grad(set_to_none=True)
            loss = state.task.loss(trained.head_outputs(batch)[head], batch.labels)
            if not torch.isfinite(loss):
                return None
            loss.backward()
            optimizer.step()
    return trained


# -- the method ---------------------------------------------------------------------------------------------


@register
class GBlend(Method):
    name = "gblend"
    Params = GBlendParams
    tasks = ("classification", "regression")
    requires = frozenset({"features"})
    holds_out_dev = True
    description = ("Gradient Blending (online): fused and unimodal losses weighted by G/O^2, the held-out "
                   "gain over the squared overfitting growth, re-estimated every super-epoch")
    display_name = "G-Blend"
    table_order = 160
    thesis = ThesisSettings(params={"super_epoch": 10, "estimate": "copies"})

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if params.super_epoch < 1:
            raise ConfigError(f"gblend: super_epoch must be >= 1, got {params.super_epoch}")
        check_choices("gblend", params, {"estimate": ESTIMATES, "gain_rule": GAIN_RULES})
        if not 0.0 <= params.copy_momentum < 1.0:
            raise ConfigError(f"gblend: copy_momentum must be in [0, 1), got {params.copy_momentum}")
        if not 0.0 <= params.held_out_share < 1.0:
            raise ConfigError(f"gblend: held_out_share must be in [0, 1), got {params.held_out_share}")

    def held_out_share(self, cfg: RunConfig) -> float | None:
        """MultiBench's 8 % of train (held_out_share), or the dataset's dev split when it is 0."""
        share = resolve_params(self, cfg).held_out_share
        return share if share > 0 else None

    def build(self, ctx: BuildContext) -> nn.Module:
        return GBlendModel(ctx.model(), ctx.spec.modalities, ctx.spec.num_classes)

    # -- estimation -----------------------------------------------------------------------------------------
    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        params: GBlendParams = state.params
        heads = model.heads
        state.scratch.setdefault(WEIGHTS_KEY, uniform_weights(heads))
        if state.epoch % params.super_epoch != 0:
            return {}
        if params.estimate == "copies":
            measured = self._estimate_by_copies(model, state)
        else:
            measured = self._estimate_in_situ(model, state)
        state.scratch[ESTIMATES_KEY] = state.scratch.get(ESTIMATES_KEY, 0) + 1
        logs: Logs = {}
        weights = None
        if measured is not None:
            gains = {k: g for k, (g, _) in measured.items()}
            changes = {k: d for k, (_, d) in measured.items()}
            weights = blend_weights(gains, changes, params.gain_rule)
            for k in heads:
                logs[f"gain/{k}"] = gains[k]
                logs[f"overfit_change/{k}"] = changes[k]
        if weights is not None:
            state.scratch[WEIGHTS_KEY] = weights
        logs["estimated"] = float(weights is not None)
        logs.update({f"weight/{k}": w for k, w in state.scratch[WEIGHTS_KEY].items()})
        return logs

    def _estimate_by_copies(self, model: GBlendModel, state: TrainState) -> dict[str, tuple[float, float]] | None:
        """(G_k, dO_k) of each head: the current model against a copy trained on L_k for super_epoch epochs."""
        heads = model.heads
        before = head_losses(model, state, heads)
        measured = {}
        count = state.scratch.get(ESTIMATES_KEY, 0)
        for index, k in enumerate(heads):
            seed = state.cfg.seed * 1_000_003 + 7_919 * count + 101 * index
            trained = train_copy_on_head(model, k, state, state.params.super_epoch, seed)
            if trained is None:
                return None
            after = head_losses(trained, state, (k,))[k]
            measured[k] = gain_and_overfitting_change(before[k], after)
            del trained
        return measured

    def _estimate_in_situ(self, model: GBlendModel, state: TrainState) -> dict[str, tuple[float, float]] | None:
        """(G_k, dO_k) of each head between the last two super-epoch starts of the main model (None at first)."""
        now = head_losses(model, state, model.heads)
        previous: HeadLosses | None = state.scratch.get(CHECKPOINT_KEY)
        state.scratch[CHECKPOINT_KEY] = now
        if previous is None:
            return None
        return {k: gain_and_overfitting_change(previous[k], now[k]) for k in model.heads}

    # -- training -------------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        outputs = model.head_outputs(batch)  # k -> (B, K)
        losses = {k: state.task.loss(out, batch.labels) for k, out in outputs.items()}
        weights = state.scratch.setdefault(WEIGHTS_KEY, uniform_weights(model.heads))
        logs = {f"head_loss/{k}": float(loss.detach()) for k, loss in losses.items()}
        return blended_loss(losses, weights), logs


__all__ = ["FUSED", "GBlend", "GBlendModel", "GBlendParams", "blend_weights", "blended_loss",
           "gain_and_overfitting_change", "head_losses", "overfitting", "set_sgd_momentum", "split_losses",
           "train_copy_on_head",
           "uniform_weights"]
