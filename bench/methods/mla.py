"""MLA: Multimodal Learning with Alternating unimodal adaptation (Zhang, Yoon, Bansal and Yao, CVPR 2024,
"Multimodal Representation Learning by Alternating Unimodal Adaptation"; official code
Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation, main.py and utils/utils.py;
docs/methods/mla.md).

The model (`MLAModel`, built around the run's model): the run model's encoders give z_m; a projection
P_m: Linear(out_m -> D) per modality (D = the widest encoder output; ours, as ReconBoost's) puts every
modality in one space, where one shared head H: Linear(D -> K) gives the unimodal logits f_m = H(P_m z_m).

Training (owns_step), per batch, for each modality m in run order:

    L_m   = CE(f_m, y)                     only encoder m, P_m and H get gradient
    alpha = 0.1 ** (b / N_b + 1)           b the batch index in the epoch, N_b batches per epoch
    r     = mean_i P_m z_m,i               (1, D), detached
    k     = Q r^T;  Q <- Q - (k k^T) ./ (alpha + k r);  Q <- Q / ||Q||_F   Q starts as I_D, shared by all m;
                                           the division elementwise by the D x D matrix alpha + k r, as the
                                           release's (dead) line and BalanceBenchmark ("owm": by alpha + r k)
    grad_H.weight <- grad_H.weight Q^T     the head's weight gradient
    optimizer step, gradients zeroed: zero tensors, as torch 1.8's zero_grad() (the release's pin), so a
                                           later turn also steps the modalities already updated ("none": set
                                           to None, skipped)

The very first modality update of a run leaves Q and the gradient alone (the official exp_count == 0).

Evaluation (the model's forward, train or eval mode alike): test-time uncertainty-based fusion

    H_m,i  = -sum_k p_k log p_k,  p = softmax(f_m,i)          per sample (fusion_entropy "sample")
    w_m,i  = exp(max_j H_j,i - H_m,i) / sum_j exp(max_j H_j,i - H_j,i)
    logits = sum_m w_m f_m

`modality_logits` are the f_m, so the per-modality metrics are each unimodal learner's. Classification
only (the fusion needs class distributions).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.methods.base import (
    Batch,
    BuildContext,
    Logs,
    Method,
    ModelOutput,
    ThesisSettings,
    TrainState,
    check_choices,
    register,
)

STATE_KEY = "mla/state"
EVAL_BATCH = 256
FUSIONS = ("entropy", "mean")
FUSION_ENTROPIES = ("sample", "batch")
HEAD_GRADIENTS = ("project", "off", "add")
PROJECTOR_UPDATES = ("release", "owm")
CLEAR_GRADS = ("zero", "none")


@dataclass(frozen=True)
class MLAParams:
    fusion: str = "entropy"  # "entropy": the uncertainty-weighted fusion (official --dynamic); "mean": equal weights
    # "sample": per-sample entropy over classes (the paper's reading); "batch": the official code's
    # softmax over the batch dimension and one entropy per batch and modality
    fusion_entropy: str = "sample"
    # "project": g <- g Q^T (the official GSPlugin formula; its parameter-name check never matches, so the
    # released code never applies it); "off": the released code's behaviour; "add": g <- g + g Q^T
    # (BalanceBenchmark)
    head_gradient: str = "project"
    # the projector update: "release": Q - (k k^T) / (alpha + k r), divided elementwise by the D x D matrix
    # alpha + k r (utils/utils.py's line, as BalanceBenchmark's MLA_trainer.py); "owm": divided by the scalar
    # alpha + r k (OWM's recursive-least-squares formula, the harness's former default)
    project: str = "release"
    # between turns: "zero": zero_grad() leaves zero gradients (torch 1.8, the release's pin), so a later turn
    # of the batch also steps the modalities already updated (momentum, weight decay, Adam moments); "none":
    # gradients set to None, the optimizer skips them (the harness's former reading)
    clear_grads: str = "zero"


# -- the model --------------------------------------------------------------------------------------


class MLAModel(nn.Module):
    """The run model's encoders, a projection per modality to a common width, one shared head."""

    def __init__(self, inner: nn.Module, widths: Mapping[str, int], num_classes: int, fusion: str = "entropy",
                 fusion_entropy: str = "sample") -> None:
        super().__init__()
        self.inner = inner  # its encode(batch) gives z_m; its own fusion head is not used
        self.modalities: tuple[str, ...] = tuple(widths)
        self.width = max(widths.values())
        self.projections = nn.ModuleDict({m: nn.Linear(w, self.width) for m, w in widths.items()})
        self.head = nn.Linear(self.width, num_classes)
        self.fusion = fusion
        self.fusion_entropy = fusion_entropy

    @property
    def encoders(self) -> nn.ModuleDict:
        return self.inner.encoders

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """z_m of the run model: (B, out_m)."""
        return self.inner.encode(batch)

    def shared_inputs(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """P_m z_m: (B, D), the inputs of the shared head."""
        return {m: self.projections[m](features[m]) for m in self.modalities}

    def unimodal_logits(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """f_m = H(P_m z_m): (B, K)."""
        return {m: self.head(x) for m, x in self.shared_inputs(features).items()}

    def fusion_weights(self, logits: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """w_m per sample (B,) (or per batch, broadcast to (B,)) of the configured fusion."""
        if self.fusion == "mean":
            first = next(iter(logits.values()))
            return {m: torch.full((first.shape[0],), 1.0 / len(logits), device=first.device) for m in logits}
        return entropy_fusion_weights(logits, self.fusion_entropy)

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        logits = self.unimodal_logits(features)
        weights = self.fusion_weights(logits)
        return ModelOutput(logits=fused_logits(logits, weights), features=features,
                           modality_logits={m: f.detach() for m, f in logits.items()})


# -- the formulas ------------------------------------------------------------------------------------


def prediction_entropy(logits: Tensor, over: str = "sample") -> Tensor:
    """"sample": H_i = -sum_k p_ik log p_ik with p = softmax over classes: (B,).
    "batch" (the official code): p = softmax over the batch dimension, H = -sum_{i,k} p log p: a 0-dim tensor."""
    dim = 1 if over == "sample" else 0
    log_p = torch.log_softmax(logits.float(), dim=dim)  # (B, K)
    plogp = log_p.exp() * log_p
    return -plogp.sum(dim=1) if over == "sample" else -plogp.sum()


def entropy_fusion_weights(logits: Mapping[str, Tensor], over: str = "sample") -> dict[str, Tensor]:
    """w_m = exp(max_j H_j - H_m) / sum_j exp(max_j H_j - H_j): the less uncertain, the heavier. (B,) each."""
    names = list(logits)
    batch = next(iter(logits.values())).shape[0]
    entropies = torch.stack([prediction_entropy(logits[m], over) for m in names])  # (n, B) or (n,)
    weights = torch.softmax(-entropies, dim=0)  # exp(max - H_m) / sum exp(max - H_j) == softmax(-H)
    return {m: weights[i].expand(batch) if weights[i].dim() == 0 else weights[i] for i, m in enumerate(names)}


def fused_logits(logits: Mapping[str, Tensor], weights: Mapping[str, Tensor]) -> Tensor:
    """sum_m w_m f_m: (B, K) from (B, K) logits and (B,) weights."""
    names: Sequence[str] = list(logits)
    return sum(weights[m].unsqueeze(1) * logits[m] for m in names)


def projector_alpha(batch_index: int, batches_per_epoch: int) -> float:
    """alpha = 0.1 ** (b / N_b + 1): 0.1 at the first batch of an epoch, toward 0.01 at its end."""
    return 0.1 ** (batch_index / batches_per_epoch + 1.0)


def update_projector(projector: Tensor, mean_input: Tensor, alpha: float, form: str = "release") -> Tensor:
    """Q <- Q - k k^T / den, k = Q r^T, then Q / ||Q||_F. Q: (D, D); r: (1, D).

    "release": den = alpha + k r, a (D, D) matrix, the division elementwise (the released GSPlugin line and
    BalanceBenchmark); "owm": den = alpha + r k, a scalar (OWM's formula)."""
    k = projector @ mean_input.T  # (D, 1)
    denominator = alpha + (k @ mean_input if form == "release" else mean_input @ k)  # (D, D) or (1, 1)
    updated = projector - (k @ k.T) / denominator  # (D, D)
    return updated / torch.linalg.matrix_norm(updated)  # Frobenius norm


def clear_gradients(optimizers: Sequence[torch.optim.Optimizer], mode: str) -> None:
    """zero_grad of every optimizer: "zero" leaves zero tensors (stepped again: momentum, weight decay, Adam
    moments act), "none" sets them to None (skipped by the next step)."""
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=mode == "none")


def modify_head_gradient(grad: Tensor, projector: Tensor, mode: str) -> Tensor:
    """The head weight gradient (K, D) after the modification: g Q^T, g + g Q^T, or g ("off")."""
    if mode == "project":
        return grad @ projector.T
    if mode == "add":
        return grad + grad @ projector.T
    return grad


@dataclass
class MLAState:
    """What MLA keeps between steps (state.scratch): the projector, update counts, the epoch's first step."""

    projector: Tensor
    updates: int = 0  # modality updates so far in the run (the official exp_count)
    epoch_start_step: int = 0
    batches_per_epoch: int = 1


# -- the method -------------------------------------------------------------------------------------


@register
class MLA(Method):
    name = "mla"
    Params = MLAParams
    owns_step = True
    requires = frozenset({"encoders", "features"})
    description = "MLA: alternating unimodal updates through a shared head, entropy-weighted fusion at test time"
    display_name = "MLA"
    table_order = 190
    thesis = ThesisSettings(params={"fusion": "entropy", "head_gradient": "project"})

    no_dev_set = "computes no ratios"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        check_choices("mla", params, {"fusion": FUSIONS, "fusion_entropy": FUSION_ENTROPIES,
                                      "head_gradient": HEAD_GRADIENTS, "project": PROJECTOR_UPDATES,
                                      "clear_grads": CLEAR_GRADS})

    def build(self, ctx: BuildContext) -> nn.Module:
        base = ctx.model()
        widths = {m: base.feature_dim(m) for m in ctx.spec.modalities}
        return MLAModel(base, widths, ctx.spec.num_classes, ctx.params.fusion, ctx.params.fusion_entropy)

    def param_groups(self, model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
        """One group per modality (encoder + projection) and 'head' (the shared head), without the run
        model's unused fusion head."""
        rates = dict(cfg.group_lrs)
        groups = [{"name": m, "params": [*model.encoders[m].parameters(), *model.projections[m].parameters()],
                   "lr": rates.get(m, cfg.lr)} for m in model.modalities]
        groups.append({"name": "head", "params": list(model.head.parameters()), "lr": rates.get("head", cfg.lr)})
        return groups

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        size = sum(batch.size for batch in state.batches("train", batch_size=1024))
        projector = torch.eye(model.width, device=next(model.head.parameters()).device)
        state.scratch[STATE_KEY] = MLAState(projector=projector,
                                            batches_per_epoch=max(1, math.ceil(size / state.cfg.batch_size)))
        return {}

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        state.scratch[STATE_KEY].epoch_start_step = state.step
        return {}

    def train_step(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        mla: MLAState = state.scratch[STATE_KEY]
        params: MLAParams = state.params
        optimizers = list(state.optimizers.values())
        alpha = projector_alpha(state.step - mla.epoch_start_step, mla.batches_per_epoch)
        # "none": every encoder once, the turns touch disjoint encoders. "zero": an earlier turn's step also
        # moves the later modalities' encoders in place (zero gradients), which autograd refuses to
        # backpropagate through, so each turn encodes afresh (ours; the release encodes once per batch)
        features = model.encode(batch) if params.clear_grads == "none" else {}
        logs: Logs = {"alpha": alpha}
        losses = []
        clear_gradients(optimizers, params.clear_grads)
        for m in model.modalities:
            z = features[m] if features else model.encode(batch)[m]  # (B, out_m)
            shared = model.projections[m](z)  # (B, D)
            loss = state.task.loss(model.head(shared), batch.labels)
            loss.backward()
            kept = 1.0
            if mla.updates > 0 and params.head_gradient != "off":
                mean_input = shared.detach().mean(dim=0, keepdim=True)  # (1, D)
                mla.projector = update_projector(mla.projector, mean_input, alpha, params.project)
                grad = model.head.weight.grad
                modified = modify_head_gradient(grad, mla.projector, params.head_gradient)
                kept = float(torch.linalg.matrix_norm(modified) / torch.linalg.matrix_norm(grad).clamp_min(1e-30))
                grad.copy_(modified)
            state.check_gradients()
            for optimizer in optimizers:
                optimizer.step()
            clear_gradients(optimizers, params.clear_grads)
            logs[f"turn/{m}"] = float(mla.updates)
            logs[f"turn_loss/{m}"] = float(loss.detach())
            logs[f"head_grad_kept/{m}"] = kept
            mla.updates += 1
            losses.append(loss.detach())
        return torch.stack(losses).mean(), logs

    @torch.no_grad()
    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        """The mean fusion weight of each modality on the validation split (what evaluation uses)."""
        was_training = model.training
        model.eval()
        totals: dict[str, float] = {m: 0.0 for m in model.modalities}
        count = 0
        try:
            for batch in state.batches("valid", batch_size=EVAL_BATCH):
                weights = model.fusion_weights(model.unimodal_logits(model.encode(batch)))
                for m, w in weights.items():
                    totals[m] += float(w.sum())
                count += batch.size
        finally:
            model.train(was_training)
        return {f"valid:fusion_weight/{m}": total / max(count, 1) for m, total in totals.items()}
