"""`cpsl`, the model of the Conflict-aware Penalty + Statistical Loss framework (Dai, Liang, Mai, arXiv
2605.28575), reconstructed from the paper's description (its abstract only; docs/methods/cpsl.md). The abstract
names three parts: adaptive modality encoding, gated cross-modal fusion, unimodal auxiliary heads. Every form
and size below is ours.

    adaptive encoding   per modality m, per time step: e_t = tanh(W_m x_t) (D); attention pooling over the
                        true length: a_t = softmax_t(v_m . e_t) over t < length; z_m = s_m * sum_t a_t e_t,
                        s_m a learned per-modality scale (starts at 1)                           z_m (B, D)
    gated fusion        c = [z_1; ...; z_M] (B, M D); g = sigmoid(W_g c) (B, M D);
                        h = tanh(W_f (g * c)) (B, D); fused logits = head(h) (B, K)
    unimodal heads      modality m's auxiliary output passes through the same gate and fusion with every
                        other modality's z zeroed: h_m = tanh(W_f (g(c_m) * c_m)), c_m = [0; z_m; 0];
                        logits_m = aux_m(h_m) (B, K)

The gate and fusion layer (W_g, W_f) are the *shared* parameters: every modality's auxiliary loss reaches
them, so their per-modality gradients are what the method's conflict-aware penalty compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.models.base import Model, ModelSpec, add_capability, padding_mask, register

CPSL_PARTS = "cpsl_parts"
add_capability(
    CPSL_PARTS,
    "model.parts(batch) -> CPSLParts: features z_m, fused logits and per-modality auxiliary logits through "
    "the shared gated fusion; model.shared_parameters(): the gate and fusion layer's parameters",
)


@dataclass(frozen=True)
class CPSLModelParams:
    """The width D of every modality's encoding and of the fused representation."""

    hidden: int = 32

    def __post_init__(self) -> None:
        if int(self.hidden) < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")


@dataclass
class CPSLParts:
    """One forward pass: z_m (B, D) per modality, the fused logits (B, K), the auxiliary logits (B, K) per m."""

    features: dict[str, Tensor]
    fused: Tensor
    unimodal: dict[str, Tensor]


def length_mask(steps: int, lengths: Tensor, device: torch.device) -> Tensor:
    """(B, T) True at each sample's first `length` steps (at least the first: a zero length keeps step 0)."""
    return ~padding_mask(lengths, steps, device)


def masked_attention_pool(encoded: Tensor, scores: Tensor, keep: Tensor) -> Tensor:
    """sum_t softmax_t(scores) encoded_t over the kept steps. encoded (B, T, D), scores (B, T), keep (B, T)."""
    weights = torch.softmax(scores.masked_fill(~keep, float("-inf")), dim=1)  # (B, T)
    return (weights[:, :, None] * encoded).sum(dim=1)  # (B, D)


class AdaptiveEncoder(nn.Module):
    """Per-step Linear+tanh, attention pooling over the true length, a learned scale: (B, T, D_in) -> (B, D)."""

    def __init__(self, input_dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, hidden)
        self.score = nn.Linear(hidden, 1, bias=False)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        encoded = torch.tanh(self.proj(x))  # (B, T, D)
        keep = length_mask(x.shape[1], lengths, x.device)  # (B, T)
        return self.scale * masked_attention_pool(encoded, self.score(encoded).squeeze(2), keep)


class CPSLNet(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        width = int(CPSLModelParams(**dict(spec.params)).hidden)
        self.modalities = spec.modalities
        self.width = width
        self.encoders = nn.ModuleDict({m: AdaptiveEncoder(spec.input_dim(m), width) for m in spec.modalities})
        joint = width * len(spec.modalities)
        self.gate = nn.Linear(joint, joint)
        self.fusion = nn.Linear(joint, width)
        self.head = nn.Linear(width, spec.num_classes)
        self.aux_heads = nn.ModuleDict({m: nn.Linear(width, spec.num_classes) for m in spec.modalities})

    def feature_dim(self, modality: str) -> int:
        """D, the width of every z_m."""
        return int(self.width)

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """z_m (B, D) per modality."""
        return {m: self.encoders[m](batch.inputs[m], batch.lengths[m]) for m in self.modalities}

    def fused_representation(self, features: Mapping[str, Tensor]) -> Tensor:
        """h = tanh(W_f (sigmoid(W_g c) * c)), c the concatenated features; (B, D)."""
        joint = torch.cat([features[m] for m in self.modalities], dim=1)  # (B, M D)
        return torch.tanh(self.fusion(torch.sigmoid(self.gate(joint)) * joint))

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """Fused logits (B, K)."""
        return self.head(self.fused_representation(features))

    def unimodal(self, features: Mapping[str, Tensor], modality: str) -> Tensor:
        """Modality m's auxiliary logits (B, K): the shared fusion with every other z zeroed, then aux_m."""
        alone = {m: (z if m == modality else torch.zeros_like(z)) for m, z in features.items()}
        return self.aux_heads[modality](self.fused_representation(alone))

    def parts(self, batch: Batch) -> CPSLParts:
        features = self.encode(batch)
        return CPSLParts(features, self.fuse(features), {m: self.unimodal(features, m) for m in self.modalities})

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        return ModelOutput(logits=self.fuse(features), features=features)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The gate and fusion layer: what every modality's auxiliary loss and the fused loss reach."""
        return [*self.gate.parameters(), *self.fusion.parameters()]

    def encoder_parameters(self, modality: str, include_biases: bool = False) -> list[nn.Parameter]:
        """The encoder's weight matrices (and its biases and scale when asked)."""
        return [p for p in self.encoders[modality].parameters() if include_biases or p.dim() >= 2]


@register
class CPSLModel(Model):
    name = "cpsl"
    Params = CPSLModelParams
    description = ("attention-pooled Linear+tanh encoders with a learned per-modality scale, sigmoid-gated "
                   "fusion, a fused head and unimodal auxiliary heads through the shared fusion")
    capabilities = frozenset({"encoders", "features", CPSL_PARTS})
    min_modalities = 2  # cross-modal fusion: a second modality to gate against

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        return CPSLNet(spec)
