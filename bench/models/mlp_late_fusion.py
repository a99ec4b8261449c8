"""`mlp_late_fusion`: late_fusion for vector-valued modalities (no time axis), such as mfeat's six views.

Each modality's encoder is a two-layer MLP, Linear(D -> hidden) -> ReLU -> Linear(hidden -> out), over the
mean of the modality's valid steps (a vector view is a sequence of one step, so the mean is the vector).
Everything else is late_fusion's (bench.models.late_fusion.LateFusionModel): concatenation, one linear
head, the half-bias per-modality outputs, so it offers the same capabilities and every method that runs on
late_fusion runs here. `encoder_sizes` gives each modality EncoderSize(hidden, out) of its MLP.

Ours (no paper sets them): hidden 64 and out 32 for every modality, no dropout; `hidden` / `out` are the
model's parameters (part of the run id).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.models.base import EncoderSize, Model, ModelSpec, masked_mean, padding_mask, register
from bench.models.late_fusion import LateFusion, LateFusionModel

MAX_VIEWS = 8  # the most modalities the model builds with (mfeat has six)


@dataclass(frozen=True)
class MLPLateFusionParams:
    """Hidden and output width of every modality's MLP encoder."""

    hidden: int = 64
    out: int = 32

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if int(getattr(self, f.name)) < 1:
                raise ValueError(f"{f.name} must be >= 1, got {getattr(self, f.name)}")


class VectorEncoder(nn.Module):
    """Mean over the valid steps, then Linear(D -> hidden) -> ReLU -> Linear(hidden -> out)."""

    def __init__(self, input_dim: int, size: EncoderSize) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.net = nn.Sequential(nn.Linear(input_dim, size.hidden), nn.ReLU(), nn.Linear(size.hidden, size.out))

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        # x: (B, T, D) (T = 1 for a vector view); lengths: (B,)
        pooled = masked_mean(x, padding_mask(lengths, x.shape[1], x.device))  # (B, D)
        return self.net(pooled)  # (B, out)

    def forward_zeros(self, lengths: Tensor) -> Tensor:
        """The encoding of an all-zero input (the same for every length): (B, out)."""
        weight = self.net[0].weight
        zeros = torch.zeros(lengths.shape[0], self.input_dim, dtype=weight.dtype, device=weight.device)  # (B, D)
        return self.net(zeros)


class MLPLateFusionModel(LateFusionModel):
    """late_fusion's head and per-modality outputs over MLP encoders."""

    def __init__(self, spec: ModelSpec) -> None:
        nn.Module.__init__(self)
        self.spec = spec
        self.modalities = spec.modalities
        self.encoders = nn.ModuleDict({m: VectorEncoder(spec.input_dim(m), spec.size(m)) for m in spec.modalities})
        self.head = nn.Linear(sum(self.feature_dim(m) for m in spec.modalities), spec.num_classes)

    def feature_dim(self, modality: str) -> int:
        """Width of z_m, the modality's encoding."""
        return self.spec.size(modality).out


@register
class MLPLateFusion(Model):
    name = "mlp_late_fusion"
    Params = MLPLateFusionParams
    description = "MLP encoder per vector-valued modality, late concatenation, one linear head"
    capabilities = LateFusion.capabilities
    max_modalities = MAX_VIEWS

    @classmethod
    def spec(cls, cfg: RunConfig, feature_dims: Mapping[str, int], output_size: int) -> ModelSpec:
        base = super().spec(cfg, feature_dims, output_size)
        params: dict[str, Any] = {f.name: f.default for f in dataclasses.fields(MLPLateFusionParams)}
        params.update(dict(cfg.model_params))
        size = EncoderSize(int(params["hidden"]), int(params["out"]))
        return dataclasses.replace(base, sizes=tuple((m, size) for m in cfg.modalities))

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        return MLPLateFusionModel(spec)
