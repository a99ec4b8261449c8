"""LFM: dynamically learning the modality gap (Yang et al., "Facilitating Multimodal Classification via
Dynamically Learning Modality Gap", NeurIPS 2024; official code njustkmg/NeurIPS24-LFM,
Crema_epoch_learnable.py (the learned weights), Crema_epoch.py (the fitted weights) and model/AudioVideo.py;
BalanceBenchmark's balancemm/trainer/LFM_trainer.py as a second reading; docs/methods/lfm.md).

Each modality has its own linear head h_m on its features z_m; the prediction is the mean of their logits,
o = (1/n) sum_m h_m(z_m) (the official 0.5 o_a + 0.5 o_v). The objective of every step is

    L = 2 (a_cls * CE(o, y) + a_align * A),   A = mean over modality pairs of J(h_i(z_i), h_j(z_j))
    J(p, q) = 1/2 (KL(m || softmax p) + KL(m || softmax q)),  m = (softmax p + softmax q) / 2  (batch mean)

(the official `Alignment`: F.kl_div(p.log(), m) is KL(m || p), not KL(p || m)). a_cls + a_align = 1.
Before every epoch's training ("learnable", the default) a hypergradient moves a_align:

    g = mean of the first parameter tensor's entries of  H(L_tot) . dCE/dtheta,   L_tot = a_cls CE + a_align A
        (on a fixed probe batch; the official Hessian-vector product, of which it keeps only the first tensor)
    lr_alpha halves at every epoch e > 0 with e % 20 == 0;  a_align <- clip(a_align - lr_alpha g, 0.05, 0.95)

starting from a_cls = 0.05, a_align = 0.95. "fitted" instead reads both weights from the official degree-5
polynomial of the epoch (Crema_epoch.py, fitted to the learned weights on CREMA-D).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.config import ConfigError, RunConfig
from bench.methods.base import BuildContext, Logs, Method, TrainState, check_choices, register
from bench.methods.heads import UnimodalHeads

ALIGN_MIN, ALIGN_MAX = 0.05, 0.95  # the official clip of the alignment weight
# Crema_epoch.py's getAlpha_Learnable_Fitted: coefficients of epoch^0 .. epoch^5
FITTED_CLS = (2.04623704e-01, 3.35472727e-03, 1.22989557e-04, -2.92947416e-06, 2.23835486e-08, -5.39717505e-11)
FITTED_ALIGN = (7.95376296e-01, -3.35472727e-03, -1.22989557e-04, 2.92947416e-06, -2.23835486e-08,
                5.39717505e-11)
WEIGHTS_KEY = "lfm/weights"  # (a_cls, a_align) of the current epoch
PROBE_KEY = "lfm/probe"  # the probe batch's row indices


@dataclass(frozen=True)
class LFMParams:
    schedule: str = "learnable"  # "learnable" (Crema_epoch_learnable.py) | "fitted" (Crema_epoch.py)
    cls_init: float = 0.05  # a_cls before the first update (official [0.05, 0.95]; BalanceBenchmark: 0.95)
    lr_alpha: float = 1e-4  # the learning rate of a_align (official and BalanceBenchmark)
    halve_every: int = 20  # lr_alpha halves at every epoch e > 0 with e % halve_every == 0
    probe_size: int = 8  # samples of the fixed probe batch (official: half of 16 held-out samples)
    # "average": the prediction is the mean of the unimodal heads' logits (official); "model": the run
    # model's fused output is the prediction and the classification loss's input (BalanceBenchmark)
    fusion: str = "average"


# -- the formulas ------------------------------------------------------------------------------------------


def alignment(first: Tensor, second: Tensor) -> Tensor:
    """The official Alignment: 1/2 (KL(m || p) + KL(m || q)) with p, q the softmaxes of two (B, K) logits and
    m their mean; each KL summed over classes, averaged over the batch (kl_div 'batchmean')."""
    log_p, log_q = F.log_softmax(first, dim=-1), F.log_softmax(second, dim=-1)  # (B, K)
    mix = 0.5 * log_p.exp() + 0.5 * log_q.exp()  # (B, K)
    batch = first.shape[0]
    entropy_term = torch.xlogy(mix, mix)  # m log m, 0 where m = 0 (as kl_div)
    kl_p = (entropy_term - mix * log_p).sum() / batch
    kl_q = (entropy_term - mix * log_q).sum() / batch
    return 0.5 * (kl_p + kl_q)


def pairwise_alignment(logits: Sequence[Tensor]) -> Tensor:
    """The mean of `alignment` over every pair of modalities (BalanceBenchmark's form; one pair when n = 2)."""
    pairs = list(itertools.combinations(range(len(logits)), 2))
    return sum(alignment(logits[i], logits[j]) for i, j in pairs) / len(pairs)


def lfm_objective(cls_loss: Tensor, align_loss: Tensor, w_cls: float, w_align: float) -> Tensor:
    """2 (a_cls CE + a_align A): the official training loss."""
    return 2.0 * (w_cls * cls_loss + w_align * align_loss)


def fitted_weights(epoch: int) -> tuple[float, float]:
    """(a_cls, a_align) of the official fitted polynomials at `epoch`."""
    cls = sum(c * epoch ** i for i, c in enumerate(FITTED_CLS))
    align = sum(c * epoch ** i for i, c in enumerate(FITTED_ALIGN))
    return float(cls), float(align)


def alpha_lr(epoch: int, lr: float, halve_every: int) -> float:
    """lr_alpha at `epoch`: the official halving at every epoch e > 0 with e % halve_every == 0, applied
    before that epoch's update (so epochs 20..39 use lr / 2 when halve_every = 20)."""
    return lr / 2 ** (epoch // halve_every)


def update_weights(w_align: float, alpha_grad: float, lr: float) -> tuple[float, float]:
    """One official step: a_align <- clip(a_align - lr g, 0.05, 0.95), a_cls = 1 - a_align."""
    align = max(ALIGN_MIN, min(ALIGN_MAX, w_align - lr * alpha_grad))
    return 1.0 - align, align


def hypergradient(cls_loss: Tensor, align_loss: Tensor, w_cls: float, w_align: float,
                  params: Sequence[nn.Parameter]) -> float:
    """The official alpha gradient: the mean of the first entry of H(L_tot) v, v = dCE/dtheta (a constant),
    L_tot = a_cls CE + a_align A, H its Hessian over `params`; only params[0]'s block is kept, as the official
    `hessian_vector_prod[0].mean()`."""
    total = w_cls * cls_loss + w_align * align_loss
    theta = torch.autograd.grad(total, list(params), create_graph=True, allow_unused=True)
    cls_grads = torch.autograd.grad(cls_loss, list(params), retain_graph=True, allow_unused=True)
    terms = [(t * c.detach()).sum() for t, c in zip(theta, cls_grads, strict=True)
             if t is not None and c is not None and t.requires_grad]
    if not terms:
        return 0.0
    (first,) = torch.autograd.grad(sum(terms), [params[0]], allow_unused=True)
    return 0.0 if first is None else float(first.mean())


# -- the model ----------------------------------------------------------------------------------------------


class LFMModel(UnimodalHeads):
    """The run model with a head per modality; with fusion "average" its prediction is the heads' mean
    (the run model's own fusion head is then unused), with "model" the run model's own forward."""

    def __init__(self, model: nn.Module, modalities: Sequence[str], output_size: int, fusion: str) -> None:
        super().__init__(model, modalities, output_size)
        self.fusion = fusion

    def head_average(self, logits: Mapping[str, Tensor]) -> Tensor:
        """(1/n) sum_m h_m(z_m): (B, K)."""
        return sum(logits.values()) / len(logits)

    def forward(self, batch: Batch) -> ModelOutput:
        if self.fusion != "average":
            return self.model(batch)
        features = self.encode(batch)
        logits = self.unimodal_outputs(features)
        n = len(logits)
        return ModelOutput(logits=self.head_average(logits), features=features,
                           modality_logits={m: o.detach() / n for m, o in logits.items()})


def lfm_losses(model: LFMModel, batch: Batch, task: Any) -> tuple[Tensor, Tensor]:
    """(CE of the prediction, pairwise alignment of the unimodal heads) on one batch."""
    features = model.encode(batch)  # m -> (B, D_m)
    logits = model.unimodal_outputs(features)  # m -> (B, K)
    fused = model.head_average(logits) if model.fusion == "average" else model.fuse(features)
    return task.loss(fused, batch.labels), pairwise_alignment(list(logits.values()))


# -- the method ---------------------------------------------------------------------------------------------


@register
class LFM(Method):
    name = "lfm"
    Params = LFMParams
    description = "classification and a JS-style alignment of the unimodal heads, their weights learned per epoch"
    display_name = "LFM"
    table_order = 271
    requires = frozenset({"features"})

    no_dev_set = "its probe batch comes from the training split"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        check_choices("lfm", params, {"schedule": ("learnable", "fitted"), "fusion": ("average", "model")})
        if not 0.0 <= params.cls_init <= 1.0:
            raise ConfigError(f"lfm: cls_init must be in [0, 1], got {params.cls_init}")
        if params.lr_alpha < 0 or params.halve_every < 1 or params.probe_size < 1:
            raise ConfigError("lfm: lr_alpha must be >= 0, halve_every and probe_size >= 1")

    def build(self, ctx: BuildContext) -> nn.Module:
        return LFMModel(ctx.model(), ctx.spec.modalities, ctx.spec.num_classes, ctx.params.fusion)

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        params: LFMParams = state.params
        state.scratch[WEIGHTS_KEY] = (params.cls_init, 1.0 - params.cls_init)
        train = state.splits.get("train")
        if train is not None:  # a fixed seeded draw of probe_size training rows (the official random 16)
            order = torch.randperm(train.size, generator=torch.Generator().manual_seed(state.cfg.seed))
            state.scratch[PROBE_KEY] = order[:params.probe_size]
        return {}

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        params: LFMParams = state.params
        logs: Logs = {}
        if params.schedule == "fitted":
            w_cls, w_align = fitted_weights(state.epoch)
        else:
            w_cls, w_align = state.scratch.get(WEIGHTS_KEY, (params.cls_init, 1.0 - params.cls_init))
            probe = state.scratch.get(PROBE_KEY)
            if probe is not None:
                batch = state.splits["train"].batch(probe)
                cls_loss, align_loss = lfm_losses(model, batch, state.task)
                trainable = [p for p in model.parameters() if p.requires_grad]
                grad = hypergradient(cls_loss, align_loss, w_cls, w_align, trainable)
                lr = alpha_lr(state.epoch, params.lr_alpha, params.halve_every)
                w_cls, w_align = update_weights(w_align, grad, lr)
                logs.update({"alpha_grad": grad, "lr_alpha": lr})
        state.scratch[WEIGHTS_KEY] = (w_cls, w_align)
        logs.update({"weight_cls": w_cls, "weight_align": w_align})
        return logs

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: LFMParams = state.params
        w_cls, w_align = state.scratch.get(WEIGHTS_KEY, (params.cls_init, 1.0 - params.cls_init))
        cls_loss, align_loss = lfm_losses(model, batch, state.task)
        logs: Logs = {"loss_cls": float(cls_loss.detach()), "loss_align": float(align_loss.detach())}
        return lfm_objective(cls_loss, align_loss, w_cls, w_align), logs
