"""Greedy: balanced multi-modal learning against the greedy nature of multi-modal DNNs (Wu, Jastrzebski, Cho and
Geras, ICML 2022, "Characterizing and overcoming the greedy nature of learning in multi-modal deep neural
networks"; official code nyukat/greedy_multimodal_learning, src/balanced_mmtm.py `MMTM_mitigate`,
src/callbacks.py `Bias_Mitigation_Strong`, src/model.py `MMTM_MVCNN`, train.py `blend_loss`, configs/*.gin;
second reading BalanceBenchmark's balancemm/trainer/Greedy_trainer.py; docs/methods/greedy.md). Two modalities.

The model (`GreedyModel`): the run model's encoders give z_m (B, D_m); an MMTM block lets each modality gate
the other (the cross-modal "bypass"):

    e   = ReLU(W_s [z_0; z_1] + b_s)                 W_s: (2 (D_0 + D_1) / 4) x (D_0 + D_1), ratio 4
    g_m = sigmoid(W_m e + b_m)                        (B, D_m);  z'_m = z_m * g_m

"branches" (official MMTM_MVCNN): a classifier per modality, o_m = h_m(z'_m); loss sum_m CE(o_m, y); the
prediction is the mean of the o_m. "fused" (BalanceBenchmark): the run model's head on [z'_0; z'_1], CE.

Conditional learning speed, after each backward (before the optimizer step), over the parameters theta:

    s(theta) = sum ||grad||^2 / sum ||theta||^2
    M_bypass,m += s(W_s, b_s, W_m, b_m);  M_main,m += s(modality m's branch: encoder (+ its classifier))
    d = log10(M_bypass,0 / M_main,0) - log10(M_bypass,1 / M_main,1)          (cumulative since step 0)

The re-balancing step (from `starting_epoch`, official 2, inside the window): out of curation, |d| > epsilon
starts `window` curation steps caring for modality 0 if d > 0, else 1; while curating, the cared modality's
gate is the running mean of its gates (a constant: no information flows into it from the other modality).

Conditional utilisation rate (validation, each epoch): with A_m the accuracy of branch m, and A_m^off its
accuracy when the other modality's MMTM input is its mean over the training split,
u(other | m) = (A_m - A_m^off) / A_m.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.config import ConfigError, RunConfig
from bench.methods.base import BuildContext, Logs, Method, ThesisSettings, TrainState, check_choices, register
from bench.methods.heads import UnimodalHeads

STATE_KEY = "greedy/state"
OBJECTIVES = ("branches", "fused")
EVAL_BATCH = 256


@dataclass(frozen=True)
class GreedyParams:
    epsilon: float = 0.01  # |d| threshold (official Bias_Mitigation_Strong.epsilon; BalanceBenchmark alpha 0.001)
    curation_window: int = 5  # curation steps once started (official curation_windowsize; BalanceBenchmark 5)
    ratio: int = 4  # MMTM squeeze ratio (official MMTM(..., 4))
    objective: str = "branches"  # "branches": official per-modality classifiers; "fused": BalanceBenchmark
    starting_epoch: int = 2  # the rule acts from this epoch on (official Bias_Mitigation_Strong.starting_epoch)
    utilisation: bool = True  # log the conditional utilisation rates on the validation split each epoch


# -- the formulas ------------------------------------------------------------------------------------


def speed_ratio(params: Sequence[nn.Parameter]) -> float:
    """sum ||grad||^2 / sum ||theta||^2 over the parameters (a missing gradient counts 0)."""
    weights = sum(float(p.detach().double().pow(2).sum()) for p in params)
    grads = sum(float(p.grad.detach().double().pow(2).sum()) for p in params if p.grad is not None)
    return grads / weights if weights > 0 else 0.0


def bdr_difference(bypass: Sequence[float], main: Sequence[float]) -> float:
    """d = log10(M_bypass,0 / M_main,0) - log10(M_bypass,1 / M_main,1); 0 while any sum is still 0."""
    if min(*bypass, *main) <= 0:
        return 0.0
    return math.log10(bypass[0] / main[0]) - math.log10(bypass[1] / main[1])


def running_mean(previous: Tensor, new: Tensor, count: int) -> Tensor:
    """(new + previous * count) / (count + 1): the official running average of the gates."""
    return (new + previous * count) / (count + 1)


def utilisation_rate(accuracy_on: float, accuracy_off: float) -> float:
    """u = (A - A_off) / A: the share of a branch's accuracy owed to the other modality's flow (0 if A = 0)."""
    return (accuracy_on - accuracy_off) / accuracy_on if accuracy_on > 0 else 0.0


@dataclass
class Curation:
    """The official re-balancing state machine (Bias_Mitigation_Strong.on_backward_end) and the speed sums."""

    bypass: list[float] = field(default_factory=lambda: [0.0, 0.0])  # M_bypass,m
    main: list[float] = field(default_factory=lambda: [0.0, 0.0])  # M_main,m
    active: bool = False  # curation_mode
    caring: int = 0  # caring_modality
    steps: int = 0  # curation_step
    d: float = 0.0  # the last d_BDR

    def accumulate(self, bypass: Sequence[float], main: Sequence[float]) -> float:
        for m in range(2):
            self.bypass[m] += bypass[m]
            self.main[m] += main[m]
        self.d = bdr_difference(self.bypass, self.main)
        return self.d

    def after_backward(self, unlocked: bool, ratios: Any, epsilon: float, window: int) -> None:
        """One step of the official rule; `ratios()` gives this step's (bypass, main) speed ratios, measured
        (and summed) only when the rule reads them: always before unlocking, never while curating."""
        if not unlocked:
            self.accumulate(*ratios())
            self.active, self.caring = False, 0
        elif not self.active:
            d = self.accumulate(*ratios())
            if abs(d) > epsilon:
                self.active, self.steps = True, 0
                self.caring = 0 if d > 0 else 1
            else:
                self.active, self.caring = False, 0
        else:
            self.steps += 1
            if self.steps == window:
                self.active = False


# -- the model: the run model's encoders, an MMTM block, branch classifiers ------------------------------------


class GreedyModel(UnimodalHeads):
    """The run model with an MMTM block on its encoder outputs and a classifier per modality (`unimodal_heads`).
    Forward: the gates from both modalities (no curation), then the configured objective's prediction."""

    def __init__(self, model: nn.Module, modalities: Sequence[str], output_size: int, ratio: int = 4,
                 objective: str = "branches") -> None:
        super().__init__(model, modalities, output_size)
        self.order = tuple(modalities)
        widths = [int(model.feature_dim(m)) for m in self.order]
        hidden = int(2 * sum(widths) / ratio)
        self.mmtm_squeeze = nn.Linear(sum(widths), hidden)
        self.mmtm_excite = nn.ModuleDict({m: nn.Linear(hidden, w) for m, w in zip(self.order, widths, strict=True)})
        self.objective = objective
        self.gate_means: dict[str, Tensor] = {}  # running mean of each modality's gates (training forwards)
        self.gate_count = 0

    def gates(self, squeezes: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """g_m = sigmoid(W_m ReLU(W_s [s_0; s_1] + b_s) + b_m): (B, D_m) per modality."""
        excitation = torch.relu(self.mmtm_squeeze(torch.cat([squeezes[m] for m in self.order], dim=1)))
        return {m: torch.sigmoid(self.mmtm_excite[m](excitation)) for m in self.order}

    def gated(self, features: Mapping[str, Tensor], caring: int | None = None) -> dict[str, Tensor]:
        """z'_m = z_m * g_m; the cared modality's gate the running mean of its gates (curation). Updates the
        running means in training mode."""
        gates = self.gates(features)
        if self.training:
            self.update_gate_means(gates)
        if caring is not None:
            cared = self.order[caring]
            gates[cared] = self.gate_means[cared].expand_as(gates[cared])
        return {m: features[m] * gates[m] for m in self.order}

    @torch.no_grad()
    def update_gate_means(self, gates: Mapping[str, Tensor]) -> None:
        for m, g in gates.items():
            previous = self.gate_means.get(m, torch.zeros_like(g[0]))
            self.gate_means[m] = running_mean(previous, g.mean(dim=0), self.gate_count)
        self.gate_count += 1

    def branch_outputs(self, gated: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Per modality (B, K): its classifier ("branches"), or its half of the run model's head ("fused":
        z'_m W_m^T + b / n, summing to the fused logits)."""
        if self.objective == "branches":
            return self.unimodal_outputs(gated)
        weight, bias, n = self.model.head.weight, self.model.head.bias, len(self.order)
        return {m: gated[m] @ weight[:, cols].T + bias / n for m, cols in self.model.head_slices().items()}

    def predict(self, gated: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """(fused logits, branch outputs): the mean of the branches, or the run model's head."""
        branches = self.branch_outputs(gated)
        if self.objective == "branches":
            return torch.stack(list(branches.values())).mean(dim=0), branches
        return self.model.fuse(gated), branches

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        logits, branches = self.predict(self.gated(features))
        return ModelOutput(logits=logits, features=features,
                           modality_logits={m: o.detach() for m, o in branches.items()})

    def bypass_parameters(self, modality: str) -> list[nn.Parameter]:
        """The MMTM parameters of m: its excitation layer and the shared squeeze layer (counted for both)."""
        return [*self.mmtm_squeeze.parameters(), *self.mmtm_excite[modality].parameters()]

    def main_parameters(self, modality: str) -> list[nn.Parameter]:
        """Modality m's branch: its encoder, and its classifier in the "branches" objective."""
        params = list(self.encoders[modality].parameters())
        if self.objective == "branches":
            params += list(self.unimodal_heads[modality].parameters())
        return params


# -- the method -------------------------------------------------------------------------------------------


@register
class Greedy(Method):
    name = "greedy"
    Params = GreedyParams
    min_modalities = 2
    max_modalities = 2
    description = "Greedy: MMTM cross-modal gates; conditional learning speeds pick a modality to re-balance"
    display_name = "Greedy"
    table_order = 315
    requires = frozenset({"features", "encoders", "linear_head"})
    # Official configs/training_guided.gin: epsilon 0.01, curation window 5, starting_epoch 2, every epoch after.
    thesis = ThesisSettings(params={"epsilon": 0.01, "curation_window": 5, "objective": "branches",
                                    "starting_epoch": 2}, window=(0, -1))

    no_dev_set = "computes its speeds from the training gradients"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        for name, least in (("epsilon", 0), ("curation_window", 1), ("ratio", 1), ("starting_epoch", 0)):
            if not getattr(params, name) >= least:
                raise ConfigError(f"greedy: {name} must be >= {least}, got {getattr(params, name)}")
        check_choices("greedy", params, {"objective": OBJECTIVES})

    def build(self, ctx: BuildContext) -> nn.Module:
        return GreedyModel(ctx.model(), ctx.spec.modalities, ctx.spec.num_classes, ctx.params.ratio,
                           ctx.params.objective)

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        state.scratch[STATE_KEY] = Curation()
        return {}

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        curation: Curation = state.scratch[STATE_KEY]
        gated = model.gated(model.encode(batch), curation.caring if curation.active else None)
        logits, branches = model.predict(gated)
        if state.params.objective == "branches":  # official blend_loss: the sum of the branch losses
            loss = sum(state.task.loss(o, batch.labels) for o in branches.values())
        else:
            loss = state.task.loss(logits, batch.labels)
        return loss, {"curation": float(curation.active), "caring": float(curation.caring)}

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        curation: Curation = state.scratch[STATE_KEY]
        params: GreedyParams = state.params
        order = model.order

        def ratios() -> tuple[list[float], list[float]]:
            return ([speed_ratio(model.bypass_parameters(m)) for m in order],
                    [speed_ratio(model.main_parameters(m)) for m in order])

        unlocked = state.in_window and state.epoch >= params.starting_epoch
        curation.after_backward(unlocked, ratios, params.epsilon, params.curation_window)
        return {"d_bdr": curation.d, "unlocked": float(unlocked),
                **{f"bdr/{m}": _bdr(curation, k) for k, m in enumerate(order)}}

    @torch.no_grad()
    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        """u(other | m) on the validation split, the other modality's MMTM input its training-split mean."""
        if not state.params.utilisation:
            return {}
        was_training = model.training
        model.eval()
        try:
            means = _mean_features(model, state.batches("train", batch_size=EVAL_BATCH))
            on, off, count = [0.0, 0.0], [0.0, 0.0], 0
            for batch in state.batches("valid", batch_size=EVAL_BATCH):
                features = model.encode(batch)
                hits_on = _branch_hits(model, features, features, batch.labels, state.task)
                for k, m in enumerate(model.order):
                    other = model.order[1 - k]
                    squeezes = {**features, other: means[other].expand_as(features[other])}
                    hits_off = _branch_hits(model, features, squeezes, batch.labels, state.task)
                    on[k] += hits_on[m]
                    off[k] += hits_off[m]
                count += batch.size
        finally:
            model.train(was_training)
        logs: Logs = {}
        for k in range(2):
            other = model.order[1 - k]
            logs[f"valid:utilisation/{other}"] = utilisation_rate(on[k] / count, off[k] / count)
        return logs


def _bdr(curation: Curation, k: int) -> float:
    """log10(M_bypass,k / M_main,k) (0 while either sum is 0)."""
    if curation.bypass[k] <= 0 or curation.main[k] <= 0:
        return 0.0
    return math.log10(curation.bypass[k] / curation.main[k])


def _mean_features(model: GreedyModel, batches: Any) -> dict[str, Tensor]:
    """Each modality's mean z_m over the batches: (D_m,)."""
    totals: dict[str, Tensor] = {}
    count = 0
    for batch in batches:
        for m, z in model.encode(batch).items():
            totals[m] = totals.get(m, 0) + z.sum(dim=0)
        count += batch.size
    return {m: t / max(count, 1) for m, t in totals.items()}


def _branch_hits(model: GreedyModel, features: Mapping[str, Tensor], squeezes: Mapping[str, Tensor],
                 labels: Tensor, task: Any) -> dict[str, float]:
    """Per modality, how many samples its branch gets right when the gates read `squeezes`."""
    gates = model.gates(squeezes)
    branches = model.branch_outputs({m: features[m] * gates[m] for m in model.order})
    return {m: float(task.hits(o, labels).sum()) for m, o in branches.items()}
