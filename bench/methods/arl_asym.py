"""ARL, Asymmetric Representation Learning (Wei, Luo and Luo, "Improving Multimodal Learning via Imbalanced
Learning", ICCV 2025; official code shicaiwei123/ICCV2025-ARL: main_arl_variance.py, models/backbone.py
(GradScale, ResNet_weight), models/fusion_modules.py (ConcatFusion_AUXI); docs/methods/arl_asym.md).

Each modality's output goes through the model's own fusion head with the other modalities' features
zeroed, o_m = fuse({m: z_m, others: 0}) (no extra parameters). Per batch, from the detached o_m (B, K):

    c_m = sum_k mean_b |o_m[b, k]|,           c^_m = c_m / sum_n c_n            (output magnitude share)
    H_m = mean_b sum_k -p log(p + 1e-16),     H^_m = max(H_m / sum_n H_n, 0.3)  (p = softmax(o_m); entropy)
    u_m = (1 / H^_m) / sum_n (1 / H^_n)                                          (inverse "variance")
    s_m = (1 - c^_m) u_m                      (two modalities: the other's magnitude share, as the code)
    w_m = softmax_m(T s_m)                                                       (T = 8)

After epoch `start` (epoch > start) the gradient reaching z_m is multiplied by (1 + w_m) (the official
GradScale on the encoder output), and the objective is L_f + gamma sum_m L_m (gamma = 4); up to `start`
it is L_f + sum_m L_m without a scale. L = the task's loss (cross-entropy). Classification only: the
weights need class probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import Logs, Method, ThesisSettings, TrainState, check_choices, register, scale_gradient
from bench.methods.heads import shared_head_outputs

ENTROPY_EPS = 1e-16  # the official log(p + 1e-16)
WEIGHT_SOURCES = ("computed", "released")
RELEASED_WEIGHT = 0.5  # what the released loop leaves in args.audio_weight / visual_weight (see the doc)


@dataclass(frozen=True)
class ARLAsymParams:
    gamma: float = 4.0  # weight of the unimodal losses after `start` (cramed_arl.sh: 4.0)
    softmax_temperature: float = 8.0  # T of the weights' softmax (cramed_arl.sh: 8.0)
    start: int = 5  # the scale and gamma apply from epoch start + 1 on (the official --start 5)
    entropy_floor: float = 0.3  # the official clamp of the normalised entropy
    weight_source: str = "computed"  # "computed": w_m above; "released": 0.5 each, what the released loop uses


# -- the formulas ------------------------------------------------------------------------------------


def output_magnitude(logits: Tensor) -> float:
    """c = sum over classes of the batch mean of |o|: logits (B, K) -> a float."""
    return float(logits.detach().abs().mean(dim=0).sum())


def mean_entropy(logits: Tensor) -> float:
    """H = batch mean of the softmax's entropy, -sum_k p log(p + 1e-16): logits (B, K) -> a float."""
    p = torch.softmax(logits.detach().double(), dim=1)  # (B, K)
    return float((-p * torch.log(p + ENTROPY_EPS)).sum(dim=1).mean())


def normalised(values: Mapping[str, float]) -> dict[str, float]:
    """Each value over their sum (every value equal when the sum is 0)."""
    total = sum(values.values())
    if total <= 0:
        return {m: 1.0 / len(values) for m in values}
    return {m: v / total for m, v in values.items()}


def arl_weights(magnitudes: Mapping[str, float], entropies: Mapping[str, float], temperature: float,
                entropy_floor: float = 0.3) -> dict[str, float]:
    """w_m = softmax_m(T (1 - c^_m) u_m), u = the normalised inverse of the floored entropy shares."""
    shares = normalised(magnitudes)
    inverse = {m: 1.0 / max(h, entropy_floor) for m, h in normalised(entropies).items()}
    certainty = normalised(inverse)
    scores = torch.tensor([temperature * (1.0 - shares[m]) * certainty[m] for m in shares], dtype=torch.float64)
    return dict(zip(shares, torch.softmax(scores, dim=0).tolist(), strict=True))


def modulating(epoch: int, start: int) -> bool:
    """The official `epoch > args.start` (and `current_epoch > start` in GradScale)."""
    return epoch > start


# -- the method -------------------------------------------------------------------------------------


@register
class ARLAsym(Method):
    name = "arl_asym"
    Params = ARLAsymParams
    description = "Asymmetric Representation Learning: encoder gradients scaled by inverse-variance weights"
    display_name = "ARL (asymmetric)"
    table_order = 232
    requires = frozenset({"features"})
    # cramed_arl.sh: gamma 4, T 8; the argparse default start 5.
    thesis = ThesisSettings(params={"gamma": 4.0, "softmax_temperature": 8.0, "start": 5})

    no_dev_set = "weighs modalities on the training batch"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.gamma >= 0 or not params.softmax_temperature >= 0:
            raise ConfigError("arl_asym needs gamma >= 0 and softmax_temperature >= 0")
        if not 0 <= params.entropy_floor < 1:
            raise ConfigError(f"arl_asym entropy_floor must be in [0, 1), got {params.entropy_floor}")
        check_choices("arl_asym", params, {"weight_source": WEIGHT_SOURCES})

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: ARLAsymParams = state.params
        task, labels = state.task, batch.labels
        features = model.encode(batch)  # m -> z_m (B, D_m)
        logs: Logs = {}
        active = modulating(state.epoch, params.start)
        if active:
            with torch.no_grad():
                probe = shared_head_outputs(model, features)  # m -> (B, K), the weights' inputs
            magnitudes = {m: output_magnitude(o) for m, o in probe.items()}
            entropies = {m: mean_entropy(o) for m, o in probe.items()}
            weights = (arl_weights(magnitudes, entropies, params.softmax_temperature, params.entropy_floor)
                       if params.weight_source == "computed" else {m: RELEASED_WEIGHT for m in features})
            features = {m: scale_gradient(z, 1.0 + weights[m]) for m, z in features.items()}
            logs.update({f"weight/{m}": w for m, w in weights.items()})
            logs.update({f"magnitude/{m}": c for m, c in magnitudes.items()})
            logs.update({f"entropy/{m}": h for m, h in entropies.items()})
        fused_loss = task.loss(model.fuse(features), labels)
        unimodal = {m: task.loss(o, labels) for m, o in shared_head_outputs(model, features).items()}
        coefficient = params.gamma if active else 1.0
        logs.update({f"loss_unimodal/{m}": float(value.detach()) for m, value in unimodal.items()})
        logs["loss_multimodal"] = float(fused_loss.detach())
        return fused_loss + coefficient * sum(unimodal.values()), logs
