"""DGL, Disentangled Gradient Learning (Wei, Luo and Luo, "Boosting Multimodal Learning via Disentangled
Gradient Learning", ICCV 2025; official code shicaiwei123/ICCV2025-GDL: main_dgl.py (train_epoch),
models/fusion_modules.py (ConcatFusion_DGL, SumFusion_DGL), models/basic_model.py (AVClassifier_DGL);
docs/methods/dgl.md).

Each modality's output goes through the model's own fusion head with the other modalities' features
zeroed, o_m = fuse({m: z_m, others: 0}). Per step the gradients are disentangled:

    encoders theta_m:  alpha * d(sum_n L_n)/d theta_m       only the unimodal losses (the multimodal loss
                                                            sees detached features: truncated)
    fusion head phi:   dL_f/d phi                           only the multimodal loss (the official loop
                                                            sets the head's unimodal gradient to None)

L_f = loss(fuse(z.detach()), y), L_n = loss(o_n, y), alpha = 4 (the official default). Classification only.

How: autograd.grad of alpha sum_n L_n with respect to the features z_m (not the head's parameters) gives
g_m = d(alpha sum L)/dz_m; the objective handed to the loop is L_f(detached z) + sum_m <z_m, g_m>, whose
backward gives the encoders exactly the unimodal gradient and the head exactly the multimodal one, with
the value of L_f + alpha sum L_n. Accumulation, schedules and every optimizer stay the loop's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import Logs, Method, ThesisSettings, TrainState, register
from bench.methods.heads import shared_head_outputs


@dataclass(frozen=True)
class DGLParams:
    alpha: float = 4.0  # weight of the unimodal losses (main_dgl.py's default; cramed_dgl.sh 4 and 5)


# -- the formulas ------------------------------------------------------------------------------------


def disentangled_objective(fused_loss: Tensor, unimodal_loss: Tensor, features: Mapping[str, Tensor]) -> Tensor:
    """An objective whose gradient is dL_u/dz_m on each feature z_m (so only the encoders below it get the
    unimodal gradient) plus fused_loss's own gradient (computed on detached features: the head only).
    Its value is fused_loss + unimodal_loss."""
    names = list(features)
    grads = torch.autograd.grad(unimodal_loss, [features[m] for m in names], allow_unused=True)
    surrogate = fused_loss.new_zeros(())
    for m, grad in zip(names, grads, strict=True):
        if grad is not None:
            surrogate = surrogate + (features[m] * grad.detach()).sum()
    return fused_loss + surrogate + (unimodal_loss - surrogate).detach()


def mean_abs_gradient(params: Sequence[nn.Parameter]) -> float:
    """sum over tensors of mean |grad| (the official `audio_grad_sum`); tensors without a gradient count 0."""
    return float(sum(p.grad.abs().mean() for p in params if p.grad is not None))


# -- the method -------------------------------------------------------------------------------------


@register
class DGL(Method):
    name = "dgl"
    Params = DGLParams
    description = "Disentangled Gradient Learning: encoders learn from unimodal losses, the head from the fused"
    display_name = "DGL"
    table_order = 233
    requires = frozenset({"features", "encoders"})
    thesis = ThesisSettings(params={"alpha": 4.0})

    no_dev_set = "measures nothing on data"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.alpha > 0:
            raise ConfigError(f"dgl alpha must be > 0, got {params.alpha}")

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: DGLParams = state.params
        task, labels = state.task, batch.labels
        features = model.encode(batch)  # m -> z_m (B, D_m)
        fused_loss = task.loss(model.fuse({m: z.detach() for m, z in features.items()}), labels)
        unimodal = {m: task.loss(o, labels) for m, o in shared_head_outputs(model, features).items()}
        unimodal_loss = params.alpha * sum(unimodal.values())
        logs: Logs = {"loss_multimodal": float(fused_loss.detach())}
        logs.update({f"loss_unimodal/{m}": float(v.detach()) for m, v in unimodal.items()})
        return disentangled_objective(fused_loss, unimodal_loss, features), logs

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        return {f"grad/{m}": mean_abs_gradient(list(model.encoders[m].parameters())) for m in model.encoders}
