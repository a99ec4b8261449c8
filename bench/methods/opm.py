"""OPM and OPM-GE: On-the-fly Prediction Modulation (Wei, Hu, Du & Wen, "On-the-fly Modulation for
Balanced Multimodal Learning", TPAMI 2024; official code GeWu-Lab/BML_TPAMI2024, code/models/Classifier.py
and code/main.py; docs/methods/opm.md).

Per micro-batch (`loss`), from the train-mode forward pass before any drop:

    s_m   = sum_i softmax(o_m,i)_{y_i}          o_m the half-bias logits z_m W_m^T + b/n (as OGM's score)
    rho_m = s_m / s_other (2 modalities); s_m / min_j s_j ("min", the harness's OGM form) or
            s_m / sum_{j != m} s_j ("others_sum", BalanceBenchmark's OPM form) for 3
    q_m   = clip(q_base (1 + lambda tanh(rho_m - 1)), 0, 1) if rho_m > 1 else 0      drop probability
    with probability p_exe the drop is executed at all; then, per sample i and modality m,
        keep_im ~ Bernoulli(1 - q_m),   theta = sum_m d_m q_m / sum_m d_m   (d_m = width of z_m)
        z~_m,i = keep_im z_m,i / (1 - theta)                (every modality's feature, kept or not)
    loss = CE(f(z~), y)        (the fused output of the dropped features; plain CE when nothing is done)

Modulation is active from epoch `warmup_epochs` on (official: no drop while epoch <= 5) and inside the
harness's modulation window. Evaluation is the plain model (no drop, no 1/(1 - theta)).

OPM-GE adds, after the backward pass and while active, OGM-GE's generalisation enhancement to every
encoder weight gradient g of every modality: g <- k_m g + N(0, (std(g) + 1e-8)^2), with k_m = 1 by default
(GE alone) or OGM's k_m = 1 - tanh(ogm_alpha rho_m) for rho_m > 1 when ogm_alpha > 0 (the official code's
`--use_adam_drop --use_modulation --modulation OGM_GE`). As there, the noise stops after the modulation
end (`modulation_ends` = 80 of 100 epochs: here the last noisy epoch is floor(noise_until * max_epochs),
noise_until = 0.8) while the drop goes on; noise_until = 1.0 puts noise in every active epoch.

The Bernoulli draws and the noise come from state.generator (seeded): runs are reproducible. No dev-set
variant (neither the official code nor the thesis has one): `--dev-set` is refused.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig
from bench.methods.base import Batch, Logs, Method, ThesisSettings, TrainState, register
from bench.methods.ogm import (
    discrepancy_ratios,
    ogm_coefficient,
    scale_gradients_with_noise,
    true_class_probability_sums,
)

RATIO_FORMS = ("min", "others_sum")
STEP_SCORES_KEY = "opm/step_scores"  # OPM-GE: the scores behind this step's OGM coefficients


@dataclass(frozen=True)
class OPMParams:
    q_base: float = 0.5  # official scripts/train_opm.sh and the argparse default (config.py's 0.4 is overridden)
    lam: float = 0.5  # lambda: how far above q_base the drop probability rises with the discrepancy
    p_exe: float = 0.7  # probability that a batch is modulated at all
    warmup_epochs: int = 6  # official main.py: warm_up while epoch <= 5
    ratio_form: str = "min"  # 3 modalities: "min" s_m / min_j s_j; "others_sum" s_m / sum_{j != m} s_j


@dataclass(frozen=True)
class OPMGEParams(OPMParams):
    ogm_alpha: float = 0.0  # 0: GE noise alone; > 0: also OGM's coefficient 1 - tanh(alpha rho) on rho > 1
    include_biases: bool = False  # also the encoder biases (official: conv weights only)
    # GE noise only while epoch <= noise_until * max_epochs: the official `modulation_ends` 80 of its 100
    # epochs (main.py), while the drop goes on; 1.0 = noise in every active epoch (the former reading)
    noise_until: float = 0.8


# -- the formulas ------------------------------------------------------------------------------------


def opm_ratios(scores: Mapping[str, float], form: str = "min") -> dict[str, float]:
    """rho_m: s_m / s_other for two modalities; for more, s_m / min_j s_j or s_m / sum_{j != m} s_j."""
    if form == "min" or len(scores) == 2:
        return discrepancy_ratios(scores)
    if form == "others_sum":
        total = sum(scores.values())
        return {m: s / max(total - s, 1e-30) for m, s in scores.items()}
    raise ConfigError(f"unknown OPM ratio form {form!r}; choose from {', '.join(RATIO_FORMS)}")


def noise_epoch(epoch: int, max_epochs: int, noise_until: float) -> bool:
    """Whether GE noise is added in this (0-based) epoch: epoch <= floor(noise_until * max_epochs), the
    official `modulation_starts <= epoch <= modulation_ends` with modulation_ends = 80 of 100 epochs."""
    return epoch <= math.floor(noise_until * max_epochs + 1e-9)


def drop_probability(rho: float, q_base: float, lam: float) -> float:
    """q = clip(q_base (1 + lam tanh(relu(rho - 1))), 0, 1) when rho > 1, else 0: only a dominant modality
    is dropped, with at least q_base (a jump at rho = 1) and at most q_base (1 + lam)."""
    excess = math.tanh(max(rho - 1.0, 0.0))
    if not excess > 0:
        return 0.0
    return min(max(q_base * (1.0 + lam * excess), 0.0), 1.0)


def drop_probabilities(ratios: Mapping[str, float], q_base: float, lam: float) -> dict[str, float]:
    """q_m for every modality. The weakest modality has rho <= 1, so q = 0 for at least one: every sample
    keeps a modality, and the official code's removal of samples with every modality dropped never fires."""
    return {m: drop_probability(rho, q_base, lam) for m, rho in ratios.items()}


def feature_scale_theta(probabilities: Mapping[str, float], widths: Mapping[str, int]) -> float:
    """theta = sum_m d_m q_m / sum_m d_m, the width-weighted mean drop probability (< 1 as some q_m = 0)."""
    total = sum(widths[m] for m in probabilities)
    return sum(widths[m] * q for m, q in probabilities.items()) / total


def draw_drops(probabilities: Mapping[str, float], batch_size: int, p_exe: float,
               generator: torch.Generator) -> dict[str, Tensor] | None:
    """None when the drop is not executed (probability 1 - p_exe); else m -> keep mask (B,) float, 1 = kept,
    each sample's m kept with probability 1 - q_m. Draws on the generator's device, in modality order."""
    device = generator.device
    executed = float(torch.rand((), generator=generator, device=device)) >= 1.0 - p_exe
    if not executed:
        return None
    return {m: (torch.rand(batch_size, generator=generator, device=device) >= q).float()
            for m, q in probabilities.items()}


def drop_features(features: Mapping[str, Tensor], keep: Mapping[str, Tensor], theta: float) -> dict[str, Tensor]:
    """z~_m = keep_m z_m / (1 - theta): features (B, d_m), keep (B,) -> (B, d_m) per modality."""
    return {m: z * keep[m].to(z.dtype).unsqueeze(1) / (1.0 - theta) for m, z in features.items()}


# -- the methods ------------------------------------------------------------------------------------


class OPMBase(Method):
    """OPM's hooks; OPM-GE adds the gradient noise in `after_backward`."""

    adds_noise: ClassVar[bool] = False
    requires = frozenset({"features", "modality_outputs"})

    no_dev_set = "its scores come from each training batch"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        checks = {"q_base": 0.0 <= params.q_base <= 1.0, "p_exe": 0.0 <= params.p_exe <= 1.0,
                  "lam": params.lam >= 0.0, "warmup_epochs": params.warmup_epochs >= 0}
        bounds = {"q_base": "in [0, 1]", "p_exe": "in [0, 1]", "lam": ">= 0", "warmup_epochs": ">= 0"}
        for name, ok in checks.items():
            if not ok:
                raise ConfigError(f"{self.name}: {name} must be {bounds[name]}, got {getattr(params, name)}")
        if params.ratio_form not in RATIO_FORMS:
            raise ConfigError(f"{self.name}: unknown ratio_form {params.ratio_form!r}; "
                              f"choose from {', '.join(RATIO_FORMS)}")

    @staticmethod
    def active(state: TrainState) -> bool:
        """Past the warm-up and inside the modulation window."""
        return state.epoch >= state.params.warmup_epochs and state.in_window

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params = state.params
        out = model(batch)  # undropped: features z_m and the half-bias logits behind the scores
        scores = {m: float(s) for m, s in true_class_probability_sums(out.modality_logits, batch.labels).items()}
        ratios = opm_ratios(scores, params.ratio_form)
        active = self.active(state)
        probabilities = drop_probabilities(ratios, params.q_base, params.lam) if active else dict.fromkeys(ratios, 0.0)
        keep = draw_drops(probabilities, batch.size, params.p_exe, state.generator) if active else None
        logits, theta = out.logits, 0.0
        if keep is not None:
            widths = {m: int(z.shape[1]) for m, z in out.features.items()}
            theta = feature_scale_theta(probabilities, widths)
            logits = model.fuse(drop_features(out.features, keep, theta))
        logs: Logs = {"in_window": float(state.in_window), "active": float(active),
                      "drop_executed": float(keep is not None), "theta": theta}
        for m in ratios:
            logs[f"score/{m}"] = scores[m]
            logs[f"ratio/{m}"] = ratios[m]
            logs[f"drop_prob/{m}"] = probabilities[m]
            logs[f"dropped/{m}"] = 0.0 if keep is None else 1.0 - float(keep[m].mean())  # share of the batch
        if self.adds_noise:
            self.remember_scores(scores, state)
        return state.task.loss(logits, batch.labels), logs

    @staticmethod
    def remember_scores(scores: Mapping[str, float], state: TrainState) -> None:
        """The step's scores for OGM's coefficient: summed over its micro-batches."""
        sums = state.scratch.setdefault(STEP_SCORES_KEY, {})
        for m, s in scores.items():
            sums[m] = sums.get(m, 0.0) + s


@register
class OPM(OPMBase):
    name = "opm"
    Params = OPMParams
    description = "On-the-fly Prediction Modulation: drop the dominant modality's feature with a dynamic probability"
    display_name = "OPM"
    table_order = 130
    # Official scripts/train_opm.sh and main.py: q_base 0.5, lambda 0.5, p_exe 0.7, no drop while epoch <= 5,
    # then in every epoch to the end.
    thesis = ThesisSettings(params={"q_base": 0.5, "lam": 0.5, "p_exe": 0.7, "warmup_epochs": 6},
                            window=(0, -1))


@register
class OPMGE(OPMBase):
    name = "opm_ge"
    Params = OPMGEParams
    adds_noise = True
    requires = frozenset({"features", "modality_outputs", "encoders"})
    description = "OPM plus OGM-GE's generalisation enhancement: Gaussian noise on every encoder gradient"
    display_name = "OPM-GE"
    table_order = 140
    thesis = ThesisSettings(params={"q_base": 0.5, "lam": 0.5, "p_exe": 0.7, "warmup_epochs": 6, "ogm_alpha": 0.0,
                                    "noise_until": 0.8}, window=(0, -1))

    def validate(self, cfg: RunConfig, params: Any) -> None:
        super().validate(cfg, params)
        if params.ogm_alpha < 0:
            raise ConfigError(f"{self.name}: ogm_alpha must be >= 0, got {params.ogm_alpha}")
        if not 0.0 <= params.noise_until <= 1.0:
            raise ConfigError(f"{self.name}: noise_until must be in [0, 1], got {params.noise_until}")

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        params: OPMGEParams = state.params
        scores = state.scratch.pop(STEP_SCORES_KEY, None)
        if scores is None:
            raise RuntimeError("no scores for this step: `loss` must run before `after_backward`")
        active = self.active(state) and noise_epoch(state.epoch, state.cfg.max_epochs, params.noise_until)
        ratios = discrepancy_ratios(scores)  # OGM's own ratio (s_m / min_j s_j for three modalities)
        logs: Logs = {}
        for m in scores:
            coeff = ogm_coefficient(ratios[m], params.ogm_alpha) if active and params.ogm_alpha > 0 else 1.0
            sigmas = (scale_gradients_with_noise(model.encoder_parameters(m, params.include_biases), coeff,
                                                 state.generator) if active else [])
            logs[f"coeff/{m}"] = coeff
            logs[f"sigma/{m}"] = sum(sigmas) / len(sigmas) if sigmas else 0.0  # 0: no noise added
        return logs
