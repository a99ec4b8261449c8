"""`s2lif`, the model of "Learning in Order!" (S2LIF, ACM MM 2024), reconstructed from the paper's text
(docs/methods/s2lif.md; no public code). Every size and form below is ours.

Each modality m is mean-pooled over its true length and encoded by Linear+tanh into h_m (B, D). A learnable
relaxed-binary mask per feature then selects x_m^c = g_m * h_m. The order says which masks are free
parameters and which are functions of features selected before them:

    chain                 the run's modalities in the order's priority: text_first (text, vision, audio),
                          video_first (vision, text, audio); joint: no chain
    first of the chain    g = gate(a), a (D,) a learnable logit per feature, shared by every sample
    later modality k      g_k = gate(MLP_k([x_j^c for j before k])), one logit vector per sample (B, D);
                          the conditioning input is detached (ours): a later stage cannot reshape an
                          earlier selection, it only reads it ("in order")
    joint                 every mask is its own free logit vector (no conditioning)

    gate "sigmoid":       g = sigmoid(a / temperature)
    gate "hard_concrete": (Louizos et al. 2018) training with noise u ~ U(0, 1):
                          s = sigmoid((log u - log(1 - u) + a) / temperature),
                          g = clamp(s (zeta - gamma) + gamma, 0, 1);
                          without noise (eval, or no generator): g = clamp(sigmoid(a) (zeta - gamma) + gamma, 0, 1)

The fused prediction is one Linear over [x_m^c of every modality]; each modality also has a stage head over
its own x_m^c, whose task loss is the method's L_m (bench/methods/s2lif.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.config import ConfigError, RunConfig
from bench.models.base import Model, ModelSpec, add_capability, register

FEATURE_MASKS = "feature_masks"
add_capability(
    FEATURE_MASKS,
    "model.select(batch, generator) -> Selection: per-modality relaxed-binary feature masks (gates, logits), "
    "selected features, stage logits per modality and the fused logits; model.mask_form, model.temperature",
)

ORDERS = ("text_first", "video_first", "joint")
MASK_FORMS = ("sigmoid", "hard_concrete")
PRIORITY = {"text_first": ("text", "vision", "audio"), "video_first": ("vision", "text", "audio")}
HC_GAMMA, HC_ZETA = -0.1, 1.1  # the hard-concrete stretch interval (Louizos et al. 2018)


# -- the gates (pure functions) ---------------------------------------------------------------------


def sigmoid_gate(logits: Tensor, temperature: float) -> Tensor:
    """g = sigmoid(logits / temperature), any shape."""
    return torch.sigmoid(logits / temperature)


def hard_concrete_gate(logits: Tensor, temperature: float, noise: Tensor | None = None) -> Tensor:
    """The stretched, clamped hard-concrete gate; `noise` u in (0, 1) of logits' shape, or None (no noise)."""
    if noise is None:
        s = torch.sigmoid(logits)
    else:
        s = torch.sigmoid((torch.log(noise) - torch.log1p(-noise) + logits) / temperature)
    return (s * (HC_ZETA - HC_GAMMA) + HC_GAMMA).clamp(0.0, 1.0)


def expected_l0(logits: Tensor, temperature: float) -> Tensor:
    """P(hard-concrete gate > 0) = sigmoid(logits - temperature * log(-gamma / zeta)), elementwise."""
    return torch.sigmoid(logits - temperature * math.log(-HC_GAMMA / HC_ZETA))


def mask_penalty(logits: Tensor, gates: Tensor, form: str, temperature: float) -> Tensor:
    """The sparsity term of one mask: the mean L1 of the sigmoid gates (they are >= 0), or the mean
    expected L0 of the hard-concrete gates; a mean over samples and features, so any width weighs the same."""
    if form == "sigmoid":
        return gates.abs().mean()
    return expected_l0(logits, temperature).mean()


def mask_chain(order: str, modalities: tuple[str, ...]) -> tuple[str, ...]:
    """The run's modalities in the order they are selected; () for "joint" (no conditioning)."""
    if order == "joint":
        return ()
    return tuple(m for m in PRIORITY[order] if m in modalities)


def conditioning_sources(order: str, modalities: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """modality -> the modalities whose selected features its mask reads (() for a free mask)."""
    chain = mask_chain(order, modalities)
    if not chain:
        return {m: () for m in modalities}
    return {m: chain[:i] for i, m in enumerate(chain)}


def check_order(order: str, modalities: tuple[str, ...]) -> None:
    """ConfigError when an order does not apply to the modalities (video_first only reorders text and vision)."""
    if order not in ORDERS:
        raise ConfigError(f"s2lif order must be one of {', '.join(ORDERS)}, got {order!r}")
    if order == "video_first" and not {"text", "vision"} <= set(modalities):
        raise ConfigError(f"s2lif order video_first puts vision before text: it needs both, got "
                          f"{', '.join(modalities)}")


# -- the model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S2LIFModelParams:
    """Feature width D, the conditioning MLP's width, the order, the gate form and temperature, the
    initial mask logit (2: sigmoid 0.88, nearly open), and whether the conditioning input is detached."""

    hidden: int = 32
    cond_hidden: int = 32
    order: str = "text_first"
    mask_form: str = "sigmoid"
    temperature: float = 1.0
    mask_init: float = 2.0
    detach_condition: bool = True

    def __post_init__(self) -> None:
        if int(self.hidden) < 1 or int(self.cond_hidden) < 1:
            raise ValueError(f"hidden and cond_hidden must be >= 1, got {self.hidden}, {self.cond_hidden}")
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")
        if self.mask_form not in MASK_FORMS:
            raise ValueError(f"mask_form must be one of {', '.join(MASK_FORMS)}, got {self.mask_form!r}")
        if not float(self.temperature) > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class Selection:
    """One forward pass: per modality h_m (B, D), mask logits (D,) or (B, D), gates of the same shape,
    selected x_m^c (B, D) and stage logits (B, K); the fused logits (B, K)."""

    encoded: dict[str, Tensor]
    logits: dict[str, Tensor]
    gates: dict[str, Tensor]
    selected: dict[str, Tensor]
    stage_logits: dict[str, Tensor]
    fused: Tensor
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)


def mean_pool(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over each sample's first `length` steps. x: (B, T, D); lengths: (B,). Returns (B, D)."""
    steps = torch.arange(x.shape[1], device=x.device)  # (T,)
    lengths = lengths.to(x.device)
    keep = (steps[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
    return (x * keep[:, :, None]).sum(dim=1) / lengths.clamp(min=1).to(x.dtype)[:, None]


class PooledEncoder(nn.Module):
    """Mean pooling over the true length, then Linear+tanh: (B, T, D_in) -> (B, D)."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(input_dim, hidden), nn.Tanh())

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        return self.proj(mean_pool(x, lengths))


class S2LIFNet(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        params = S2LIFModelParams(**dict(spec.params))
        check_order(params.order, spec.modalities)
        self.modalities = spec.modalities
        self.order = params.order
        self.mask_form = params.mask_form
        self.temperature = float(params.temperature)
        self.detach_condition = bool(params.detach_condition)
        width, init = int(params.hidden), float(params.mask_init)
        self.sources = conditioning_sources(params.order, spec.modalities)
        self.encoders = nn.ModuleDict({m: PooledEncoder(spec.input_dim(m), width) for m in spec.modalities})
        # a free logit vector for each unconditioned mask, an MLP for each conditioned one
        self.mask_logits = nn.ParameterDict({m: nn.Parameter(torch.full((width,), init))
                                             for m in spec.modalities if not self.sources[m]})
        self.conditioners = nn.ModuleDict()
        for m, before in self.sources.items():
            if before:
                net = nn.Sequential(nn.Linear(width * len(before), int(params.cond_hidden)), nn.Tanh(),
                                    nn.Linear(int(params.cond_hidden), width))
                nn.init.constant_(net[2].bias, init)  # starts as open as the free masks
                self.conditioners[m] = net
        self.stage_heads = nn.ModuleDict({m: nn.Linear(width, spec.num_classes) for m in spec.modalities})
        self.head = nn.Linear(width * len(spec.modalities), spec.num_classes)

    def gate(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        """The mask of `logits`; hard-concrete noise only while training with a generator."""
        if self.mask_form == "sigmoid":
            return sigmoid_gate(logits, self.temperature)
        noise = None
        if self.training and generator is not None:
            noise = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device="cpu")
            noise = noise.clamp(1e-6, 1 - 1e-6).to(logits.device)
        return hard_concrete_gate(logits, self.temperature, noise)

    def mask_logits_of(self, modality: str, selected: Mapping[str, Tensor]) -> Tensor:
        """Logits of m's mask: its free vector (D,), or its MLP of the earlier selections (B, D)."""
        before = self.sources[modality]
        if not before:
            return self.mask_logits[modality]
        condition = torch.cat([selected[j] for j in before], dim=1)  # (B, D * len(before))
        if self.detach_condition:
            condition = condition.detach()
        return self.conditioners[modality](condition)

    def select(self, batch: Batch, generator: torch.Generator | None = None,
               encoded: Mapping[str, Tensor] | None = None) -> Selection:
        """Encode (unless `encoded` is given), mask in the order's sequence, predict per stage and fused."""
        h = dict(encoded) if encoded is not None else {
            m: self.encoders[m](batch.inputs[m], batch.lengths[m]) for m in self.modalities}  # m -> (B, D)
        chain = mask_chain(self.order, self.modalities)
        sequence = chain + tuple(m for m in self.modalities if m not in chain)
        logits, gates, selected = {}, {}, {}
        for m in sequence:
            logits[m] = self.mask_logits_of(m, selected)  # (D,) or (B, D)
            gates[m] = self.gate(logits[m], generator)
            selected[m] = gates[m] * h[m]  # (B, D)
        stage = {m: self.stage_heads[m](selected[m]) for m in self.modalities}  # m -> (B, K)
        fused = self.fuse(selected)
        return Selection(h, logits, gates, selected, stage, fused, dict(self.sources))

    def feature_dim(self, modality: str) -> int:
        """D, the width of every z_m."""
        return int(self.encoders[modality].proj[0].out_features)

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """The selected features x_m^c (B, D) (the "features" capability: what the head reads)."""
        return self.select(batch).selected

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """Fused logits (B, K) from the concatenated selected features."""
        return self.head(torch.cat([features[m] for m in self.modalities], dim=1))

    def forward(self, batch: Batch) -> ModelOutput:
        selection = self.select(batch)
        return ModelOutput(logits=selection.fused, features=selection.selected)

    def encoder_parameters(self, modality: str, include_biases: bool = False) -> list[nn.Parameter]:
        """The encoder's weight matrices (and its biases when asked)."""
        return [p for p in self.encoders[modality].parameters() if include_biases or p.dim() >= 2]


@register
class S2LIFModel(Model):
    name = "s2lif"
    Params = S2LIFModelParams
    description = ("mean-pooled Linear+tanh encoders, relaxed-binary feature masks selected in order "
                   "(later masks an MLP of earlier selections), stage heads and one fused linear head")
    capabilities = frozenset({"encoders", "features", FEATURE_MASKS})
    min_modalities = 2  # the order needs a second modality to condition on

    @classmethod
    def spec(cls, cfg: RunConfig, feature_dims: Mapping[str, int], output_size: int) -> ModelSpec:
        check_order(str(dict(cfg.model_params).get("order", "text_first")), cfg.modalities)
        return super().spec(cfg, feature_dims, output_size)

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        return S2LIFNet(spec)


def model_params_with(spec_params: Mapping[str, Any], overrides: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A model's parameter pairs with `overrides` on top (the method's order / mask form / temperature)."""
    merged = {**dict(spec_params), **dict(overrides)}
    return tuple(sorted(merged.items()))
