"""`late_fusion`, the thesis's model (methods.md "Shared model"): LSTM encoders, late concatenation,
one linear head, half-bias per-modality outputs. Table 6.1's sizes are its parameters' values in the
recipe table (bench/recipes.toml, [<dataset>.models.late_fusion])."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.config import RunConfig
from bench.models.base import EncoderSize, Model, ModelSpec, register
from bench.recipes import recipe

# A modality other than text, audio and vision (a dataset's own name, e.g. "physio") has no size parameter:
# its encoder takes this size (ours: the thesis's vision size, the middle of table 6.1).
OTHER_MODALITY_SIZE = EncoderSize(32, 32)


@dataclass(frozen=True)
class LateFusionParams:
    """LSTM hidden width and encoder output width per modality (table 6.1's values filled in by default)."""

    text_hidden: int = 0
    text_out: int = 0
    audio_hidden: int = 0
    audio_out: int = 0
    vision_hidden: int = 0
    vision_out: int = 0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if int(getattr(self, f.name)) < 1:
                raise ValueError(f"{f.name} must be >= 1, got {getattr(self, f.name)}")


def table_sizes(recipe_name: str) -> dict[str, EncoderSize]:
    """Table 6.1's encoder sizes for a dataset recipe ("mosi", "mosei"; others the generic block)."""
    values = recipe(recipe_name).model("late_fusion")
    return {m: EncoderSize(int(values[f"{m}_hidden"]), int(values[f"{m}_out"])) for m in ("text", "audio", "vision")}


# Table 6.1 by dataset, read from the recipe table (kept for code that imports it from bench.models).
ENCODER_SIZES: dict[str, dict[str, EncoderSize]] = {name: table_sizes(name) for name in ("mosi", "mosei")}


def encoder_size(params: Mapping[str, Any], modality: str) -> EncoderSize:
    """A modality's LSTM sizes from the model's parameters (OTHER_MODALITY_SIZE for a name without any)."""
    if f"{modality}_hidden" not in params:
        return OTHER_MODALITY_SIZE
    return EncoderSize(int(params[f"{modality}_hidden"]), int(params[f"{modality}_out"]))


class SequenceEncoder(nn.Module):
    """One-layer LSTM, the hidden state at each sample's true last step, then Linear(hidden -> out).

    The LSTM runs over the batch trimmed to its longest true length and the state is gathered at
    each sample's own last step: an LSTM is causal, so the padded steps after it never reach that
    state (the same value as packing, up to float rounding), and the unpacked call takes PyTorch's
    fused CPU kernel, several times faster than a packed sequence for the narrow audio/vision inputs.
    """

    def __init__(self, input_dim: int, size: EncoderSize) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_dim, size.hidden, num_layers=1, batch_first=True)
        self.proj = nn.Linear(size.hidden, size.out)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        # x: (B, T, D); lengths: (B,) int64, 1 <= length <= T
        steps = int(lengths.max())
        outputs, _ = self.lstm(x[:, :steps])  # (B, steps, hidden)
        last = (lengths.to(x.device) - 1).clamp(min=0)  # (B,)
        final = outputs[torch.arange(x.shape[0], device=x.device), last]  # (B, hidden)
        return self.proj(final)  # (B, out)

    def forward_zeros(self, lengths: Tensor) -> Tensor:
        """The encoding of an all-zero input of each true length: (B, out).

        It depends on the length only, so one zero sequence serves the whole batch: the LSTM's state
        after L steps of zeros is gathered for every sample's L (what AGM's zeroed passes need).
        """
        steps = int(lengths.max())
        weight = self.lstm.weight_ih_l0
        zeros = torch.zeros(1, steps, self.lstm.input_size, dtype=weight.dtype, device=weight.device)
        outputs, _ = self.lstm(zeros)  # (1, steps, hidden)
        last = (lengths.to(weight.device) - 1).clamp(min=0)  # (B,)
        return self.proj(outputs[0, last])  # (B, out)


class LateFusionModel(nn.Module):
    """Encoders per modality, concatenated, one linear head; also the half-bias per-modality logits."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.modalities = spec.modalities
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(spec.input_dim(m), spec.size(m)) for m in spec.modalities}
        )
        self.head = nn.Linear(sum(spec.size(m).out for m in spec.modalities), spec.num_classes)

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """z_m for every modality: (B, out_m)."""
        return {m: self.encoders[m](batch.inputs[m], batch.lengths[m]) for m in self.modalities}

    def feature_dim(self, modality: str) -> int:
        """D_m, the width of z_m."""
        return self.spec.size(modality).out

    def encode_zeros(self, batch: Batch) -> dict[str, Tensor]:
        """z_m of all-zero raw inputs with the batch's true lengths: (B, out_m) per modality."""
        return {m: self.encoders[m].forward_zeros(batch.lengths[m]) for m in self.modalities}

    def head_slices(self) -> dict[str, slice]:
        """Columns of the head weight W that belong to each modality: W = [W_m1 | W_m2 | ...]."""
        slices, start = {}, 0
        for m in self.modalities:
            width = self.spec.size(m).out
            slices[m] = slice(start, start + width)
            start += width
        return slices

    def modality_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """o_m = z_m W_m^T + b / n: they sum to the fused logits. Detached (never back-propagated)."""
        n = len(self.modalities)
        weight, bias = self.head.weight.detach(), self.head.bias.detach()
        return {
            m: features[m].detach() @ weight[:, cols].T + bias / n for m, cols in self.head_slices().items()
        }

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """Fused logits (B, K) from the concatenated features."""
        return self.head(torch.cat([features[m] for m in self.modalities], dim=1))

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        return ModelOutput(
            logits=self.fuse(features), features=features, modality_logits=self.modality_logits(features)
        )

    def encoder_parameters(self, modality: str, include_biases: bool = False) -> list[nn.Parameter]:
        """'Encoder parameters of m' (methods.md): tensors with >= 2 dims unless biases are included."""
        return [p for p in self.encoders[modality].parameters() if include_biases or p.dim() >= 2]


@register
class LateFusion(Model):
    name = "late_fusion"
    Params = LateFusionParams
    description = "LSTM encoder per modality, late concatenation, one linear head (thesis table 6.1)"
    capabilities = frozenset({"encoders", "features", "modality_outputs", "linear_head", "zero_inputs",
                              "encoder_sizes", "single_modality"})

    @classmethod
    def spec(cls, cfg: RunConfig, feature_dims: Mapping[str, int], output_size: int) -> ModelSpec:
        base = super().spec(cfg, feature_dims, output_size)
        params = dict(cfg.model_params)
        sizes = tuple((m, encoder_size(params, m)) for m in cfg.modalities)
        return dataclasses.replace(base, sizes=sizes)

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        return LateFusionModel(spec)
