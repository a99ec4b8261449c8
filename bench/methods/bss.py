"""BSS, balance-aware sequence sampling (Guan, Jiang and Yang, IJCAI 2025, "Balance-aware Sequence Sampling
Makes Multimodal Learning Better"; official code njustkmg/IJCAI25-BSS, <dataset>/train-CL.py (the heuristic
scheduler: `model_evaluate`, `normalize_min_max`, the lambda_t schedule in `__main__`) and
<dataset>/train-SPL.py (the learning-based scheduler: `assign_weights`), for CREMA-D, KS, Sarcasm, Twitter,
VGGSound (two modalities) and NVGesture (three); docs/methods/bss.md).

The run's model gets one unimodal head per modality, h_m = Linear(D_m -> K). Training objective, every batch:

    L = w_mm CE(f(z), y) + w_u sum_m CE(h_m(z_m), y)              (official: 1 and 1; CREMA-D 0.1 and 0.9)

Each training sample's difficulty, from the model in train mode, no update (`model_evaluate`):

    s_i = mean over modality pairs of cos(softmax(h_m(z_m,i)), softmax(h_n(z_n,i)))   agreement
    l_i = w_mm CE(f(z_i), y_i) + w_u sum_m CE(h_m(z_m,i), y_i)                        the objective
    s~, l~ = min-max normalised over the training set
    d_i = (1 - s~_i) + l~_i                                                            low agreement + high loss = hard

Heuristic scheduler ("heuristic", train-CL.py): the difficulties are measured once, before the first epoch;
the samples sorted easy to hard; epoch t trains on the easiest n_t = int(N lambda_t), shuffled,

    lambda_t = min(1, sqrt((1 - lambda_0^2) / T_grow * (t + 1) + lambda_0^2))        lambda_0 = 0.1, T_grow = 40

Learning-based scheduler ("learned", train-SPL.py): every epoch, weights w_i = 1 - (l~_i - s~_i) + 0.01, and
the epoch's order is N draws without replacement with probabilities w_i / sum w (a weighted permutation),
not shuffled again. Both cut the order every batch_size and drop the last partial batch (official
drop_last=True). The order reaches the loop through `epoch_batches`. Classification only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import BuildContext, Logs, Method, TrainState, check_choices, check_non_negative, register
from bench.methods.heads import UnimodalHeads

SCHEDULERS = ("heuristic", "learned")
ORDER_KEY = "bss/order"  # the heuristic scheduler's easy-to-hard order (N,), measured once
LOGS_KEY = "bss/logs"  # this epoch's logs, written by epoch_batches, returned by on_epoch_end
WEIGHT_FLOOR = 1e-2  # the official `+ 1e-2` in the learned scheduler's weights


@dataclass(frozen=True)
class BSSParams:
    scheduler: str = "heuristic"  # "heuristic": train-CL.py's easy-to-hard curriculum; "learned": train-SPL.py
    lambda0: float = 0.1  # official lambda_0: the fraction of the data in the first epoch's pool (before sqrt)
    t_grow: int = 40  # official T_grow: epochs until the whole training set is in the pool
    multimodal_weight: float = 1.0  # w_mm (official 1; CREMA-D 0.1)
    unimodal_weight: float = 1.0  # w_u (official 1; CREMA-D 0.9)
    drop_last: bool = True  # the official loaders drop the last partial batch


# -- the formulas ------------------------------------------------------------------------------------


def pool_fraction(epoch: int, lambda0: float, t_grow: int) -> float:
    """lambda_t: the fraction of the easy-to-hard order that epoch `epoch` (0-based) trains on."""
    return min(1.0, math.sqrt((1.0 - lambda0 ** 2) / t_grow * (epoch + 1) + lambda0 ** 2))


def min_max(values: Tensor) -> Tensor:
    """(v - min) / (max - min) over the vector; all zeros when every value is the same (ours: the official
    code would divide by zero)."""
    values = values.double()
    low, span = values.min(), values.max() - values.min()
    return (values - low) / span if span > 0 else torch.zeros_like(values)


def mean_pairwise_cosine(probs: Sequence[Tensor]) -> Tensor:
    """Per row, the mean over modality pairs of the cosine between their (N, K) class distributions: (N,)."""
    pairs = [torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)
             for a, b in combinations(probs, 2)]
    return torch.stack(pairs).mean(dim=0)


def difficulty(similarity: Tensor, loss: Tensor) -> Tensor:
    """d = (1 - s~) + l~, both min-max normalised over the set: (N,)."""
    return (1.0 - min_max(similarity)) + min_max(loss)


def easy_to_hard(scores: Tensor) -> Tensor:
    """Row indices sorted by difficulty, easiest first; equal scores keep row order (Python's stable sort)."""
    return torch.sort(scores, stable=True).indices


def sampling_weights(similarity: Tensor, loss: Tensor) -> Tensor:
    """The learned scheduler's probabilities: w = 1 - (l~ - s~) + 0.01, normalised to sum 1: (N,)."""
    weights = 1.0 - (min_max(loss) - min_max(similarity)) + WEIGHT_FLOOR
    return weights / weights.sum()


def cut(order: Tensor, batch_size: int, drop_last: bool) -> list[Tensor]:
    """The order cut every batch_size; with drop_last the last partial batch goes, unless it is the only one
    (ours: an epoch always trains on something)."""
    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if drop_last and len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


# -- the method -------------------------------------------------------------------------------------------


@register
class BSS(Method):
    name = "bss"
    Params = BSSParams
    tasks = ("classification",)  # the difficulty reads class distributions; no published regression form
    requires = frozenset({"features"})
    description = "balance-aware sequence sampling: train easy-to-hard by unimodal agreement and loss"
    display_name = "BSS"
    table_order = 222

    no_dev_set = "orders the training samples by their own scores"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        check_choices("bss", params, {"scheduler": SCHEDULERS})
        check_non_negative("bss", params, ("multimodal_weight", "unimodal_weight"))
        if not 0.0 < params.lambda0 <= 1.0:
            raise ConfigError(f"bss: lambda0 must be in (0, 1], got {params.lambda0}")
        if params.t_grow < 1:
            raise ConfigError(f"bss: t_grow must be >= 1 epoch, got {params.t_grow}")

    def build(self, ctx: BuildContext) -> nn.Module:
        return UnimodalHeads(ctx.model(), ctx.spec.modalities, ctx.spec.num_classes)

    def objective(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Tensor, dict]:
        """Per sample: w_mm CE(f(z)) + w_u sum_m CE(h_m(z_m)) (B,), the fused CE (B,) and the unimodal
        logits {m: (B, K)}."""
        params, per_sample = state.params, state.task.per_sample_loss
        features = model.encode(batch)
        unimodal = model.unimodal_outputs(features)
        fused = per_sample(model.fuse(features), batch.labels)
        unimodal_sum = sum(per_sample(out, batch.labels) for out in unimodal.values())
        return params.multimodal_weight * fused + params.unimodal_weight * unimodal_sum, fused, unimodal

    @torch.no_grad()
    def measure(self, model: nn.Module, state: TrainState) -> tuple[Tensor, Tensor]:
        """Every training sample's agreement s_i and objective l_i, model in train mode as the official
        `model_evaluate` (dropout on, no update): two (N,) float64 tensors in row order."""
        model.train()
        similarity, loss = [], []
        for batch in state.batches("train"):  # row order
            per_sample, _, unimodal = self.objective(model, batch, state)
            probs = [unimodal[m].float().softmax(-1) for m in state.cfg.modalities]
            similarity.append(mean_pairwise_cosine(probs).cpu())
            loss.append(per_sample.double().cpu())
        return torch.cat(similarity), torch.cat(loss)

    def epoch_batches(self, model: nn.Module, state: TrainState, default: list[Tensor]) -> Sequence[Tensor]:
        params, logs = state.params, {}
        if params.scheduler == "heuristic":
            if ORDER_KEY not in state.scratch:  # measured once, before the first epoch (official `epoch in [0]`)
                similarity, loss = self.measure(model, state)
                state.scratch[ORDER_KEY] = easy_to_hard(difficulty(similarity, loss))
                logs = measured_logs(similarity, loss)
            order = state.scratch[ORDER_KEY]
            pool = order[:int(len(order) * pool_fraction(state.epoch, params.lambda0, params.t_grow))]
            if not len(pool):
                pool = order[:1]  # ours: at least the easiest sample
            order = pool[torch.randperm(len(pool), generator=state.epoch_generator())]
        else:
            similarity, loss = self.measure(model, state)
            probs = sampling_weights(similarity, loss)
            order = torch.multinomial(probs, len(probs), replacement=False, generator=state.epoch_generator())
            logs = measured_logs(similarity, loss)
        batches = cut(order, state.cfg.batch_size, params.drop_last)
        logs["bss_fraction"] = sum(len(b) for b in batches) / max(sum(len(rows) for rows in default), 1)
        state.scratch[LOGS_KEY] = logs
        return batches

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        per_sample, fused, _ = self.objective(model, batch, state)
        return per_sample.mean(), {"loss_multimodal": float(fused.detach().mean())}

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        return state.scratch.pop(LOGS_KEY, {})


def measured_logs(similarity: Tensor, loss: Tensor) -> dict[str, float]:
    """The measurement's means: agreement s and objective l over the training set."""
    return {"bss_agreement": float(similarity.mean()), "bss_sample_loss": float(loss.mean())}
