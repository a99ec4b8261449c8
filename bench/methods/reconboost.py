"""ReconBoost (Hua et al., ICML 2024; thesis 5.3.2; methods.md "ReconBoost").

Learners f_m = H(P_m(E_m(x_m))): each modality's SequenceEncoder E_m, a projection P_m to a common
width, and ONE head H shared by every modality. The ensemble is F(x) = eta * sum_m f_m(x_m), eta a
learnable boost rate. Training alternates stages over the modalities (text -> vision -> audio, keeping
the run's modalities, repeating). One stage = `stage_epochs` epochs of phase 1 then `rectify_epochs`
epochs of phase 2:

- phase 1 trains only the stage's modality m (E_m, P_m and H) on the boosting loss
  l_i = -(1/K) (w1 - w2 q_{i,y_i}) log softmax(f_m(x_m,i))_{y_i}, q = softmax(eta sum_{j != m} f_j)
  without gradient, so samples the other learners already get right weigh less; plus
  consolidation_alpha * MSE(softmax f_m, softmax f_prev) with the previous stage's modality
  ("official", the default: both detached, as the official code and the thesis's text have it, so the
  term is logged but carries no gradient; "live": f_m keeps its gradient);
- phase 2 (global rectification) trains every ensemble member, H and eta on CE(F(x), y).

Official-code details followed by default, each with the other reading as a parameter:
- Stage 0 has no other learner. The official code's q is then a softmax over a size-1 dimension, so
  every q_{i,k} = 1 and the weight is w1 - w2 (0.75); `stage0_q=uniform` uses q = 1/K instead.
- The official code builds a fresh optimizer at the start of every phase 1 and every phase 2, so no
  moments or step counts carry over between phases (`optimizer_reset=phase`); `optimizer_reset=run`
  keeps one optimizer for the whole run. The fresh optimizer is the run's own (cfg.optimizer, lr,
  momentum, weight decay): the official code's SGD with weight decay 5e-4 is not imposed on the
  thesis's Adam rows.

Design choices (documented in the report too):
- Common width = the largest encoder output size among the run's modalities (32 on MOSI, 64 with MOSEI
  text); P_m is a Linear(out_m -> width) for every modality, also when out_m == width, so every
  learner has the same structure. No nonlinearity after P_m (the official MSA head is one Linear).
- Ensemble membership follows the official code: a learner joins the ensemble when its first stage
  starts (the official code adds it after that stage's phase 1, before any use of F). F and phase 2
  use the members only; q uses the members other than m and is uniform (1/K) when there are none.
  Once every modality has had a stage (from stage n - 1 on) F = eta * sum over all modalities. The
  membership is a buffer, so a restored checkpoint predicts with the ensemble it was validated with.
- Validation, checkpointing and early stopping happen only at stage ends (end of phase 2); the
  patience therefore counts stages. No learning-rate schedule. The modulation window is not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.config import ConfigError, RunConfig
from bench.methods.base import (
    Batch,
    BuildContext,
    Logs,
    Method,
    ModelOutput,
    ThesisSettings,
    TrainState,
    check_choices,
    register,
)

STAGE_ORDER: tuple[str, ...] = ("text", "vision", "audio")  # the official MOSEI schedule
CONSOLIDATION_MODES = ("official", "live")
STAGE0_Q_MODES = ("official", "uniform")
OPTIMIZER_RESETS = ("phase", "run")


@dataclass(frozen=True)
class ReconBoostParams:
    w1: float = 1.0  # weight of the direct term of the boosting loss
    w2: float = 0.25  # weight of the residual term (down-weights samples the others already get right)
    consolidation_alpha: float = 0.5  # weight of the memory-consolidation MSE
    consolidation: str = "official"  # "official": both sides detached (no gradient); "live": f_m live
    stage_epochs: int = 1  # phase-1 (alternating boosting) epochs per stage
    rectify_epochs: int = 1  # phase-2 (global rectification) epochs per stage
    eta_init: float = 1.0  # initial boost rate
    stage0_q: str = "official"  # q with no other learner: "official" q = 1 (weight w1 - w2); "uniform" 1/K
    optimizer_reset: str = "phase"  # "phase": a fresh optimizer at every phase start; "run": one per run


# -- schedule (pure functions of the epoch) --------------------------------------------------------------


def stage_order(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """The run's modalities in stage order: text -> vision -> audio, then any other names in the run's order."""
    return (*(m for m in STAGE_ORDER if m in modalities), *(m for m in modalities if m not in STAGE_ORDER))


@dataclass(frozen=True)
class StagePosition:
    stage: int  # 0-based stage index
    modality: str  # the modality this stage trains
    phase: int  # 1 = alternating boosting, 2 = global rectification
    last_epoch_of_stage: bool
    first_epoch_of_phase: bool


def stage_position(epoch: int, modalities: tuple[str, ...], stage_epochs: int,
                   rectify_epochs: int) -> StagePosition:
    """Where epoch `epoch` (0-based) falls in the stage schedule."""
    order = stage_order(modalities)
    length = stage_epochs + rectify_epochs
    stage, offset = divmod(epoch, length)
    return StagePosition(stage=stage, modality=order[stage % len(order)],
                         phase=1 if offset < stage_epochs else 2, last_epoch_of_stage=offset == length - 1,
                         first_epoch_of_phase=offset in (0, stage_epochs))


def ensemble_members(stage: int, modalities: tuple[str, ...]) -> tuple[str, ...]:
    """Modalities that have had a stage by stage `stage` (inclusive), in stage order."""
    order = stage_order(modalities)
    return order[:min(stage + 1, len(order))]


def previous_modality(stage: int, modalities: tuple[str, ...]) -> str | None:
    """The modality of the stage before `stage` (None at the very first stage)."""
    if stage == 0:
        return None
    order = stage_order(modalities)
    return order[(stage - 1) % len(order)]


# -- the model -------------------------------------------------------------------------------------------


class ReconBoostModel(nn.Module):
    """Encoders, projections to a common width, one shared head, a learnable boost rate."""

    def __init__(self, spec: Any, eta_init: float = 1.0) -> None:
        from bench.models import SequenceEncoder

        super().__init__()
        self.spec = spec
        self.modalities: tuple[str, ...] = spec.modalities
        self.width = max(spec.size(m).out for m in spec.modalities)
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(spec.input_dim(m), spec.size(m)) for m in spec.modalities}
        )
        self.projections = nn.ModuleDict(
            {m: nn.Linear(spec.size(m).out, self.width) for m in spec.modalities}
        )
        self.head = nn.Linear(self.width, spec.num_classes)
        self.boost_rate = nn.Parameter(torch.tensor(float(eta_init)))
        # which learners are in the ensemble F (run order); none before training starts
        self.register_buffer("members", torch.zeros(len(self.modalities), dtype=torch.bool))

    def set_members(self, modalities: tuple[str, ...]) -> None:
        for i, m in enumerate(self.modalities):
            self.members[i] = m in modalities

    def member_names(self) -> tuple[str, ...]:
        return tuple(m for i, m in enumerate(self.modalities) if bool(self.members[i]))

    def encode(self, batch: Batch, modalities: tuple[str, ...] | None = None) -> dict[str, Tensor]:
        """z_m: (B, out_m) for `modalities` (default: all)."""
        chosen = self.modalities if modalities is None else modalities
        return {m: self.encoders[m](batch.inputs[m], batch.lengths[m]) for m in chosen}

    def learner(self, modality: str, features: Tensor) -> Tensor:
        """f_m = H(P_m(z_m)): (B, K)."""
        return self.head(self.projections[modality](features))

    def learner_logits(self, batch: Batch, modalities: tuple[str, ...]) -> dict[str, Tensor]:
        features = self.encode(batch, modalities)
        return {m: self.learner(m, z) for m, z in features.items()}

    def ensemble(self, learner_logits: Mapping[str, Tensor]) -> Tensor:
        """F = eta * sum of the given learners' logits: (B, K)."""
        return self.boost_rate * torch.stack(list(learner_logits.values())).sum(dim=0)

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        logits = {m: self.learner(m, z) for m, z in features.items()}
        # before any stage (nothing trained yet) F falls back to every learner
        members = self.member_names() or self.modalities
        return ModelOutput(
            logits=self.ensemble({m: logits[m] for m in members}),
            features=features,
            modality_logits={m: f.detach() for m, f in logits.items()},
        )


# -- formulas (pure functions, checked by hand in the tests) -----------------------------------------


def others_distribution(other_logits: Mapping[str, Tensor], eta: Tensor | float, batch_size: int,
                        num_classes: int, stage0_q: str = "official") -> Tensor:
    """q = softmax(eta * sum_{j != m} f_j): (B, K), no gradient.

    With no other learner: every q_{i,k} = 1 ("official": the official code's softmax over a size-1
    dimension), or 1/K ("uniform").
    """
    if not other_logits:
        fill = 1.0 if stage0_q == "official" else 1.0 / num_classes
        return torch.full((batch_size, num_classes), fill)
    with torch.no_grad():
        summed = torch.stack([f.detach() for f in other_logits.values()]).sum(dim=0)  # (B, K)
        return torch.softmax(eta * summed, dim=1)


def boosting_weights(q: Tensor, labels: Tensor, w1: float, w2: float) -> Tensor:
    """w1 - w2 q_{i,y_i}: (B,)."""
    return w1 - w2 * q.gather(1, labels.unsqueeze(1)).squeeze(1)


def boosting_loss(learner_logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    """Batch mean of -(1/K) w_i log softmax(f_m(x_i))_{y_i} (the official code averages over K)."""
    num_classes = learner_logits.shape[1]
    log_prob_true = torch.log_softmax(learner_logits, dim=1).gather(1, labels.unsqueeze(1)).squeeze(1)  # (B,)
    return -(weights.detach() * log_prob_true).mean() / num_classes


def consolidation_loss(current_logits: Tensor, previous_logits: Tensor, mode: str) -> Tensor:
    """MSE(softmax f_m, softmax f_prev) (mean over B x K); f_prev always detached, f_m live only in "live"."""
    current = current_logits if mode == "live" else current_logits.detach()
    return F.mse_loss(torch.softmax(current, dim=1), torch.softmax(previous_logits.detach(), dim=1))


# -- the method -------------------------------------------------------------------------------------------


@register
class ReconBoost(Method):
    name = "reconboost"
    Params = ReconBoostParams
    description = "alternating per-modality boosting with a shared head and global rectification"
    requires = frozenset({"encoder_sizes"})
    display_name = "ReconBoost"
    table_order = 110
    # Thesis appendix A.0.4: w1 1, w2 0.25, consolidation alpha 0.5 (both sides detached, as the official
    # code and the thesis's text), 1 + 1 epochs per stage; SGD at 1e-2 on both datasets; no scheduler;
    # 200 epochs (100 stages of 1 boosting + 1 rectification epoch) at the full profile.
    thesis = ThesisSettings(
        params={"w1": 1.0, "w2": 0.25, "consolidation_alpha": 0.5, "consolidation": "official",
                "stage_epochs": 1, "rectify_epochs": 1},
        sgd_lr=1e-2, scheduler="none", full_epochs=200,
    )

    no_dev_set = "computes no ratios"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        choices = {"consolidation": CONSOLIDATION_MODES, "stage0_q": STAGE0_Q_MODES,
                   "optimizer_reset": OPTIMIZER_RESETS}
        check_choices("reconboost", params, choices)
        if params.stage_epochs < 1 or params.rectify_epochs < 0:
            raise ConfigError("reconboost needs stage_epochs >= 1 and rectify_epochs >= 0")
        stage_length = params.stage_epochs + params.rectify_epochs
        if cfg.max_epochs < stage_length:
            raise ConfigError(
                f"reconboost validates at stage ends: max_epochs ({cfg.max_epochs}) is shorter than one "
                f"stage ({params.stage_epochs} + {params.rectify_epochs} epochs)"
            )

    def build(self, ctx: BuildContext) -> nn.Module:
        """Its own boosting model, built from the run model's encoder sizes."""
        return ReconBoostModel(ctx.spec, eta_init=ctx.params.eta_init)

    def param_groups(self, model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
        """One group per modality (encoder + projection) and 'head' (shared head + boost rate)."""
        rates = dict(cfg.group_lrs)
        groups = [
            {"name": m, "params": [*model.encoders[m].parameters(), *model.projections[m].parameters()],
             "lr": rates.get(m, cfg.lr)}
            for m in model.modalities
        ]
        groups.append({"name": "head", "params": [*model.head.parameters(), model.boost_rate],
                       "lr": rates.get("head", cfg.lr)})
        return groups

    def uses_scheduler(self, cfg: RunConfig) -> bool:
        return False  # the thesis and the official code train ReconBoost at a constant learning rate

    def _position(self, epoch: int, state: TrainState) -> StagePosition:
        params: ReconBoostParams = state.params
        return stage_position(epoch, state.cfg.modalities, params.stage_epochs, params.rectify_epochs)

    def checkpoint_epoch(self, epoch: int, state: TrainState) -> bool:
        return self._position(epoch, state).last_epoch_of_stage

    def fresh_optimizer(self, epoch: int, state: TrainState) -> bool:
        """A new optimizer at every phase start, as the official code builds one (optimizer_reset=phase)."""
        return state.params.optimizer_reset == "phase" and self._position(epoch, state).first_epoch_of_phase

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        position = self._position(state.epoch, state)
        model.set_members(ensemble_members(position.stage, state.cfg.modalities))
        return {"stage": float(position.stage), "phase": float(position.phase),
                "stage_modality": float(state.cfg.modalities.index(position.modality))}

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        return {"eta": float(model.boost_rate.detach())}

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        position = self._position(state.epoch, state)
        if position.phase == 1:
            return self._phase1_loss(model, batch, state, position)
        return self._phase2_loss(model, batch)

    def _phase1_loss(self, model: ReconBoostModel, batch: Batch, state: TrainState,
                     position: StagePosition) -> tuple[Tensor, Logs]:
        params: ReconBoostParams = state.params
        m = position.modality
        current = model.learner_logits(batch, (m,))[m]  # (B, K), the only part with a gradient
        others = tuple(j for j in model.member_names() if j != m)
        previous = previous_modality(position.stage, state.cfg.modalities)
        with torch.no_grad():  # the other learners are fixed in phase 1: no graph, no gradients
            needed = tuple(dict.fromkeys(others + ((previous,) if previous else ())))
            fixed = model.learner_logits(batch, needed)
        q = others_distribution({j: fixed[j] for j in others}, model.boost_rate.detach(), batch.size,
                                current.shape[1], params.stage0_q).to(current.device)  # (B, K)
        weights = boosting_weights(q, batch.labels, params.w1, params.w2)  # (B,)
        boost = boosting_loss(current, batch.labels, weights)
        logs: Logs = {"phase1_loss": float(boost.detach()), "phase1_weight": float(weights.mean())}
        if previous is None:
            return boost, logs
        consolidation = consolidation_loss(current, fixed[previous], params.consolidation)
        logs["consolidation_loss"] = float(consolidation.detach())
        return boost + params.consolidation_alpha * consolidation, logs

    def _phase2_loss(self, model: ReconBoostModel, batch: Batch) -> tuple[Tensor, Logs]:
        members = model.member_names()
        ensemble_logits = model.ensemble(model.learner_logits(batch, members))  # (B, K)
        loss = F.cross_entropy(ensemble_logits, batch.labels)
        return loss, {"phase2_loss": float(loss.detach())}
