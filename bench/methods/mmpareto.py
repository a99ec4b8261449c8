"""MMPareto: Pareto integration of the multimodal and the unimodal gradients on each encoder (Wei & Hu,
ICML 2024; official code GeWu-Lab/MMPareto_ICML2024, code/MMPareto.py and code/min_norm_solvers.py;
docs/methods/mmpareto.md).

The run's model gets one auxiliary head per modality, h_m = Linear(out_m -> K), trained with its own
unimodal loss L_m = loss(h_m(z_m), y) beside the multimodal loss L_mm = loss(f(z), y): cross-entropy, or
in regression the first published regression form, KAN-MCP's (Luo et al., "Towards Explainable Fusion and
Balanced Learning in Multimodal Sentiment Analysis", ACM MM 2025; code
LuoMSen/KAN-MCP, train_mosi.py and train_mosei.py): L_mm = MSE, L_m = L1, the objective L_mm + a sum_m L_m
with a = weight1 (0.1 MOSI, 1 MOSEI) and the magnitude reference |g_mm + a g_u| below
(`regression_form = "ours"`: every loss the task's, a = 1). Per optimizer step, on the encoder
parameters of every modality m (all of them, biases included, as the official code):

    g_mm = dL_mm / d theta_m,  g_u = dL_m / d theta_m        (the step's mean over its micro-batches)
    cos  = <g_mm, g_u> / (|g_mm| |g_u|)                       over the whole encoder (all its tensors)
    cos > 0:  w_mm = w_u = 1/2                               no conflict
    else:     w_mm = c, w_u = 1 - c,  c = argmin_{c in [0,1]} |c g_mm + (1 - c) g_u|^2   (two-task MGDA)
              = (<g_u,g_u> - <g_mm,g_u>) / |g_mm - g_u|^2,  0.999 / 0.001 at the solver's edge cases
    per parameter tensor t:  d_t = 2 (w_mm g_mm,t + w_u g_u,t),  u_t = g_mm,t + g_u,t
                              g_t <- gamma * max(|u_t| / |d_t|, 1) * d_t           (gamma = 1.5)
    (u_t = g_mm,t + a g_u,t in KAN-MCP's regression form)

The heads keep their plain gradients (the fusion head from L_mm, h_m from L_m). Outside the modulation
window an encoder gets the plain sum g_mm + g_u.

How: `loss` runs the encoders once, then takes the heads on detached copies of the features z_m.
autograd.grad gives dL_mm/dz and dL_m/dz_m at the head level, and two vector-Jacobian products through
encoder m give g_mm and g_u (two encoder backward passes in all, the least two separate gradients need).
These are summed in `state.scratch`; the objective returned to the loop reaches only the heads, so the
loop's backward gives the heads their gradients (and accumulates them over micro-batches as usual) and
`after_backward` writes every encoder gradient from the sums. The loop keeps gradient accumulation,
the non-finite check, every optimizer and the schedules: no `owns_step` needed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import BuildContext, Logs, Method, ThesisSettings, TrainState, check_choices, register
from bench.methods.heads import UnimodalHeads
from bench.recipes import recipe as recipe_block

STEP_KEY = "mmpareto/step"  # the step's summed per-encoder gradients (StepGradients)
EDGE_HIGH, EDGE_LOW = 0.999, 0.001  # the official solver's weights when the minimum sits at an end


REGRESSION_FORMS = ("kan_mcp", "ours")
KAN_MCP_TASKS = ("regression",)  # the task KAN-MCP's form is defined for (its losses are MSE / L1 of scores)


@dataclass(frozen=True)
class MMParetoParams:
    gamma: float = 1.5  # the official code's magnitude factor on every integrated encoder gradient
    rescale: bool = True  # the official magnitude step max(|g_mm + g_u| / |d|, 1); False: d alone (ours)
    # regression: "kan_mcp" (KAN-MCP's train_mosi.py / train_mosei.py, the first published form): L_mm = MSE,
    # L_m = L1, objective L_mm + w sum_m L_m, magnitude reference |g_mm + w g_u|; "ours": every loss the
    # task's, weight 1 (the harness's former form)
    regression_form: str = "kan_mcp"
    regression_unimodal_weight: float = 0.1  # KAN-MCP's weight1: 0.1 on MOSI, 1.0 on MOSEI (bench/recipes.toml)


# -- the formulas ------------------------------------------------------------------------------------


def min_norm_weight(v11: float, v12: float, v22: float) -> float:
    """c in [0, 1] minimising |c x1 + (1 - c) x2|^2, from <x1,x1>, <x1,x2>, <x2,x2> (the official solver).

    The minimum sits at x1's end (the official code returns 0.999) when <x1,x2> >= <x1,x1>, at x2's end
    (0.001) when <x1,x2> >= <x2,x2>, else at c = (<x2,x2> - <x1,x2>) / |x1 - x2|^2.
    """
    if v12 >= v11:
        return EDGE_HIGH
    if v12 >= v22:
        return EDGE_LOW
    return (v22 - v12) / (v11 + v22 - 2.0 * v12)


@dataclass(frozen=True)
class ParetoWeights:
    multimodal: float  # w_mm
    unimodal: float  # w_u
    cos: float  # cosine of g_mm and g_u (0 when either is zero)
    conflict: bool  # not cos > 0: the min-norm weights were used


def pareto_weights(v11: float, v12: float, v22: float) -> ParetoWeights:
    """The weights of g_mm (x1) and g_u (x2) from their inner products: 1/2 each unless they conflict."""
    cos = v12 / math.sqrt(v11 * v22) if v11 > 0 and v22 > 0 else 0.0
    if cos > 0:  # the official test is a strict `> 0`
        return ParetoWeights(0.5, 0.5, cos, False)
    c = min_norm_weight(v11, v12, v22)
    return ParetoWeights(c, 1.0 - c, cos, True)


def inner_products(first: Sequence[Tensor], second: Sequence[Tensor]) -> tuple[float, float, float]:
    """<a,a>, <a,b>, <b,b> over the concatenation of the tensors of a and of b (float64 sums)."""
    v11 = v12 = v22 = 0.0
    for a, b in zip(first, second, strict=True):
        a64, b64 = a.detach().double().flatten(), b.detach().double().flatten()
        v11 += float(a64 @ a64)
        v12 += float(a64 @ b64)
        v22 += float(b64 @ b64)
    return v11, v12, v22


def integrate_gradients(multimodal: Sequence[Tensor], unimodal: Sequence[Tensor], weights: ParetoWeights,
                        gamma: float, rescale: bool = True, unimodal_weight: float = 1.0) -> list[Tensor]:
    """Per tensor: gamma * max(|g_mm + a g_u| / |d|, 1) * d with d = 2 (w_mm g_mm + w_u g_u).

    a = `unimodal_weight`, the unimodal losses' weight in the objective whose gradient is the reference
    (1 in the official code; KAN-MCP's weight1 in its regression form). `rescale=False` drops the max(...)
    factor. A zero d stays zero (the official code would divide by 0).
    """
    combined = []
    for g_mm, g_u in zip(multimodal, unimodal, strict=True):  # each: one parameter's shape
        direction = 2.0 * weights.multimodal * g_mm + 2.0 * weights.unimodal * g_u
        if rescale:
            direction_norm = float(torch.linalg.vector_norm(direction))
            uniform_norm = float(torch.linalg.vector_norm(g_mm + unimodal_weight * g_u))
            if direction_norm > 0 and uniform_norm / direction_norm > 1.0:
                direction = direction * (uniform_norm / direction_norm)
        combined.append(gamma * direction)
    return combined


# -- the model: the run's model plus one unimodal head per modality ---------------------------------------


WithUnimodalHeads = UnimodalHeads  # the shared wrapper (bench.methods.heads); the old name kept


# -- the step's gradients ---------------------------------------------------------------------------------


@dataclass
class StepGradients:
    """Per modality, the encoder gradients of L_mm and of L_m summed over the step's micro-batches."""

    multimodal: dict[str, list[Tensor]] = field(default_factory=dict)
    unimodal: dict[str, list[Tensor]] = field(default_factory=dict)
    micro_batches: int = 0

    def add(self, modality: str, multimodal: Sequence[Tensor], unimodal: Sequence[Tensor]) -> None:
        if modality not in self.multimodal:
            self.multimodal[modality] = [g.clone() for g in multimodal]
            self.unimodal[modality] = [g.clone() for g in unimodal]
            return
        for total, g in zip(self.multimodal[modality], multimodal, strict=True):
            total.add_(g)
        for total, g in zip(self.unimodal[modality], unimodal, strict=True):
            total.add_(g)

    def means(self, modality: str) -> tuple[list[Tensor], list[Tensor]]:
        """The step's mean gradients (the loop divides each micro-batch's loss by the group size)."""
        n = max(self.micro_batches, 1)
        return [g / n for g in self.multimodal[modality]], [g / n for g in self.unimodal[modality]]


def kan_mcp_losses(fused: Tensor, unimodal: Mapping[str, Tensor], targets: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """KAN-MCP's regression losses: L_mm = MSE(f, y) (train_mosi.py's MSELoss on the logits), L_m = L1(h_m, y)
    (modules/mib.py's L1Loss on each unimodal decoder; its information-bottleneck KL term is the model's, not
    MMPareto's, and left out). fused, unimodal[m]: (B, 1); targets: (B,)."""
    y = targets.view(-1).to(fused.dtype)
    losses = {m: torch.nn.functional.l1_loss(out.view(-1), y) for m, out in unimodal.items()}
    return torch.nn.functional.mse_loss(fused.view(-1), y), losses


def encoder_parameters(model: nn.Module, modality: str) -> list[nn.Parameter]:
    """Every trainable parameter of modality m's encoder (weights and biases, as the official code)."""
    return [p for p in model.encoders[modality].parameters() if p.requires_grad]


def vector_jacobian(output: Tensor, params: Sequence[nn.Parameter], grad_output: Tensor) -> list[Tensor]:
    """d<output, grad_output>/d params (zeros for a parameter the output does not use)."""
    grads = torch.autograd.grad(output, list(params), grad_outputs=grad_output, retain_graph=True,
                                allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


# -- the method -------------------------------------------------------------------------------------------


@register
class MMPareto(Method):
    name = "mmpareto"
    Params = MMParetoParams
    description = "Pareto integration of the multimodal and unimodal gradients on every encoder"
    display_name = "MMPareto"
    table_order = 120
    tasks = ("classification", "regression")
    requires = frozenset({"features", "encoders"})
    # Official code/MMPareto.py: gamma 1.5, integration at every step of every epoch.
    thesis = ThesisSettings(params={"gamma": 1.5, "rescale": True}, window=(0, -1))
    # The official recipe (SGD lr 2e-3, momentum 0.9, wd 1e-4, a StepLR never stepped) is a preset row's
    # optimizer fields (bench.presets, table-modern); the label names that row, the parameters stay.
    variants = {"official_recipe": {}}

    @classmethod
    def paper_fields(cls, recipe: str, profile: str) -> dict[str, Any]:
        """KAN-MCP's unimodal weight of the dataset (bench/recipes.toml [<recipe>.methods.mmpareto])."""
        weight = recipe_block(recipe).method("mmpareto").get("regression_unimodal_weight")
        return {} if weight is None else {"method_params": {"regression_unimodal_weight": float(weight)}}

    no_dev_set = "computes no ratio or score from the data"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.gamma > 0:
            raise ConfigError(f"mmpareto: gamma must be > 0, got {params.gamma}")
        check_choices("mmpareto", params, {"regression_form": REGRESSION_FORMS})
        if not params.regression_unimodal_weight > 0:
            raise ConfigError(f"mmpareto: regression_unimodal_weight must be > 0, got "
                              f"{params.regression_unimodal_weight}")

    @staticmethod
    def uses_kan_mcp(state: TrainState) -> bool:
        """Whether the run takes KAN-MCP's form: asked for, on a task the form is defined for."""
        return state.params.regression_form == "kan_mcp" and state.task.name in KAN_MCP_TASKS

    @classmethod
    def unimodal_weight(cls, state: TrainState) -> float:
        """The unimodal losses' weight a: KAN-MCP's weight1 in its regression form, else 1 (official)."""
        return state.params.regression_unimodal_weight if cls.uses_kan_mcp(state) else 1.0

    def build(self, ctx: BuildContext) -> nn.Module:
        return UnimodalHeads(ctx.model(), ctx.spec.modalities, ctx.spec.num_classes)

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        task, labels = state.task, batch.labels
        features = model.encode(batch)  # m -> z_m (B, out_m), graph through the encoders
        heads_in = {m: z.detach().requires_grad_() for m, z in features.items()}  # leaves at the heads
        fused_out = model.fuse(heads_in)  # (B, K), or (B, 1) in regression
        unimodal_out = {m: model.unimodal_heads[m](z) for m, z in heads_in.items()}
        weight = self.unimodal_weight(state)
        if self.uses_kan_mcp(state):
            fused_loss, unimodal_losses = kan_mcp_losses(fused_out, unimodal_out, labels)
        else:
            fused_loss = task.loss(fused_out, labels)
            unimodal_losses = {m: task.loss(out, labels) for m, out in unimodal_out.items()}
        modalities = list(features)
        # head level: dL_mm/dz_m for every m, dL_m/dz_m
        fused_dz = torch.autograd.grad(fused_loss, [heads_in[m] for m in modalities], retain_graph=True)
        step = state.scratch.setdefault(STEP_KEY, StepGradients())
        step.micro_batches += 1
        logs: Logs = {"loss_multimodal": float(fused_loss.detach())}
        for modality, dz_fused in zip(modalities, fused_dz, strict=True):
            (dz_unimodal,) = torch.autograd.grad(unimodal_losses[modality], [heads_in[modality]],
                                                 retain_graph=True)
            params = encoder_parameters(model, modality)
            z = features[modality]
            step.add(modality, vector_jacobian(z, params, dz_fused), vector_jacobian(z, params, dz_unimodal))
            logs[f"loss_unimodal/{modality}"] = float(unimodal_losses[modality].detach())
        # The official objective L_mm + a sum_m L_m (a = 1; KAN-MCP's weight1 in its regression form); its graph
        # stops at the detached features, so the loop's backward reaches the heads only and after_backward
        # writes the encoder gradients.
        return fused_loss + weight * sum(unimodal_losses.values()), logs

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        step: StepGradients | None = state.scratch.pop(STEP_KEY, None)
        if step is None:
            raise RuntimeError("no encoder gradients for this step: `loss` must run before `after_backward`")
        params: MMParetoParams = state.params
        in_window = state.in_window
        weight = self.unimodal_weight(state)
        logs: Logs = {"in_window": float(in_window)}
        for modality in step.multimodal:
            g_mm, g_u = step.means(modality)
            weights = pareto_weights(*inner_products(g_mm, g_u))
            if in_window:
                combined = integrate_gradients(g_mm, g_u, weights, params.gamma, params.rescale, weight)
            else:  # the plain objective's gradient: the uniform baseline's
                combined = [a + weight * b for a, b in zip(g_mm, g_u, strict=True)]
            for param, grad in zip(encoder_parameters(model, modality), combined, strict=True):
                param.grad = grad
            applied = weights if in_window else ParetoWeights(0.5, 0.5, weights.cos, weights.conflict)
            logs[f"weight_multimodal/{modality}"] = applied.multimodal
            logs[f"weight_unimodal/{modality}"] = applied.unimodal
            logs[f"cos/{modality}"] = weights.cos
            logs[f"conflict/{modality}"] = float(weights.conflict)
        return logs

    @torch.no_grad()
    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        """The unimodal heads on the validation split (the official code reports their accuracy)."""
        was_training = model.training
        model.eval()
        losses: dict[str, float] = {}
        correct: dict[str, float] = {}
        count = 0
        try:
            for batch in state.batches("valid"):
                for modality, z in model.encode(batch).items():
                    out = model.unimodal_heads[modality](z)
                    batch_loss = float(state.task.loss(out, batch.labels)) * batch.size
                    losses[modality] = losses.get(modality, 0.0) + batch_loss
                    hits = float(state.task.hits(out, batch.labels).sum())  # class or sign right
                    correct[modality] = correct.get(modality, 0.0) + hits
                count += batch.size
        finally:
            model.train(was_training)
        logs: Logs = {f"valid:unimodal_loss/{m}": total / max(count, 1) for m, total in losses.items()}
        logs.update({f"valid:unimodal_acc/{m}": 100.0 * hits / max(count, 1) for m, hits in correct.items()})
        return logs
