"""MBSD, as BalanceBenchmark names and implements it (GeWu-Lab/BalanceBenchmark,
balancemm/trainer/MBSD_trainer.py; docs/methods/mbsd.md). No paper or official code for the name was found;
an earlier bimodal script with the same step (a KS audio-visual `train_epoch` in the public corpus) agrees
with the trainer's two-modality branch.

Per-modality logits o_m are the linear fusion head's blocks with a share of the bias,
o_m = z_m W_m^T + b / n (with gradient), p_m = softmax(o_m), p_m,y the true class's probability. For each
pair of modalities (i, j) and sample s:

    w_s  = max(p_i,y, p_j,y) - min(p_i,y, p_j,y)   if either modality's prediction is right, else 0
    RS_s = (1/K) sum_k (o_i,sk - o_j,sk)^2          (the trainer's two-modality branch: logits)
    KL_s = p_w (log p_w - p_s),  p_s = max(p_i,y, p_j,y), p_w = min(...)  (F.kl_div(p_s, p_w): p_s read as
                                                                           a log-probability)
    L_RS = sum_s w_s RS_s / B,  L_KL = sum_s w_s KL_s / B      (each the mean over the pairs)

Inside the modulation window the objective is CE(fused) + sum_m CE(o_m) + L_RS + L_KL; outside it,
CE(fused). w, p_s and p_w keep their gradients, as the trainer's in-place writes into a fresh tensor do.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import RunConfig
from bench.methods.base import Logs, Method, ThesisSettings, TrainState, check_choices, register
from bench.methods.inforeg import half_bias_logits

BALANCEBENCHMARK = "BalanceBenchmark's implementation (no paper or official code found)"


@dataclass(frozen=True)
class MBSDParams:
    # "logits": RS on the logits (the trainer's two-modality branch); "probs": on the softmax probabilities
    # (the trainer's three-modality branch)
    rs_on: str = "logits"
    weight_grad: bool = True  # w keeps its gradient (the trainer); False: w is a constant (ours)


# -- the formulas --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairTerms:
    weight: Tensor  # (B,) w_s
    rs: Tensor  # (B,) RS_s
    kl: Tensor  # (B,) KL_s


def pair_terms(first: Tensor, second: Tensor, labels: Tensor, right: Tensor, rs_on: str = "logits") -> PairTerms:
    """w, RS and KL of one modality pair per sample; first, second: (B, K) logits; right: (B,) bool, either
    modality's prediction is right."""
    p_first, p_second = first.softmax(dim=1), second.softmax(dim=1)  # (B, K)
    index = labels.long().unsqueeze(1)
    true_first, true_second = p_first.gather(1, index).squeeze(1), p_second.gather(1, index).squeeze(1)  # (B,)
    strong, weak = torch.maximum(true_first, true_second), torch.minimum(true_first, true_second)
    weight = torch.where(right, strong - weak, torch.zeros_like(strong))
    a, b = (first, second) if rs_on == "logits" else (p_first, p_second)
    rs = ((a - b) ** 2).sum(dim=1) / first.shape[1]
    kl = torch.xlogy(weak, weak) - weak * strong  # p_w log p_w - p_w p_s, 0 log 0 = 0 (as kl_div)
    return PairTerms(weight, rs, kl)


def weighted_means(terms: Sequence[PairTerms], weight_grad: bool = True) -> tuple[Tensor, Tensor]:
    """(L_RS, L_KL): per pair sum_s w_s term_s / B, then the mean over the pairs."""
    rs, kl = [], []
    for t in terms:
        w = t.weight if weight_grad else t.weight.detach()
        batch = w.shape[0]
        rs.append((w * t.rs).sum() / batch)
        kl.append((w * t.kl).sum() / batch)
    return sum(rs) / len(rs), sum(kl) / len(kl)


# -- the method -----------------------------------------------------------------------------------------------


@register
class MBSD(Method):
    name = "mbsd"
    Params = MBSDParams
    description = "unimodal losses plus a confidence-gap-weighted logit distance and KL between the modalities"
    display_name = "MBSD"
    table_order = 274
    requires = frozenset({"features", "linear_head"})
    provenance = BALANCEBENCHMARK
    # BalanceBenchmark's configs/trainer_config.yaml: modulation from epoch 0 to 80, i.e. every epoch
    thesis = ThesisSettings(window=(0, -1))

    no_dev_set = "measures nothing on held-out data"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        check_choices("mbsd", params, {"rs_on": ("logits", "probs")})

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        task, labels = state.task, batch.labels
        features = model.encode(batch)  # m -> (B, D_m)
        fused = task.loss(model.fuse(features), labels)
        if not state.in_window:
            return fused, {"in_window": 0.0}
        params: MBSDParams = state.params
        logits = half_bias_logits(model, features)  # m -> (B, K), with gradient
        unimodal = {m: task.loss(o, labels) for m, o in logits.items()}
        hits = {m: task.hits(o.detach(), labels) for m, o in logits.items()}
        terms = [pair_terms(logits[i], logits[j], labels, hits[i] | hits[j], params.rs_on)
                 for i, j in itertools.combinations(logits, 2)]
        rs, kl = weighted_means(terms, params.weight_grad)
        logs: Logs = {"in_window": 1.0, "loss_rs": float(rs.detach()), "loss_kl": float(kl.detach()),
                      "weight_mean": float(torch.stack([t.weight.detach().mean() for t in terms]).mean())}
        logs.update({f"loss_unimodal/{m}": float(v.detach()) for m, v in unimodal.items()})
        return fused + sum(unimodal.values()) + rs + kl, logs
