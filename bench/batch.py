"""What flows between the data, the models and the methods: a mini-batch and a model's output."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Batch:
    """One mini-batch on the training device."""

    inputs: dict[str, Tensor]  # modality -> (B, T_m, D_m) float32, zero-padded
    lengths: dict[str, Tensor]  # modality -> (B,) int64 true lengths, on the CPU (for packing)
    labels: Tensor  # (B,) the task's targets: int64 class indices, or float32 scores (regression)
    index: Tensor  # (B,) int64 rows of the split this batch came from

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def with_zeroed(self, modalities: tuple[str, ...]) -> Batch:
        """A copy whose raw inputs of `modalities` are all zeros (AGM's coalition passes)."""
        inputs = {m: (torch.zeros_like(x) if m in modalities else x) for m, x in self.inputs.items()}
        return Batch(inputs=inputs, lengths=self.lengths, labels=self.labels, index=self.index)


@dataclass
class ModelOutput:
    """What every model returns."""

    logits: Tensor  # (B, K) the prediction's logits (for the ensemble: log of mean probabilities)
    features: dict[str, Tensor] = field(default_factory=dict)  # modality -> (B, out_m) encoder output z_m
    # modality -> (B, K) per-modality logits (half-bias o_m for late fusion), detached from the graph
    modality_logits: dict[str, Tensor] = field(default_factory=dict)
