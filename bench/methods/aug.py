"""AUG: sustained boosting with adaptive classifier assignment (Jiang, Huang and Yang, NeurIPS 2025,
"Rethinking Multimodal Learning from the Perspective of Mitigating Classification Ability Disproportion";
official code njustkmg/NeurIPS25-AUG, train_CREMAD.py (`train_audio_video`, `val`, the epoch loop) and
model/AudioVideo.py (`AVGBShareClassifier`: `classfier`, `add_layer`); data/crema.json; docs/methods/aug.md).

The model (`AUGModel`): the run model's encoders give z_m; per modality an embedding e_m = ReLU(Linear(D_m ->
H)) (H = 256) and one classifier C: Linear(H -> K) shared by every modality; modality m holds a list of
added learners a_m,j = ReLU(Linear(D_m -> H)) on the same z_m (none at first). Modality m's output:

    o_m = C(e_m(z_m)) + sum_j C(a_m,j(z_m))
    prediction = sum_m w_m o_m            (two modalities: w = (0.4, 0.6), the official merge_alpha; else 1/M)

Training (owns_step), per batch, for each modality m in run order, a backward and an optimizer step:

    no learner yet:  L_m = CE(o_m, y)
    else:            prev = o_m without its newest learner, new = that learner's C(a_m,J(z_m)),
                     q = softmax(prev).detach()[y]                 the ensemble's confidence in the truth
                     L_m = CE(o_m, y) + CE(prev, y) + CE(new, y) - 0.5 * mean(q * -log softmax(new)[y])

The per-modality confidence s_m = sum over the epoch's samples of softmax(o_m)[y] decides, after the check
epochs (epoch 0 and every (epoch + 1) % max(epochs // 10, 1) == 0 when epochs > 10, else every epoch), which
modality gets a new learner: two modalities, r = s_1 / s_2: r > lam + 0.01 -> modality 2, r < lam - 0.01 ->
modality 1 (lam = 1). The new learner's Linear is Xavier-normal with zero bias and, as in the official code
(whose optimizer is built once, before any learner exists), never trained: the gradient passes through it
to the encoder and to C. Classification only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.batch import Batch, ModelOutput
from bench.config import ConfigError, RunConfig
from bench.methods.base import BuildContext, Logs, Method, TrainState, check_non_negative, register
from bench.methods.heads import UnimodalHeads, feature_widths

SCORES_KEY = "aug/scores"  # modality -> the epoch's summed confidence s_m
PENDING_KEY = "aug/pending"  # the modality that gets a learner at the next epoch's start
MARGIN = 0.01  # the official `lam + 0.01` / `lam - 0.01`


@dataclass(frozen=True)
class AUGParams:
    lam: float = 1.0  # official --lam: the confidence ratio at balance
    merge_alpha: float = 0.4  # official --merge_alpha: the first modality's weight in a two-modality prediction
    residual: float = 0.5  # the official 0.5 on the newest learner's confidence-weighted term
    hidden: int = 256  # official embedding width H


# -- the formulas ------------------------------------------------------------------------------------


def boosting_loss(output: Tensor, previous: Tensor | None, newest: Tensor | None, labels: Tensor,
                  residual: float = 0.5) -> Tensor:
    """Modality m's loss from its output o_m (B, K), the output without its newest learner and that
    learner's own output (None without learners), and the labels (B,): a batch mean (see the module doc)."""
    loss = F.cross_entropy(output, labels)
    if newest is None or previous is None:
        return loss
    confidence = previous.detach().softmax(-1).gather(1, labels[:, None]).squeeze(1)  # (B,)
    newest_log_p = F.log_softmax(newest, dim=-1).gather(1, labels[:, None]).squeeze(1)  # (B,)
    weighted = (confidence * -newest_log_p).mean()  # the official CE(new, y * softmax(prev))
    return loss + F.cross_entropy(previous, labels) + F.cross_entropy(newest, labels) - residual * weighted


def confidence_sum(logits: Tensor, labels: Tensor) -> float:
    """sum_i softmax(logits_i)[y_i]: a modality's confidence in the truth over a batch."""
    return float(logits.detach().float().softmax(-1).gather(1, labels[:, None]).sum())


def weak_modality(scores: Sequence[float], lam: float, margin: float = MARGIN) -> int | None:
    """The index of the modality that gets a learner, or None when the confidences are balanced.

    Two modalities, the official rule on r = s_0 / s_1: r > lam + margin -> 1, r < lam - margin -> 0.
    More (ours): the modality whose confidence over the mean of the others', r_m, is lowest, when
    r_m < lam - margin.
    """
    if len(scores) == 2:
        ratio = scores[0] / scores[1]
        return 1 if ratio > lam + margin else (0 if ratio < lam - margin else None)
    ratios = [s / (sum(scores[:m] + scores[m + 1:]) / (len(scores) - 1)) for m, s in enumerate(scores)]
    weakest = min(range(len(ratios)), key=ratios.__getitem__)
    return weakest if ratios[weakest] < lam - margin else None


def is_check_epoch(epoch: int, epochs: int) -> bool:
    """Whether the official loop may add a learner after `epoch` (0-based) of `epochs`."""
    check = epochs // 10 if epochs > 10 else 1
    return epoch == 0 or (epoch + 1) % check == 0


def merge_weights(count: int, merge_alpha: float) -> list[float]:
    """w_m of the prediction: (alpha, 1 - alpha) for two modalities (official), else 1/M each (ours)."""
    return [merge_alpha, 1.0 - merge_alpha] if count == 2 else [1.0 / count] * count


# -- the model --------------------------------------------------------------------------------------


class AUGModel(UnimodalHeads):
    """The run model's encoders, e_m = ReLU(Linear(D_m -> H)) as each modality's `unimodal_heads[m]`, the
    shared classifier C, and `max_learners` untrained learners per modality, the first `active[m]` in use."""

    def __init__(self, model: nn.Module, modalities: Sequence[str], output_size: int, hidden: int,
                 max_learners: int, weights: Sequence[float]) -> None:
        super().__init__(model, modalities, output_size,
                         make_head=lambda width, _: nn.Sequential(nn.Linear(width, hidden), nn.ReLU()))
        self.modalities = tuple(modalities)
        self.classifier = nn.Linear(hidden, output_size)
        widths = feature_widths(model, modalities)
        self.learners = nn.ModuleDict({m: nn.ModuleList(nn.Linear(widths[m], hidden) for _ in range(max_learners))
                                       for m in modalities})
        self.learners.requires_grad_(False)  # the official optimizer never holds them
        self.register_buffer("active", torch.zeros(len(modalities), dtype=torch.long))  # in the checkpoint
        self.weights = list(weights)

    def boosted(self, modality: str, z: Tensor) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """o_m (B, K), o_m without its newest learner, the newest learner's output (None, None: no learner)."""
        output = self.classifier(self.unimodal_heads[modality](z))
        previous = newest = None
        for learner in self.learners[modality][:int(self.active[self.modalities.index(modality)])]:
            previous, newest = output, self.classifier(torch.relu(learner(z)))
            output = output + newest
        return output, previous, newest

    def unimodal_outputs(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {m: self.boosted(m, z)[0] for m, z in features.items()}

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.model.encode(batch)
        outputs = self.unimodal_outputs(features)
        logits = sum(w * outputs[m] for w, m in zip(self.weights, self.modalities, strict=True))
        return ModelOutput(logits=logits, features=features,
                           modality_logits={m: out.detach() for m, out in outputs.items()})

    def add_learner(self, modality: str, generator: torch.Generator | None = None) -> int:
        """Put modality m's next learner in use, Xavier-normal weight and zero bias; returns the count in use."""
        k = self.modalities.index(modality)
        used = int(self.active[k])
        if used == len(self.learners[modality]):
            raise RuntimeError(f"aug: no learner left for {modality} (all {used} in use)")
        learner = self.learners[modality][used]
        with torch.no_grad():
            nn.init.xavier_normal_(learner.weight, generator=generator)
            learner.bias.zero_()
        self.active[k] += 1
        return used + 1


# -- the method -------------------------------------------------------------------------------------------


@register
class AUG(Method):
    name = "aug"
    Params = AUGParams
    tasks = ("classification",)  # the residual term reads class probabilities; no published regression form
    requires = frozenset({"features"})
    owns_step = True  # one backward and one optimizer step per modality and batch
    description = "sustained boosting: untrained learners added to the least confident modality's classifier"
    display_name = "AUG"
    table_order = 223

    no_dev_set = "measures the confidences on the training batches"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        check_non_negative("aug", params, ("lam", "residual"))
        if not 0.0 <= params.merge_alpha <= 1.0:
            raise ConfigError(f"aug: merge_alpha must be in [0, 1], got {params.merge_alpha}")
        if params.hidden < 1:
            raise ConfigError(f"aug: hidden must be >= 1, got {params.hidden}")

    def build(self, ctx: BuildContext) -> nn.Module:
        params, modalities, epochs = ctx.params, ctx.spec.modalities, ctx.cfg.max_epochs
        max_learners = sum(is_check_epoch(epoch, epochs) for epoch in range(epochs))  # at most one per check
        return AUGModel(ctx.model(), modalities, ctx.spec.num_classes, params.hidden, max_learners,
                        merge_weights(len(modalities), params.merge_alpha))

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        state.scratch[SCORES_KEY] = dict.fromkeys(state.cfg.modalities, 0.0)
        pending = state.scratch.pop(PENDING_KEY, None)
        if pending is not None:
            model.add_learner(pending, state.generator)
        return {}

    def train_step(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        features = model.model.encode(batch)  # m -> z_m (B, D_m), every encoder before any step (official)
        scores, total = state.scratch[SCORES_KEY], 0.0
        for m, weight in zip(state.cfg.modalities, model.weights, strict=True):
            output, previous, newest = model.boosted(m, features[m])
            loss = boosting_loss(output, previous, newest, batch.labels, state.params.residual)
            for optimizer in state.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            state.check_gradients()
            for optimizer in state.optimizers.values():
                optimizer.step()
            scores[m] += confidence_sum(output, batch.labels)
            total += weight * float(loss.detach())  # the official merge_alpha-weighted training loss
        return torch.tensor(total), {}

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        modalities = state.cfg.modalities
        scores = state.scratch[SCORES_KEY]
        logs = {f"confidence/{m}": scores[m] / max(state.splits["train"].size, 1) for m in modalities}
        logs.update({f"learners/{m}": float(model.active[k]) for k, m in enumerate(modalities)})
        if is_check_epoch(state.epoch, state.cfg.max_epochs):
            weak = weak_modality([scores[m] for m in modalities], state.params.lam)
            if weak is not None:  # added at the next epoch's start: this epoch validates the model as it is
                state.scratch[PENDING_KEY] = modalities[weak]
        return logs
