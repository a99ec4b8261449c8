"""Diagnosing & Re-learning (Wei, Li, Feng and Hu, ECCV 2024; official code
GeWu-Lab/Diagnosing_Relearning_ECCV2024, code/ours.py; docs/methods/dnr.md).

Training is plain cross-entropy on the fused output. After epoch e (0-based) with e > 0, e % reinit_every
== 0, for the first `reinit_times` such epochs:

    Z_m^train, Z_m^held   encoder outputs z_m of the whole training split and of the held-out split
                          (eval mode, no gradient); held-out = the validation split, or the dev split
                          (held_out "dev", in dev-set runs)
    P_m^split             = purity(KMeans_K(minmax_{-1,1}(Z_m^split)), y): each cluster votes its majority
                          class; the share of samples whose class is their cluster's majority
    d_m                   = |P_m^train - P_m^held|        the diagnosis (a large gap: m has over-fitted)
    w_m                   = tanh(lambda * d_m)             lambda = move_lambda = 3
    theta_m              <- w_m theta_m^init + (1 - w_m) theta_m   every parameter of encoder m

theta^init are the encoder parameters before any training. The head and the optimizer state are left as
they are. The diagnosis runs in `on_epoch_end` (the model the loop then validates), the re-initialisation
in the next `on_epoch_start`, so the validation and checkpoint of epoch e see the model before it, as in
the official order (train, validate, re-initialise). Classification only (purity needs class labels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig
from bench.methods.base import Logs, Method, ThesisSettings, TrainState, check_choices, register

EVAL_BATCH = 256  # batch size of the no-grad feature passes
STATE_KEY = "dnr/state"
HELD_OUT_SPLITS = ("valid", "dev")


@dataclass(frozen=True)
class DnRParams:
    move_lambda: float = 3.0  # w = tanh(move_lambda * |purity_train - purity_held_out|)
    reinit_every: int = 20  # re-initialise after epochs 20, 40, 60 (0-based), as the official defaults
    reinit_times: int = 3  # at most this many re-initialisations per run
    # k-means restarts: 1, the official call's (it passes no n_init: scikit-learn's "auto", one k-means++ run
    # since 1.4); 10, sklearn's default before 1.4, is the steadier reading this harness used before
    kmeans_n_init: int = 1
    kmeans_seed: int = 0  # KMeans random_state (the official 0)
    held_out: str = "valid"  # the held-out split of the diagnosis: "valid", or "dev" (needs dev_set)


# -- the formulas ------------------------------------------------------------------------------------


def reinit_due(epoch: int, every: int, times: int) -> bool:
    """Whether the epoch just finished (0-based) is followed by a diagnosis and re-initialisation."""
    return epoch > 0 and epoch % every == 0 and epoch // every <= times


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
    """Share of samples whose label is the most frequent label of their cluster."""
    # labels, clusters: (N,) ints
    majority = 0
    for cluster in np.unique(clusters):
        counts = np.bincount(labels[clusters == cluster])
        majority += int(counts.max())
    return majority / len(labels)


def cluster_purity(features: np.ndarray, labels: np.ndarray, num_classes: int, n_init: int = 1,
                   seed: int = 0) -> float:
    """Purity of a K-means clustering (K = the number of classes) of min-max scaled features."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import MinMaxScaler

    # features: (N, D); labels: (N,)
    scaled = MinMaxScaler(feature_range=(-1, 1)).fit_transform(features)  # each column to [-1, 1]
    clusters = min(num_classes, len(features))  # ours: fewer samples than classes would not cluster
    assigned = KMeans(n_clusters=clusters, random_state=seed, n_init=n_init).fit_predict(scaled)  # (N,)
    return purity(labels, assigned)


def reinit_strength(train_purity: float, held_out_purity: float, move_lambda: float) -> float:
    """w = tanh(lambda * |P_train - P_held_out|) in [0, 1)."""
    return float(np.tanh(move_lambda * abs(train_purity - held_out_purity)))


@torch.no_grad()
def soft_reinit(params: Sequence[nn.Parameter], initial: Sequence[Tensor], strength: float) -> None:
    """theta <- w theta_init + (1 - w) theta, in place."""
    for param, init in zip(params, initial, strict=True):
        param.mul_(1.0 - strength).add_(init, alpha=strength)


# -- the method -------------------------------------------------------------------------------------


@torch.no_grad()
def initial_encoders(model: nn.Module, modalities: Sequence[str]) -> dict[str, list[Tensor]]:
    """A copy of every encoder's parameters (theta^init), taken before any training."""
    return {m: [p.detach().clone() for p in model.encoders[m].parameters()] for m in modalities}


def apply_pending_reinit(model: nn.Module, store: dict[str, Any]) -> Logs:
    """Apply the strengths the last diagnosis left in store["pending"] (m -> w) toward store["initial"],
    once; {"reinit_applied": 1.0} when it did."""
    pending: Mapping[str, float] | None = store["pending"]
    if pending is None:
        return {}
    for m, strength in pending.items():
        soft_reinit(list(model.encoders[m].parameters()), store["initial"][m], strength)
    store["pending"] = None
    return {"reinit_applied": 1.0}


@torch.no_grad()
def encode_split(model: nn.Module, state: TrainState, split: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """z_m of every sample of a split (row order, eval mode) as float64 arrays, and the labels."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[Tensor]] = {}
    labels = []
    try:
        for batch in state.batches(split, batch_size=EVAL_BATCH):
            for m, z in model.encode(batch).items():
                chunks.setdefault(m, []).append(z.float().cpu())
            labels.append(batch.labels.cpu())
    finally:
        model.train(was_training)
    features = {m: torch.cat(parts).double().numpy() for m, parts in chunks.items()}
    return features, torch.cat(labels).numpy()


def split_purities(model: nn.Module, state: TrainState, held_out: str, n_init: int,
                   seed: int) -> dict[str, tuple[float, float]]:
    """m -> (purity on the training split, purity on the held-out split) of encoder m's outputs."""
    train, train_labels = encode_split(model, state, "train")
    held, held_labels = encode_split(model, state, held_out)
    return {m: (cluster_purity(train[m], train_labels, state.num_classes, n_init, seed),
                cluster_purity(held[m], held_labels, state.num_classes, n_init, seed))
            for m in state.cfg.modalities}


@register
class DnR(Method):
    name = "dnr"
    Params = DnRParams
    requires = frozenset({"encoders", "features"})
    description = "Diagnosing & Re-learning: soft re-initialisation of each encoder by its purity gap"
    display_name = "Diagnosing & Re-learning"
    table_order = 180
    # The official defaults (script/ours.sh): lambda 3, every 20 epochs, at most 3 times.
    thesis = ThesisSettings(params={"move_lambda": 3.0, "reinit_every": 20, "reinit_times": 3})

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.move_lambda >= 0:
            raise ConfigError(f"dnr move_lambda must be >= 0, got {params.move_lambda}")
        if params.reinit_every < 1 or params.reinit_times < 0:
            raise ConfigError("dnr needs reinit_every >= 1 and reinit_times >= 0")
        if params.kmeans_n_init < 1:
            raise ConfigError(f"dnr kmeans_n_init must be >= 1, got {params.kmeans_n_init}")
        check_choices("dnr", params, {"held_out": HELD_OUT_SPLITS})
        if params.held_out == "dev" and not cfg.dev_set:
            raise ConfigError("dnr held_out 'dev' diagnoses on the dev split: it needs a dev-set run (dev_set)")

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        state.scratch[STATE_KEY] = {"initial": initial_encoders(model, state.cfg.modalities), "pending": None}
        return {}

    def diagnose(self, model: nn.Module, state: TrainState) -> dict[str, dict[str, float]]:
        """Purities on the training and held-out splits, the gap and the strength w per modality."""
        params: DnRParams = state.params
        purities = split_purities(model, state, params.held_out, params.kmeans_n_init, params.kmeans_seed)
        result = {}
        for m, (p_train, p_held) in purities.items():
            result[m] = {"purity_train": p_train, "purity_held_out": p_held, "diagnosis": abs(p_train - p_held),
                         "reinit": reinit_strength(p_train, p_held, params.move_lambda)}
        return result

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        params: DnRParams = state.params
        last_epoch = state.epoch >= state.cfg.max_epochs - 1  # no epoch left to train after a re-init
        if last_epoch or not reinit_due(state.epoch, params.reinit_every, params.reinit_times):
            return {}
        result = self.diagnose(model, state)
        state.scratch[STATE_KEY]["pending"] = {m: r["reinit"] for m, r in result.items()}
        return {f"{series}/{m}": value for m, r in result.items() for series, value in r.items()}

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        return apply_pending_reinit(model, state.scratch[STATE_KEY])
