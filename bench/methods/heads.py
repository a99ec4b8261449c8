"""One unimodal head per modality on top of the run's model: the wrapper every method that trains or
reads per-modality predictions uses (MMPareto, G-Blend, CGGM, MLA, PMR, ... and a plugin method).

The heads read the model's features (`model.encode(batch)` -> {m: z_m (B, D_m)}), sized by
`model.feature_dim(m)` (the "features" capability), so they fit any model that offers it, whatever its
encoders are. The wrapper's forward is the run model's own: validation, test and checkpoint selection
see the model the method trains, never the heads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput


def feature_widths(model: nn.Module, modalities: Sequence[str]) -> dict[str, int]:
    """D_m of each modality's features, as the model states them (`feature_dim`)."""
    return {m: int(model.feature_dim(m)) for m in modalities}


class ModelWrapper(nn.Module):
    """A module around the run's model (`self.model`), whose forward is the run model's own unless a subclass
    says otherwise. Attributes it does not have itself (encoders, encode, fuse, encoder_parameters,
    feature_dim, head, ...) are the run model's, so every capability of that model stays available."""

    def forward(self, batch: Batch) -> ModelOutput:
        return self.model(batch)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "model":
                raise
            return getattr(super().__getattr__("model"), name)


class UnimodalHeads(ModelWrapper):
    """The run's model and a head per modality, Linear(D_m -> output_size) unless `make_head` says
    otherwise; forward is the run model's own (see ModelWrapper).
    """

    def __init__(self, model: nn.Module, modalities: Sequence[str], output_size: int,
                 make_head: Any = None) -> None:
        super().__init__()
        self.model = model
        build = make_head or (lambda width, out: nn.Linear(width, out))
        widths = feature_widths(model, modalities)
        self.unimodal_heads = nn.ModuleDict({m: build(width, output_size) for m, width in widths.items()})

    def unimodal_outputs(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each head on its modality's features: {m: (B, output_size)}."""
        return {m: self.unimodal_heads[m](z) for m, z in features.items()}


def shared_head_outputs(model: nn.Module, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Each modality's output through the run model's own fusion head, the other modalities' features
    zeroed: {m: fuse({m: z_m, n != m: 0})}, (B, output_size) each. With a linear head on concatenated
    features this is W_m z_m + b, the "_AUXI" fusion modules of shicaiwei123's ICCV 2025 code (ARL, DGL).
    """
    return {m: model.fuse({n: z if n == m else torch.zeros_like(z) for n, z in features.items()})
            for m in features}
