"""AMCo, Adaptive Mask Co-optimization, as BalanceBenchmark implements it (paper: Y. Zhou, X. Liang, S. Zheng,
H. Xuan, T. Kumada, "Adaptive Mask Co-optimization for Modal Dependence in Multimodal Learning", ICASSP 2023;
no official code found; GeWu-Lab/BalanceBenchmark balancemm/trainer/AMCo_trainer.py and
balancemm/models/avclassify_model.py `BaseClassifierAMCoModel`; docs/methods/amco.md).

The run's linear fusion head splits into per-modality logits o_m = z_m W_m^T + b / n; the prediction is
f = L*(sum_m o_m), L* a K x K linear layer on top. Inside the modulation window, per batch j of epoch e:

    l_j = j * e * rate          (rate 0.1: the trainer's `l_t += current_epoch / 10`, reset every epoch)
    p_j = sin(pi/2 * min(eps, l_j) / eps),  N = int(p_j K)        (eps 0.3)
    mask: K - N ones and N zeros in a random order, one row shared by the batch
    o_m <- o_m * mask for every dependent modality m;  f = L*(sum_m o_m)
    L = CE(f, y) + sum_m CE(o_m, y)            (o_m masked, as the trainer)
    dependent for the next batch: m whose block of softmax([o_1 | ... | o_n]) (over all n K entries)
        holds more than sigma (0.5) of the batch's mass: sum over the block / B > sigma

Nothing is dependent at an epoch's start. Outside the window: CE(f, y), no mask, no unimodal losses.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.config import ConfigError, RunConfig
from bench.methods.base import BuildContext, Logs, Method, ThesisSettings, TrainState, register
from bench.methods.inforeg import half_bias_logits
from bench.methods.mbsd import BALANCEBENCHMARK

DEPENDENT_KEY = "amco/dependent"  # modalities found dependent by the previous batch of this epoch
PROGRESS_KEY = "amco/progress"  # (epoch, batches seen this epoch)


@dataclass(frozen=True)
class AMCoParams:
    sigma: float = 0.5  # share of the softmax mass above which a modality is dependent (trainer config)
    eps: float = 0.3  # the progress at which the mask covers every class (trainer config)
    rate: float = 0.1  # l grows by epoch * rate per batch (the trainer's current_epoch / 10)
    # True: the unimodal losses read the masked logits (the trainer); False: the unmasked ones (ours)
    unimodal_masked: bool = True


# -- the formulas ------------------------------------------------------------------------------------------


def mask_fraction(progress: float, eps: float) -> float:
    """p = sin(pi/2 * min(eps, l) / eps)."""
    return math.sin(math.pi / 2 * min(eps, progress) / eps)


def masked_classes(fraction: float, num_classes: int) -> int:
    """N = int(p K), the classes the mask zeroes."""
    return int(fraction * num_classes)


def class_mask(num_classes: int, zeroed: int, generator: torch.Generator | None = None) -> Tensor:
    """(K,) float: K - N ones and N zeros in a random order."""
    mask = torch.ones(num_classes)
    mask[num_classes - zeroed:] = 0.0
    return mask[torch.randperm(num_classes, generator=generator)]


def dependent_modalities(logits: Mapping[str, Tensor], sigma: float) -> dict[str, float]:
    """Each modality's share of the batch's softmax mass over the concatenated logits [o_1 | ... | o_n]
    (B, n K): sum over its block / B; dependent where the share exceeds sigma."""
    joint = torch.cat([o.detach() for o in logits.values()], dim=1).softmax(dim=1)  # (B, n K)
    batch = joint.shape[0]
    shares, start = {}, 0
    for m, o in logits.items():
        shares[m] = float(joint[:, start:start + o.shape[1]].sum()) / batch
        start += o.shape[1]
    return shares


# -- the model ----------------------------------------------------------------------------------------------


class AMCoModel(nn.Module):
    """The run model and L* = Linear(K -> K) on its summed per-modality logits; forward gives L*(fused)."""

    def __init__(self, model: nn.Module, output_size: int) -> None:
        super().__init__()
        self.model = model
        self.linear_star = nn.Linear(output_size, output_size)

    @property
    def encoders(self) -> nn.ModuleDict:
        return self.model.encoders

    @property
    def head(self) -> nn.Linear:
        return self.model.head

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.model.modalities

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        return self.model.encode(batch)

    def head_slices(self) -> dict[str, slice]:
        return self.model.head_slices()

    def predict(self, logits: Mapping[str, Tensor]) -> Tensor:
        """L*(sum_m o_m): (B, K)."""
        return self.linear_star(sum(logits.values()))

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        logits = half_bias_logits(self.model, features)
        n = len(logits)
        weight, bias = self.linear_star.weight.detach(), self.linear_star.bias.detach()
        return ModelOutput(logits=self.predict(logits), features=features,  # L* affine: parts sum to f
                           modality_logits={m: o.detach() @ weight.T + bias / n for m, o in logits.items()})


# -- the method ---------------------------------------------------------------------------------------------


@register
class AMCo(Method):
    name = "amco"
    Params = AMCoParams
    description = "a growing random class mask on the dependent modality's logits, with unimodal losses"
    display_name = "AMCo"
    table_order = 273
    requires = frozenset({"features", "linear_head"})
    provenance = BALANCEBENCHMARK
    # BalanceBenchmark's configs/trainer_config.yaml: modulation from epoch 0 to 80, i.e. every epoch
    thesis = ThesisSettings(window=(0, -1))

    no_dev_set = "measures nothing on held-out data"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not 0.0 < params.sigma < 1.0 or params.eps <= 0 or params.rate < 0:
            raise ConfigError("amco: sigma must be in (0, 1), eps > 0 and rate >= 0")

    def build(self, ctx: BuildContext) -> nn.Module:
        return AMCoModel(ctx.model(), ctx.spec.num_classes)

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        state.scratch[DEPENDENT_KEY] = frozenset()  # the trainer's per-epoch dependent_modality, all False
        state.scratch[PROGRESS_KEY] = 0
        return {}

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: AMCoParams = state.params
        task, labels = state.task, batch.labels
        logits = half_bias_logits(model.model, model.encode(batch))  # m -> (B, K)
        if not state.in_window:
            return task.loss(model.predict(logits), labels), {"in_window": 0.0}
        seen = state.scratch.get(PROGRESS_KEY, 0)
        state.scratch[PROGRESS_KEY] = seen + 1
        fraction = mask_fraction(seen * state.epoch * params.rate, params.eps)
        num_classes = next(iter(logits.values())).shape[1]
        mask = class_mask(num_classes, masked_classes(fraction, num_classes), state.generator)
        dependent: frozenset[str] = state.scratch.get(DEPENDENT_KEY, frozenset())
        masked = {m: o * mask.to(o.device) if m in dependent else o for m, o in logits.items()}
        unimodal_in = masked if params.unimodal_masked else logits
        unimodal = {m: task.loss(o, labels) for m, o in unimodal_in.items()}
        shares = dependent_modalities(masked, params.sigma)
        state.scratch[DEPENDENT_KEY] = frozenset(m for m, s in shares.items() if s > params.sigma)
        logs: Logs = {"in_window": 1.0, "mask_fraction": fraction}
        logs.update({f"dependent/{m}": float(m in dependent) for m in logits})
        logs.update({f"share/{m}": s for m, s in shares.items()})
        return task.loss(model.predict(masked), labels) + sum(unimodal.values()), logs
