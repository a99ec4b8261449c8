"""Remix, data remixing (Ma, Chen and Deng, ICML 2025, "Improving Multimodal Learning Balance and
Sufficiency through Data Remixing"; official code MatthewMaxy/Remix_ICML2025, train.py (warm-up `train_epoch`,
`kl_divergence`, `remix`, `special_train_epoch`), models/models.py (`AVClassifier.forward`'s modality
masking) and datasets/dataloader.py (`AV_CD_Dataset_Remix`); docs/methods/remix.md).

The run's model gets one unimodal head per modality, h_m = Linear(D_m -> K) on the features z_m.

Warm-up (epochs < warmup, official 10), the loop's own batches:

    L = CE(f(z), y) + alpha * sum_m CE(h_m(z_m), y)                        (official alpha = beta = 0.5)

After warm-up, at the start of every epoch (`epoch_batches`), the model in eval mode scores every
training sample:

    p_m   = softmax(h_m(z_m))                            (K,), clipped to [1e-9, 1]
    KL_m  = sum_k p_m,k log2(p_m,k K)                     KL(p_m || uniform) in bits
    a(i)  = argmin_m KL_m                                 ties to the later modality (official `<`)

The epoch's batches are then the subsets {i : a(i) = m}, each shuffled and cut every batch_size (the
last batch may be short), one subset after the other: the last modality's first (the official code trains
the video subset, then the audio one). A batch of subset m (its rows say which: `batch.index`) trains
with every other modality's features set to zero:

    z'_m = z_m,  z'_n = 0 (n != m)
    L = CE(f(z'), y) + gamma * CE(h_m(z_m), y)                             (official gamma1 = gamma2 = 1)

so the fused head and encoder m learn from modality m alone, and the other encoders get no gradient.
Classification only (the assignment reads class distributions). The fused output stays the run model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig
from bench.methods.base import Batch, BuildContext, Logs, Method, TrainState, check_non_negative, register
from bench.methods.heads import UnimodalHeads

ASSIGNMENT_KEY = "remix/assignment"  # (N,) int64: each training row's modality index, this epoch
SHARE_KEY = "remix/share"  # modality -> fraction of training rows assigned to it, this epoch
SCORE_BATCH = 512
PROB_FLOOR = 1e-9  # the official np.clip(predictions, 1e-9, 1.0)


@dataclass(frozen=True)
class RemixParams:
    warmup: int = 10  # official --warmup: epochs of joint training before remixing
    alpha: float = 0.5  # official --alpha / --beta: each unimodal loss's weight in warm-up
    gamma: float = 1.0  # official --gamma1 / --gamma2: the kept modality's unimodal loss weight after warm-up


# -- the formulas ------------------------------------------------------------------------------------


def kl_to_uniform(probs: Tensor) -> Tensor:
    """KL(p || uniform) in bits per row of (N, K) probabilities, each clipped to [1e-9, 1] first: (N,)."""
    p = probs.double().clamp(PROB_FLOOR, 1.0)
    return (p * torch.log2(p * probs.shape[-1])).sum(dim=-1)


def assign_modalities(kl: Tensor) -> Tensor:
    """Each row's modality index from (N, M) KL values: the least confident one (smallest KL); on a tie the
    later modality, as the official `if KL_audio < KL_video: audio else video`. Returns (N,) int64."""
    last = kl.shape[-1] - 1
    return last - torch.argmin(kl.flip(-1), dim=-1)


def subset_batches(assignment: Tensor, modalities: int, batch_size: int,
                   generator: torch.Generator) -> list[Tensor]:
    """Per modality index, last first: that subset's rows in a seeded shuffle, cut every batch_size."""
    batches = []
    for k in reversed(range(modalities)):
        rows = torch.nonzero(assignment == k).flatten()
        rows = rows[torch.randperm(len(rows), generator=generator)]
        batches += [rows[start:start + batch_size] for start in range(0, len(rows), batch_size)]
    return batches


def keep_only(features: dict[str, Tensor], kept: str) -> dict[str, Tensor]:
    """The features with every modality but `kept` set to zero (the official in-place masking)."""
    return {m: (z if m == kept else torch.zeros_like(z)) for m, z in features.items()}


# -- the method -------------------------------------------------------------------------------------------


@register
class Remix(Method):
    name = "remix"
    Params = RemixParams
    description = "data remixing: each sample trains only its least confident modality, in per-modality batches"
    display_name = "Remix"
    table_order = 221
    tasks = ("classification",)
    requires = frozenset({"features"})

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if cfg.dev_set:
            raise ConfigError("remix assigns every training sample from its own predictions; it has no dev-set "
                              "variant")
        if params.warmup < 0:
            raise ConfigError(f"remix: warmup must be >= 0 epochs, got {params.warmup}")
        check_non_negative("remix", params, ("alpha", "gamma"))

    def build(self, ctx: BuildContext) -> nn.Module:
        return UnimodalHeads(ctx.model(), ctx.spec.modalities, ctx.spec.num_classes)

    def remixing(self, state: TrainState) -> bool:
        return state.epoch >= state.params.warmup

    @torch.no_grad()
    def assignment(self, model: nn.Module, state: TrainState) -> Tensor:
        """Each training row's modality index from the model's unimodal heads, model in eval mode: (N,)."""
        was_training = model.training
        model.eval()
        kl = []
        for batch in state.batches("train", batch_size=SCORE_BATCH):  # row order
            outputs = model.unimodal_outputs(model.encode(batch))
            kl.append(torch.stack([kl_to_uniform(outputs[m].float().softmax(-1)) for m in state.cfg.modalities],
                                  dim=-1).cpu())  # (B, M)
        model.train(was_training)
        return assign_modalities(torch.cat(kl))

    def epoch_batches(self, model: nn.Module, state: TrainState, default: list[Tensor]) -> Sequence[Tensor]:
        state.scratch.pop(ASSIGNMENT_KEY, None)
        if not self.remixing(state):
            return default
        assignment = self.assignment(model, state)
        modalities = state.cfg.modalities
        state.scratch[ASSIGNMENT_KEY] = assignment
        state.scratch[SHARE_KEY] = {m: float((assignment == k).double().mean()) for k, m in enumerate(modalities)}
        return subset_batches(assignment, len(modalities), state.cfg.batch_size, state.epoch_generator())

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        task, labels, params = state.task, batch.labels, state.params
        features = model.encode(batch)  # m -> z_m (B, D_m)
        assignment = state.scratch.get(ASSIGNMENT_KEY)
        if assignment is None:  # warm-up: every modality, every head
            fused = task.loss(model.fuse(features), labels)
            unimodal = model.unimodal_outputs(features)
            total = fused + params.alpha * sum(task.loss(out, labels) for out in unimodal.values())
            return total, {"loss_multimodal": float(fused.detach())}
        kept = state.cfg.modalities[int(assignment[batch.index[0]])]  # a batch holds one subset's rows
        fused = task.loss(model.fuse(keep_only(features, kept)), labels)
        unimodal = task.loss(model.unimodal_heads[kept](features[kept]), labels)
        return fused + params.gamma * unimodal, {"loss_multimodal": float(fused.detach())}

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        share = state.scratch.pop(SHARE_KEY, None)
        return {} if share is None else {f"remix_share/{m}": value for m, value in share.items()}
