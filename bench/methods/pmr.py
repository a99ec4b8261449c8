"""PMR: Prototypical Modal Rebalance (Fan et al., CVPR 2023; thesis 5.3.1; methods.md "PMR").

Per modality m the method keeps class prototypes C^m (K, out_m): the mean encoder output z_m of each
class over a prototype set. A sample's prototype logits are its negative Euclidean distances to the
prototypes, pi^m_ik = -||z_m,i - C^m_k||_2, and L_P^m = CE(pi^m, y) is a prototypical classifier's
loss. The scores s_m = sum_i softmax(pi^m_i)_{y_i} say which modality is ahead; inside the modulation
window every modality behind the leader gets beta_m = alpha (a hard switch, as in the official code)
and L = CE(fused, y) + sum_m beta_m L_P^m, so only the lagging encoders are pulled toward their
prototypes. Outside the window L = CE(fused, y).

Design choices (documented in the report too):
- Prototype set: the first ceil(proto_fraction * N_train) samples of a shuffled pass over the training
  split (a fresh shuffle each time), or the whole dev split when cfg.dev_set. Computed in eval mode
  without gradient before epoch 0 and after every epoch; constant within an epoch.
- A class absent from the prototype set keeps its previous prototype; before it has ever been seen
  its prototype is the zero vector. EMA (C <- (1 - ema) C_new + ema C_old) applies only to classes
  that already had a prototype, so the first prototypes are plain class means (not shrunk toward 0).
- EMA timing follows the official code: the passes before epoch 0 and after epoch 0 (pass indices 0
  and 1) take plain class means; the EMA applies from the pass after epoch 1 (index 2) on.
- Dev-set variant: prototypes come from the dev split (per epoch, as above), and the scores s_m (hence
  the ratio and the coefficients) are computed on the dev split, eval mode, no gradient, every
  `ratio_every` optimizer steps and reused in between (methods.md "Dev-set variant": the thesis used
  the dev split for the imbalance ratio, eq. 5.13, updated every 5 steps). L_P^m stays on the batch:
  it is the loss being optimised.
- Entropy option (off by default): inside the window, when some modality is accelerated, subtract
  mu * H(softmax(pi^m)) (batch mean) for the leading modality (every modality at the maximum score).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.config import ConfigError, RunConfig
from bench.methods.base import Batch, Logs, Method, ThesisSettings, TrainState, register

EVAL_BATCH = 256  # batch size of the no-grad passes (prototypes, dev scores, prototype accuracy)


@dataclass(frozen=True)
class PMRParams:
    alpha: float = 0.5  # weight of the prototype loss of each lagging modality
    ema: float = 0.0  # prototype momentum: C <- (1 - ema) C_new + ema C_old (0 = off)
    entropy_mu: float = 0.0  # weight of the leading modality's prototype-entropy term (0 = off)
    proto_fraction: float = 0.1  # share of a shuffled training pass used as the prototype set


@dataclass
class Prototypes:
    """One modality's prototypes and which classes have ever had one."""

    centers: Tensor  # (K, D)
    seen: Tensor  # (K,) bool


# -- formulas (pure functions, checked by hand in the tests) -----------------------------------------


def class_means(features: Tensor, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """Mean feature per class and the class counts; an absent class has mean 0 and count 0."""
    # features: (N, D); labels: (N,) int64
    sums = features.new_zeros(num_classes, features.shape[1]).index_add_(0, labels, features)  # (K, D)
    counts = torch.bincount(labels, minlength=num_classes).to(features.dtype)  # (K,)
    means = sums / counts.clamp_min(1.0).unsqueeze(1)  # (K, D)
    return means, counts


def empty_prototypes(num_classes: int, dim: int, device: torch.device | str = "cpu") -> Prototypes:
    """Zero prototypes for classes never seen yet."""
    return Prototypes(
        centers=torch.zeros(num_classes, dim, device=device),
        seen=torch.zeros(num_classes, dtype=torch.bool, device=device),
    )


def update_prototypes(old: Prototypes, means: Tensor, counts: Tensor, ema: float) -> Prototypes:
    """New prototypes from this pass's class means; absent classes keep the old ones."""
    present = counts > 0  # (K,)
    # EMA only where an old prototype exists; a first sighting takes the class mean as it is
    smoothed = torch.where(old.seen.unsqueeze(1), (1.0 - ema) * means + ema * old.centers, means)  # (K, D)
    centers = torch.where(present.unsqueeze(1), smoothed, old.centers)
    return Prototypes(centers=centers, seen=old.seen | present)


FIRST_EMA_PASS = 2  # the official code's first smoothed update: the one after epoch 1


def ema_for_pass(pass_index: int, ema: float) -> float:
    """The momentum of prototype pass `pass_index` (0 = before epoch 0, k = after epoch k - 1)."""
    return ema if pass_index >= FIRST_EMA_PASS else 0.0


def euclidean_distances(points: Tensor, centers: Tensor) -> Tensor:
    """||points_i - centers_k||_2 as (N, K), with a zero (not NaN) gradient at distance 0."""
    # points: (N, D); centers: (K, D)
    squared = (points.unsqueeze(1) - centers.unsqueeze(0)).pow(2).sum(dim=2)  # (N, K)
    positive = squared > 0
    # sqrt has an infinite derivative at 0; a sample equal to its class mean (e.g. the only member of
    # that class in the prototype set) would otherwise turn the whole gradient into NaN
    safe = torch.where(positive, squared, torch.ones_like(squared))
    return torch.where(positive, safe.sqrt(), torch.zeros_like(squared))


def prototype_logits(features: Tensor, centers: Tensor) -> Tensor:
    """pi_ik = -||z_i - C_k||_2: (N, K)."""
    return -euclidean_distances(features, centers)


def prototype_score(logits: Tensor, labels: Tensor) -> float:
    """s = sum_i softmax(pi_i)_{y_i} (a sum over the samples, as in the official code)."""
    probs = torch.softmax(logits.detach(), dim=1)  # (N, K)
    return float(probs.gather(1, labels.unsqueeze(1)).sum())


def rebalance_coefficients(scores: Mapping[str, float], alpha: float) -> dict[str, float]:
    """beta_m = alpha for every modality scoring below the best one, else 0 (all 0 when all equal)."""
    best = max(scores.values())
    return {m: (alpha if s < best else 0.0) for m, s in scores.items()}


def leading_modalities(scores: Mapping[str, float], betas: Mapping[str, float]) -> list[str]:
    """The modalities whose entropy is penalised: those at the top score, when someone is accelerated."""
    if not any(b > 0 for b in betas.values()):
        return []
    best = max(scores.values())
    return [m for m, s in scores.items() if s == best]


def ratio_logs(scores: Mapping[str, float], modalities: tuple[str, ...]) -> Logs:
    """Two modalities: 'ratio' = s_m1 / s_m2 (run order). Three: 'ratio/<m>' = s_m / min_j s_j."""
    if len(modalities) == 2:
        first, second = modalities
        return {"ratio": scores[first] / max(scores[second], 1e-12)}
    lowest = max(min(scores.values()), 1e-12)
    return {f"ratio/{m}": scores[m] / lowest for m in modalities}


def mean_entropy(logits: Tensor) -> Tensor:
    """Batch mean of H(softmax(logits)) (nats)."""
    log_probs = torch.log_softmax(logits, dim=1)  # (B, K)
    return -(log_probs.exp() * log_probs).sum(dim=1).mean()


def pmr_objective(fused_logits: Tensor, proto_logits: Mapping[str, Tensor], labels: Tensor,
                  betas: Mapping[str, float], entropy_mu: float = 0.0,
                  leading: tuple[str, ...] | list[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
    """L = CE(fused, y) + sum_m beta_m CE(pi^m, y) - mu sum_{m leading} H(softmax(pi^m)).

    Returns the loss and each modality's L_P^m. A modality with beta 0 adds nothing to the graph, so
    its encoder gets no gradient from the prototype term (not even a zero-weighted one).
    """
    proto_losses = {m: F.cross_entropy(logits, labels) for m, logits in proto_logits.items()}
    loss = F.cross_entropy(fused_logits, labels)
    for m, beta in betas.items():
        if beta != 0.0:
            loss = loss + beta * proto_losses[m]
    if entropy_mu != 0.0:
        for m in leading:
            loss = loss - entropy_mu * mean_entropy(proto_logits[m])
    return loss, proto_losses


# -- no-grad passes over a split ------------------------------------------------------------------------


def _take_first(batches: Iterator[Batch], count: int) -> Iterator[Batch]:
    """The first `count` samples of a batch stream (the last batch trimmed)."""
    taken = 0
    for batch in batches:
        keep = min(batch.size, count - taken)
        if keep < batch.size:
            rows = slice(0, keep)
            batch = Batch(inputs={m: x[rows] for m, x in batch.inputs.items()},
                          lengths={m: n[rows] for m, n in batch.lengths.items()},
                          labels=batch.labels[rows], index=batch.index[rows])
        taken += keep
        yield batch
        if taken >= count:
            return


@torch.no_grad()
def _encode_all(model: nn.Module, batches: Iterator[Batch]) -> tuple[dict[str, Tensor], Tensor]:
    """z_m of every sample in `batches` (eval mode) and their labels."""
    was_training = model.training
    model.eval()
    chunks: dict[str, list[Tensor]] = {}
    labels = []
    for batch in batches:
        for m, z in model.encode(batch).items():
            chunks.setdefault(m, []).append(z)  # (B, out_m)
        labels.append(batch.labels)
    model.train(was_training)
    return {m: torch.cat(parts) for m, parts in chunks.items()}, torch.cat(labels)


def _split_size(state: TrainState, split: str) -> int:
    """Number of samples in a split (one pass that only reads the data, no forward)."""
    return sum(batch.size for batch in state.batches(split, shuffle=False, batch_size=1024))


def _shuffled_train(state: TrainState, pass_index: int) -> Iterator[Batch]:
    """A shuffled training pass whose order depends on `pass_index`, not only on the current epoch.

    The loop seeds hook shuffles with the epoch, which would give the pass before epoch 0 and the one
    after epoch 0 the same order (the same prototype subset); pass k uses the shuffle of "epoch" k.
    """
    epoch = state.epoch
    state.epoch = pass_index
    try:
        return state.batches("train", shuffle=True, batch_size=EVAL_BATCH)  # seeded here, at the call
    finally:
        state.epoch = epoch


# -- the method -------------------------------------------------------------------------------------------


@register
class PMR(Method):
    name = "pmr"
    Params = PMRParams
    has_dev_set_variant = True
    requires = frozenset({"features"})
    description = "prototype cross-entropy added for the lagging modality (Prototypical Modal Rebalance)"
    display_name = "PMR"
    table_order = 100
    # Thesis appendix A: alpha 0.5 (0.3 for audio+vision, see thesis_params), no EMA (the presets'
    # ema_prototypes rows set 0.1), modulation in epochs 0..9, the dev-set ratio every 5 steps.
    thesis = ThesisSettings(params={"alpha": 0.5, "ema": 0.0}, window=(0, 9), dev_ratio_every=5)

    @classmethod
    def thesis_params(cls, modalities: tuple[str, ...]) -> dict[str, Any]:
        """alpha 0.3 for audio+vision, 0.5 for every other modality set."""
        params = dict(cls.thesis.params)
        if set(modalities) == {"audio", "vision"}:
            params["alpha"] = 0.3
        return params

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if params.alpha < 0:
            raise ConfigError(f"pmr alpha must be >= 0, got {params.alpha}")
        if not 0.0 <= params.ema < 1.0:
            raise ConfigError(f"pmr ema must be in [0, 1), got {params.ema}")
        if params.entropy_mu < 0:
            raise ConfigError(f"pmr entropy_mu must be >= 0, got {params.entropy_mu}")
        if not 0.0 < params.proto_fraction <= 1.0:
            raise ConfigError(f"pmr proto_fraction must be in (0, 1], got {params.proto_fraction}")

    # -- prototypes ----------------------------------------------------------------------------------
    def _prototype_set(self, state: TrainState, pass_index: int) -> Iterator[Batch]:
        if state.cfg.dev_set:
            return state.batches("dev", shuffle=False, batch_size=EVAL_BATCH)
        count = math.ceil(state.params.proto_fraction * state.scratch["train_size"])
        return _take_first(_shuffled_train(state, pass_index), count)

    def _refresh_prototypes(self, model: nn.Module, state: TrainState, pass_index: int) -> None:
        features, labels = _encode_all(model, self._prototype_set(state, pass_index))
        current: dict[str, Prototypes] = state.scratch["prototypes"]
        for m, z in features.items():
            means, counts = class_means(z, labels, state.num_classes)
            current[m] = update_prototypes(current[m], means, counts, ema_for_pass(pass_index, state.params.ema))

    def _prototype_accuracy(self, model: nn.Module, state: TrainState) -> Logs:
        """Accuracy (%) of argmax pi^m on the validation split."""
        features, labels = _encode_all(model, state.batches("valid", shuffle=False, batch_size=EVAL_BATCH))
        protos: dict[str, Prototypes] = state.scratch["prototypes"]
        logs = {}
        for m, z in features.items():
            predicted = prototype_logits(z, protos[m].centers).argmax(dim=1)
            logs[f"valid:proto_acc/{m}"] = 100.0 * float((predicted == labels).float().mean())
        return logs

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        sizes = {m: model.feature_dim(m) for m in state.cfg.modalities}
        state.scratch["prototypes"] = {
            m: empty_prototypes(state.num_classes, dim, state.device) for m, dim in sizes.items()
        }
        if not state.cfg.dev_set:
            state.scratch["train_size"] = _split_size(state, "train")
        self._refresh_prototypes(model, state, pass_index=0)
        return {}

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        self._refresh_prototypes(model, state, pass_index=state.epoch + 1)
        return self._prototype_accuracy(model, state)

    # -- scores --------------------------------------------------------------------------------------
    @torch.no_grad()
    def _dev_scores(self, model: nn.Module, state: TrainState) -> dict[str, float]:
        """s_m on the dev split, recomputed every `ratio_every` optimizer steps, reused in between."""
        cached = state.scratch.get("dev_scores")
        due = state.step % state.cfg.ratio_every == 0 and state.scratch.get("dev_scores_step") != state.step
        if cached is not None and not due:
            return cached
        features, labels = _encode_all(model, state.batches("dev", shuffle=False, batch_size=EVAL_BATCH))
        protos: dict[str, Prototypes] = state.scratch["prototypes"]
        scores = {
            m: prototype_score(prototype_logits(z, protos[m].centers), labels) for m, z in features.items()
        }
        state.scratch["dev_scores"], state.scratch["dev_scores_step"] = scores, state.step
        return scores

    # -- objective -------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: PMRParams = state.params
        modalities = state.cfg.modalities
        out = model(batch)
        protos: dict[str, Prototypes] = state.scratch["prototypes"]
        proto_logits = {m: prototype_logits(out.features[m], protos[m].centers) for m in modalities}  # (B, K)
        if state.cfg.dev_set:
            scores = self._dev_scores(model, state)
        else:
            scores = {m: prototype_score(proto_logits[m], batch.labels) for m in modalities}
        if state.in_window:
            betas = rebalance_coefficients(scores, params.alpha)
            leading = leading_modalities(scores, betas)
            loss, proto_losses = pmr_objective(out.logits, proto_logits, batch.labels, betas,
                                               params.entropy_mu, leading)
        else:
            betas = {m: 0.0 for m in modalities}
            loss, proto_losses = pmr_objective(out.logits, proto_logits, batch.labels, betas)
        logs: Logs = {f"score/{m}": scores[m] for m in modalities}
        logs.update(ratio_logs(scores, modalities))
        logs.update({f"beta/{m}": betas[m] for m in modalities})
        logs.update({f"proto_loss/{m}": float(proto_losses[m].detach()) for m in modalities})
        return loss, logs
