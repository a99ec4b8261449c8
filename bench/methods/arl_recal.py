"""ARL, Adaptive Re-calibration Learning (Yang, Li, Lin and Ye, "Adaptive Re-calibration Learning for
Balanced Multimodal Intention Recognition", NeurIPS 2025; official code yan9qu/NeurIPS25-ARL:
methods/MAG_BERT/manager.py (_train_both, _calculate_contribution, get_modality_contribution,
reinit_score, reinit, purity_score), run.py (defaults); docs/methods/arl_recal.md).

Plain task-loss training, with two operations alternating at every `start`-th epoch (e % start == 0,
e > 0), re-sampling first, each at most `mask_num` / `reinit_num` times (see `schedule`):

re-sampling (during epoch e, every batch): with f = the fused output and f^-m the fused output with
modality m's input zeroed (eval mode, no gradient),

    d_m = 1 - |cos(f_i, f_i^-m)|                                     per sample i
    c_m = mean_i exp(eta d_m) / (sum_n exp(eta d_n) + 1e-8)          eta = 10
    modality m's input is zeroed for the batch's training step when c_m >= threshold (0.5)

re-initialisation (after epoch e): per modality, the purity gap of K-means clusterings of the encoder
outputs on the training and the validation split (Diagnosing & Re-learning's, bench.methods.dnr), and
the contribution on the first training batch, c'_m = mean_i d_m / (sum_n d_n + 1e-8):

    w_m = tanh(lambda |P_m^train - P_m^valid| + mu c'_m)             lambda = 3, mu = 0.01
    theta_m <- w_m theta_m^init + (1 - w_m) theta_m                  every parameter of encoder m

Classification only (purity needs class labels; the paper runs MOSI / MOSEI as 7 classes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import Logs, Method, ThesisSettings, TrainState, register
from bench.methods.dnr import apply_pending_reinit, initial_encoders, split_purities

STATE_KEY = "arl_recal/state"
RESAMPLE, REINIT = "resample", "reinit"
CONTRIBUTION_EPS = 1e-8  # the official `+ 1e-8` in both contributions' denominators


@dataclass(frozen=True)
class ARLRecalParams:
    start: int = 2  # operations at epochs e % start == 0, e > 0 (run.py --start_epoch 2)
    mask_num: int = 1  # at most this many re-sampling epochs (run.py --mask_num 1)
    reinit_num: int = 1  # at most this many re-initialisations (run.py --reinit_num 1)
    eta: float = 10.0  # the re-sampling contribution's exp(eta d) (run.py --yita 10)
    threshold: float = 0.5  # a modality with contribution >= threshold is zeroed (--contribution_threshold)
    move_lambda: float = 3.0  # lambda on the purity gap (run.py --move_lambda 3)
    m_weight: float = 0.01  # mu on the re-initialisation contribution (run.py --m_weight 0.01)
    kmeans_n_init: int = 10  # K-means restarts (sklearn's default before 1.4)
    kmeans_seed: int = 0  # KMeans random_state (the official 0)


# -- the formulas ------------------------------------------------------------------------------------


def schedule(epochs: int, start: int, mask_num: int, reinit_num: int) -> dict[int, str]:
    """epoch -> "resample" (during it) or "reinit" (after it), the official state machine of _train_both."""
    plan: dict[int, str] = {}
    upcoming, masks, reinits = RESAMPLE, 0, 0
    for epoch in range(1, epochs):
        if epoch % start:
            continue
        if upcoming == RESAMPLE and masks < mask_num:
            plan[epoch], masks, upcoming = RESAMPLE, masks + 1, REINIT
        elif upcoming == REINIT and reinits < reinit_num:
            plan[epoch], reinits, upcoming = REINIT, reinits + 1, RESAMPLE
    return plan


def ablation_differences(fused: Tensor, ablated: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """d_m = 1 - |cos(f_i, f_i^-m)| per sample: fused (B, K), ablated m -> (B, K); returns m -> (B,)."""
    return {m: 1.0 - torch.nn.functional.cosine_similarity(fused, out, dim=1).abs() for m, out in ablated.items()}


def resample_contributions(differences: Mapping[str, Tensor], eta: float) -> dict[str, float]:
    """c_m = batch mean of exp(eta d_m) / (sum_n exp(eta d_n) + 1e-8) (_calculate_contribution)."""
    scores = {m: torch.exp(eta * d.double()) for m, d in differences.items()}  # m -> (B,)
    total = sum(scores.values()) + CONTRIBUTION_EPS
    return {m: float((s / total).mean()) for m, s in scores.items()}


def reinit_contributions(differences: Mapping[str, Tensor]) -> dict[str, float]:
    """c'_m = batch mean of d_m / (sum_n d_n + 1e-8) (get_modality_contribution)."""
    total = sum(d.double() for d in differences.values()) + CONTRIBUTION_EPS
    return {m: float((d.double() / total).mean()) for m, d in differences.items()}


def masked_modalities(contributions: Mapping[str, float], threshold: float) -> list[str]:
    """The modalities re-sampling zeroes: contribution >= threshold (the official keeps those below it)."""
    return [m for m, c in contributions.items() if c >= threshold]


def recalibration_strength(purity_gap: float, contribution: float, move_lambda: float, m_weight: float) -> float:
    """w = tanh(lambda * gap + mu * contribution) (reinit_score)."""
    return float(np.tanh(move_lambda * purity_gap + m_weight * contribution))


# -- the model-side measurements -----------------------------------------------------------------------


@torch.no_grad()
def modality_differences(model: nn.Module, batch: Batch) -> dict[str, Tensor]:
    """d_m per sample of the batch, in eval mode: each modality's input zeroed in turn."""
    was_training = model.training
    model.eval()
    try:
        features = model.encode(batch)  # m -> (B, D_m)
        zeros = model.encode_zeros(batch)  # m -> (B, D_m), the encodings of all-zero inputs
        fused = model.fuse(features)  # (B, K)
        ablated = {m: model.fuse({**features, m: zeros[m]}) for m in features}
    finally:
        model.train(was_training)
    return ablation_differences(fused, ablated)


# -- the method -------------------------------------------------------------------------------------


@register
class ARLRecal(Method):
    name = "arl_recal"
    Params = ARLRecalParams
    description = "Adaptive Re-calibration Learning: contribution re-sampling alternated with purity re-initialisation"
    display_name = "ARL (re-calibration)"
    table_order = 231
    requires = frozenset({"features", "encoders", "zero_inputs"})
    # run.py's defaults.
    thesis = ThesisSettings(params={"start": 2, "mask_num": 1, "reinit_num": 1, "eta": 10.0, "threshold": 0.5,
                                    "move_lambda": 3.0, "m_weight": 0.01})

    no_dev_set = "diagnoses on the validation split, as the official code"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if params.start < 1 or params.mask_num < 0 or params.reinit_num < 0:
            raise ConfigError("arl_recal needs start >= 1, mask_num >= 0 and reinit_num >= 0")
        if not params.move_lambda >= 0 or not params.m_weight >= 0:
            raise ConfigError("arl_recal needs move_lambda >= 0 and m_weight >= 0")
        if params.kmeans_n_init < 1:
            raise ConfigError(f"arl_recal kmeans_n_init must be >= 1, got {params.kmeans_n_init}")

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        params: ARLRecalParams = state.params
        plan = schedule(state.cfg.max_epochs, params.start, params.mask_num, params.reinit_num)
        state.scratch[STATE_KEY] = {"initial": initial_encoders(model, state.cfg.modalities), "plan": plan,
                                    "pending": None}
        return {}

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: ARLRecalParams = state.params
        logs: Logs = {}
        masked: list[str] = []
        if state.scratch[STATE_KEY]["plan"].get(state.epoch) == RESAMPLE:
            contributions = resample_contributions(modality_differences(model, batch), params.eta)
            masked = masked_modalities(contributions, params.threshold)
            logs.update({f"contribution/{m}": c for m, c in contributions.items()})
            logs.update({f"masked/{m}": float(m in masked) for m in contributions})
        features = model.encode(batch)  # m -> (B, D_m)
        if masked:
            zeros = model.encode_zeros(batch)
            features = {m: zeros[m] if m in masked else z for m, z in features.items()}
        return state.task.loss(model.fuse(features), batch.labels), logs

    def diagnose(self, model: nn.Module, state: TrainState) -> dict[str, dict[str, float]]:
        """Purities on train and valid, the first training batch's contribution, the strength, per modality."""
        params: ARLRecalParams = state.params
        purities = split_purities(model, state, "valid", params.kmeans_n_init, params.kmeans_seed)
        first = next(iter(state.batches("train")))
        contributions = reinit_contributions(modality_differences(model, first))
        result = {}
        for m, (p_train, p_held) in purities.items():
            strength = recalibration_strength(abs(p_train - p_held), contributions[m], params.move_lambda,
                                              params.m_weight)
            result[m] = {"purity_train": p_train, "purity_held_out": p_held,
                         "contribution_reinit": contributions[m], "reinit": strength}
        return result

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        arl = state.scratch[STATE_KEY]
        last_epoch = state.epoch >= state.cfg.max_epochs - 1  # no epoch left to train after a re-init
        if last_epoch or arl["plan"].get(state.epoch) != REINIT:
            return {}
        result = self.diagnose(model, state)
        arl["pending"] = {m: r["reinit"] for m, r in result.items()}
        return {f"{series}/{m}": value for m, r in result.items() for series, value in r.items()}

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        return apply_pending_reinit(model, state.scratch[STATE_KEY])
