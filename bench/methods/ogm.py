"""OGM, OGM-GE and ACC: gradient modulation from per-modality discrepancy ratios (methods.md
"OGM, OGM-GE, ACC"; thesis 5.2.1; Peng et al., CVPR 2022).

Per optimizer step, after the loop's `loss.backward()`:

    s_m   = sum_i softmax(o_m,i)_{y_i}             o_m the half-bias logits z_m W_m^T + b/n (detached)
    rho_m = s_m / s_other          (2 modalities)
    rho_m = s_m / min_j s_j        (n modalities, BalanceBenchmark's form)
    OGM:    k_m = 1 - tanh(alpha * rho_m) if rho_m > 1 else 1          form "official" (default)
            k_m = 1 - tanh(alpha * relu(rho_m - 1))                    form "shifted"
    ACC:    k_m = 1 + tanh(alpha * rho_dominant) for every m but the dominant (argmax rho), which keeps 1
    inside the window, every encoder parameter gradient g of m:  g <- k_m * g
    OGM-GE: g <- k_m * g + eps,  eps ~ N(0, sigma^2), sigma = std(unmodulated g) + 1e-8, for every modality.

Scores come from the step's own micro-batches (summed in `state.scratch` by `loss`), or, in the dev-set
variant, from the whole dev split every `ratio_every` optimizer steps, reused in between.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig
from bench.methods.base import Batch, Logs, Method, ThesisSettings, TrainState, register

if TYPE_CHECKING:
    from bench.models import LateFusionModel

FORMS = ("official", "shifted")
STEP_SCORES_KEY = "ogm/step_scores"  # modality -> running sum of s_m over the step's micro-batches
DEV_SCORES_KEY = "ogm/dev_scores"  # modality -> s_m on the dev split, from the last refresh
NOISE_STD_FLOOR = 1e-8  # added to the gradient's std, as in the official code


@dataclass(frozen=True)
class OGMParams:
    alpha: float = 0.5
    form: str = "official"  # "official": 1 - tanh(alpha rho) if rho > 1 else 1; "shifted": relu(rho - 1)
    include_biases: bool = False  # also modulate encoder biases (methods.md: weights only by default)


@dataclass(frozen=True)
class ACCParams:
    alpha: float = 0.5
    include_biases: bool = False


# -- the formulas ------------------------------------------------------------------------------------


def true_class_probability_sums(modality_logits: Mapping[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
    """s_m = sum_i softmax(o_m,i)_{y_i} for every modality: 0-dim tensors (no gradient)."""
    sums = {}
    for modality, logits in modality_logits.items():  # logits: (B, K)
        probs = torch.softmax(logits.detach().float(), dim=1)  # (B, K)
        sums[modality] = probs.gather(1, labels.view(-1, 1)).sum()  # ()
    return sums


def discrepancy_ratios(scores: Mapping[str, float]) -> dict[str, float]:
    """rho_m: s_m / s_other for two modalities, s_m / min_j s_j for more."""
    modalities = list(scores)
    ratios = {}
    for modality in modalities:
        if len(modalities) == 2:
            denominator = next(scores[m] for m in modalities if m != modality)
        else:
            denominator = min(scores.values())
        # probabilities are > 0, but a sum can underflow to 0 with extreme logits
        ratios[modality] = scores[modality] / max(denominator, 1e-30)
    return ratios


def ogm_coefficient(rho: float, alpha: float, form: str = "official") -> float:
    """k for one modality: damps only a modality whose ratio exceeds 1."""
    if form == "official":
        return 1.0 - math.tanh(alpha * rho) if rho > 1.0 else 1.0
    if form == "shifted":
        return 1.0 - math.tanh(alpha * max(rho - 1.0, 0.0))
    raise ConfigError(f"unknown OGM form {form!r}; choose from {', '.join(FORMS)}")


def dominant_modality(ratios: Mapping[str, float]) -> str:
    """argmax rho (the first in modality order on a tie)."""
    return max(ratios, key=lambda m: ratios[m])


def acc_coefficients(ratios: Mapping[str, float], alpha: float) -> dict[str, float]:
    """ACC: every modality but the dominant one is accelerated by 1 + tanh(alpha * rho_dominant)."""
    dominant = dominant_modality(ratios)
    boost = 1.0 + math.tanh(alpha * ratios[dominant])
    return {m: (1.0 if m == dominant else boost) for m in ratios}


# -- gradient edits ---------------------------------------------------------------------------------


def scale_gradients(params: Iterable[nn.Parameter], coeff: float) -> None:
    """g <- coeff * g for every parameter that has a gradient."""
    for param in params:
        if param.grad is not None:
            param.grad.mul_(coeff)


def gradient_std(grad: Tensor) -> float:
    """std of one gradient tensor (unbiased, as torch's default) plus the floor."""
    std = float(grad.float().std()) if grad.numel() > 1 else 0.0
    return std + NOISE_STD_FLOOR


def scale_gradients_with_noise(params: Iterable[nn.Parameter], coeff: float,
                               generator: torch.Generator) -> list[float]:
    """OGM-GE: g <- coeff * g + N(0, sigma^2), sigma from the unmodulated g; returns the sigmas used."""
    sigmas = []
    for param in params:
        if param.grad is None:
            continue
        grad = param.grad
        sigma = gradient_std(grad)  # before scaling: the noise restores the unmodulated gradient's scale
        noise = torch.randn(grad.shape, generator=generator, device=grad.device, dtype=grad.dtype)
        grad.mul_(coeff).add_(noise, alpha=sigma)
        sigmas.append(sigma)
    return sigmas


# -- where the scores come from ---------------------------------------------------------------------


def accumulate_step_scores(state: TrainState, scores: Mapping[str, Tensor | float]) -> None:
    """Add one micro-batch's s_m to the current step's sums (a step may span step_every micro-batches)."""
    sums = state.scratch.setdefault(STEP_SCORES_KEY, {})
    for modality, score in scores.items():
        sums[modality] = sums.get(modality, 0.0) + score


def pop_step_scores(state: TrainState) -> dict[str, float]:
    """The current step's score sums as floats, and reset them for the next step."""
    sums = state.scratch.pop(STEP_SCORES_KEY, None)
    if not sums:
        raise RuntimeError("no batch scores for this step: `loss` must run before `after_backward`")
    return {m: float(s) for m, s in sums.items()}


@torch.no_grad()
def dev_split_scores(model: nn.Module, state: TrainState) -> dict[str, float]:
    """s_m summed over the whole dev split, model in eval mode, no gradient."""
    was_training = model.training
    model.eval()
    totals: dict[str, float] = {}
    try:
        for batch in state.batches("dev"):
            out = model(batch)
            for modality, score in true_class_probability_sums(out.modality_logits, batch.labels).items():
                totals[modality] = totals.get(modality, 0.0) + float(score)
    finally:
        model.train(was_training)
    return totals


def step_scores(model: nn.Module, state: TrainState) -> dict[str, float]:
    """This step's s_m: the step's micro-batches, or the dev split (refreshed every ratio_every steps)."""
    if not state.cfg.dev_set:
        return pop_step_scores(state)
    if state.step % state.cfg.ratio_every == 0 or DEV_SCORES_KEY not in state.scratch:
        state.scratch[DEV_SCORES_KEY] = dev_split_scores(model, state)
    return dict(state.scratch[DEV_SCORES_KEY])


# -- the methods ------------------------------------------------------------------------------------


class RatioModulation(Method):
    """Shared hooks of OGM, OGM-GE and ACC; subclasses give the coefficients (and whether to add noise)."""

    has_dev_set_variant = True
    adds_noise: ClassVar[bool] = False
    requires = frozenset({"encoders", "modality_outputs"})
    # Thesis 6.2.5: alpha 0.5, modulation in epochs 0..4, the dev-set ratio every 5 steps.
    thesis = ThesisSettings(params={"alpha": 0.5}, window=(0, 4), dev_ratio_every=5)

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if not params.alpha > 0:
            raise ConfigError(f"{self.name}: alpha must be > 0, got {params.alpha}")

    def coefficients(self, ratios: Mapping[str, float], params: Any) -> dict[str, float]:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        out = model(batch)
        if not state.cfg.dev_set:
            accumulate_step_scores(state, true_class_probability_sums(out.modality_logits, batch.labels))
        return nn.functional.cross_entropy(out.logits, batch.labels), {}

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        scores = step_scores(model, state)
        ratios = discrepancy_ratios(scores)
        in_window = state.in_window
        coeffs = self.coefficients(ratios, state.params) if in_window else {m: 1.0 for m in ratios}
        logs: Logs = {"in_window": float(in_window)}
        for modality in ratios:
            logs[f"score/{modality}"] = scores[modality]
            logs[f"ratio/{modality}"] = ratios[modality]
            logs[f"coeff/{modality}"] = coeffs[modality]
        logs.update(self.modulate(model, coeffs, state, in_window))
        return logs

    def modulate(self, model: LateFusionModel, coeffs: Mapping[str, float], state: TrainState,
                 in_window: bool) -> Logs:
        """Edit encoder gradients inside the window; the head and (by default) the biases stay untouched."""
        include_biases = state.params.include_biases
        logs: Logs = {}
        for modality, coeff in coeffs.items():
            params = model.encoder_parameters(modality, include_biases)
            if not self.adds_noise:
                if in_window:
                    scale_gradients(params, coeff)
                continue
            sigmas = scale_gradients_with_noise(params, coeff, state.generator) if in_window else []
            # the std of the noise actually added: 0 outside the window
            logs[f"sigma/{modality}"] = sum(sigmas) / len(sigmas) if sigmas else 0.0
        return logs


class OGMBase(RatioModulation):
    Params = OGMParams

    def validate(self, cfg: RunConfig, params: Any) -> None:
        super().validate(cfg, params)
        if params.form not in FORMS:
            raise ConfigError(f"{self.name}: unknown form {params.form!r}; choose from {', '.join(FORMS)}")

    def coefficients(self, ratios: Mapping[str, float], params: Any) -> dict[str, float]:
        return {m: ogm_coefficient(rho, params.alpha, params.form) for m, rho in ratios.items()}


@register
class OGM(OGMBase):
    name = "ogm"
    description = "On-the-fly Gradient Modulation: damp the dominant modality's encoder gradients"
    display_name = "OGM"
    table_order = 60


@register
class OGMGE(OGMBase):
    name = "ogm_ge"
    adds_noise = True
    description = "OGM plus Generalization Enhancement: Gaussian noise on every encoder gradient"
    display_name = "OGM-GE"
    table_order = 70


@register
class ACC(RatioModulation):
    name = "acc"
    Params = ACCParams
    description = "OGM variant (thesis eq. 5.4): accelerate the weak modalities by 1 + tanh(alpha rho_dom)"
    display_name = "ACC"
    table_order = 80

    def coefficients(self, ratios: Mapping[str, float], params: Any) -> dict[str, float]:
        return acc_coefficients(ratios, params.alpha)
