"""InfoReg: information acquisition regulation in the prime learning window (Huang, Wei, Yang and Hu,
CVPR 2025, "Adaptive Unimodal Regulation for Balanced Multimodal Information Acquisition"; official code
GeWu-Lab/InfoReg_CVPR2025, main.py; docs/methods/inforeg.md).

Per epoch e (`on_epoch_start` / `on_epoch_end`):

    theta_ref_m = every parameter of encoder m at the start of epoch e (the official per-epoch deepcopy)
    k_m         = window_rate(trace_m of epochs 0..e-1)     (1 at epoch 0; see `window_rate`)
    open_m      = k_strong > threshold (0.05)               the prime learning window: the official takes k
                                                            from the strong modality's trace only, for all
    trace_m     = sum over the weight matrices W of encoder m of mean(sum over the epoch's steps of g_W^2)

Per optimizer step (`loss`, then `after_backward`):

    o_m    = z_m W_m^T + b / n                              half-bias logits of the fusion head, live
    L      = CE(f, y) + sum_m CE(o_m, y)                    (unimodal_loss "head", the official objective)
    s_m    = sum_i softmax(o_m,i)_{y_i}                     detached, summed over the step's micro-batches
    lead   = argmax_m s_m, strictly above every other modality (else no modality is regulated)
    gap    = s_lead - mean_{j != lead} s_j                  (two modalities: s_lead - s_other)
    strong = the strong modality: "auto" (ours), argmax_m of s_m summed over every step so far; or a name
    beta   = alpha_lead * exp(tanh(gap)) if open, else 0   alpha_lead = 0.95 when lead is the strong modality,
                                                            0.1 otherwise (official main.py: audio 0.95,
                                                            visual 0.1)
    g     <- g + beta (theta - theta_ref_lead)             every parameter of the leader's encoder: the
                                                            gradient of beta/2 ||theta - theta_ref||^2
    F_m[W] += g_W^2                                         after the regularisation (the stepped gradient)

The run's modulation window (cfg.window_start/end) is not used: the prime learning window replaces it.
Classification only: the scores are true-class probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.config import ConfigError, RunConfig
from bench.methods.base import Batch, Logs, Method, ThesisSettings, TrainState, check_choices, register

if TYPE_CHECKING:
    from bench.models import LateFusionModel

STATE_KEY = "inforeg/state"
STEP_SCORES_KEY = "inforeg/step_scores"
UNIMODAL_LOSSES = ("head", "none")


@dataclass(frozen=True)
class InfoRegParams:
    alpha: float = 0.95  # the strong modality's alpha (official: audio, CREMA-D's information-sufficient one)
    weak_alpha: float = 0.1  # every other modality's alpha (official: visual 0.1); 0.95 = one alpha for all
    alphas: str = ""  # per-modality alphas over both, e.g. "audio=0.95,vision=0.1"
    # the strong modality: "auto" (ours: the highest true-class score summed over every step so far) or a name
    # (the official hard-codes audio)
    strong_modality: str = "auto"
    threshold: float = 0.05  # the window is open while the trace's rate k exceeds this
    span: int = 10  # epochs in the trace's moving average (the official 10, history padded with zeros)
    # whose trace opens the windows: "strong" (official: the strong modality's, for every modality), "own"
    # (each modality its own: the harness's former reading), or a modality name
    window_modality: str = "strong"
    unimodal_loss: str = "head"  # "head": L = CE(f) + sum_m CE(o_m) (official); "none": L = CE(f)


@dataclass
class InfoRegState:
    """What InfoReg keeps between hook calls (state.scratch)."""

    traces: dict[str, list[float]] = field(default_factory=dict)  # m -> trace of every finished epoch
    rates: dict[str, float] = field(default_factory=dict)  # m -> k of the current epoch
    open: dict[str, bool] = field(default_factory=dict)  # m -> window open in the current epoch
    reference: dict[str, list[Tensor]] = field(default_factory=dict)  # m -> encoder parameters at epoch start
    fisher: dict[str, list[Tensor]] = field(default_factory=dict)  # m -> running sum of g^2 per weight matrix
    totals: dict[str, float] = field(default_factory=dict)  # m -> s_m summed over every step so far


# -- the formulas ------------------------------------------------------------------------------------


def window_rate(traces: Sequence[float], span: int = 10) -> float:
    """k = (mean of the last `span` traces - mean of the `span` before the newest) / the first mean.

    The history is padded with `span` zeros in front (the official lists start as ten zeros), so with
    e traces T_0..T_{e-1}: k = (T_{e-1} - T_{e-1-span}) / sum(T_{e-span}..T_{e-1}), missing terms 0. No
    trace yet (epoch 0): 1. A zero mean (no gradient at all) gives 0, a closed window (ours: the
    official code divides by zero there).
    """
    if not traces:
        return 1.0
    padded = [0.0] * span + [float(t) for t in traces]
    newest = sum(padded[-span:]) / span
    previous = sum(padded[-span - 1:-1]) / span
    if newest == 0.0:
        return 0.0
    return (newest - previous) / newest


def fisher_trace(squared_sums: Sequence[Tensor]) -> float:
    """sum over the weight matrices of the mean of their accumulated squared gradients (official form)."""
    return float(sum(float(s.mean()) for s in squared_sums))


def true_class_scores(logits: Mapping[str, Tensor], labels: Tensor) -> dict[str, float]:
    """s_m = sum_i softmax(o_m,i)_{y_i} (a batch sum, as in the official code), detached."""
    scores = {}
    for m, out in logits.items():  # out: (B, K)
        probs = torch.softmax(out.detach().float(), dim=1)  # (B, K)
        scores[m] = float(probs.gather(1, labels.view(-1, 1)).sum())
    return scores


def leading_modality(scores: Mapping[str, float]) -> str | None:
    """The modality strictly ahead of every other one; None on a tie at the top."""
    best = max(scores.values())
    leaders = [m for m, s in scores.items() if s == best]
    return leaders[0] if len(leaders) == 1 else None


def regulation_weights(scores: Mapping[str, float], alphas: Mapping[str, float],
                       open_windows: Mapping[str, bool]) -> dict[str, float]:
    """beta_m: alpha_lead * exp(tanh(s_lead - mean of the others)) for the leader if its window is open;
    0 for every other modality (and for everyone on a tie or a closed window)."""
    betas = {m: 0.0 for m in scores}
    lead = leading_modality(scores)
    if lead is None or not open_windows[lead]:
        return betas
    others = [s for m, s in scores.items() if m != lead]
    gap = scores[lead] - sum(others) / len(others)
    betas[lead] = alphas[lead] * math.exp(math.tanh(gap))
    return betas


def half_bias_logits(model: LateFusionModel, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """o_m = z_m W_m^T + b / n with gradient (into z_m and the head): (B, K) per modality."""
    n = len(model.modalities)
    weight, bias = model.head.weight, model.head.bias
    return {m: features[m] @ weight[:, cols].T + bias / n for m, cols in model.head_slices().items()}


def add_proximal_gradient(params: Sequence[nn.Parameter], reference: Sequence[Tensor], beta: float) -> None:
    """g <- g + beta (theta - theta_ref) for every parameter (a missing gradient counts as 0)."""
    with torch.no_grad():
        for param, ref in zip(params, reference, strict=True):
            pull = beta * (param - ref)
            if param.grad is None:
                param.grad = pull
            else:
                param.grad.add_(pull)


def strong_modality(totals: Mapping[str, float], modalities: Sequence[str], choice: str = "auto") -> str:
    """The strong modality: `choice` when it names one; "auto": the highest summed score (the first in
    modality order on a tie, and before any score)."""
    if choice != "auto":
        return choice
    return max(modalities, key=lambda m: totals.get(m, 0.0))


def window_source(window_modality: str, strong: str) -> str | None:
    """Whose trace opens every window: the strong modality's, a named one's, or None (each its own)."""
    if window_modality == "own":
        return None
    return strong if window_modality == "strong" else window_modality


def modality_alphas(modalities: Sequence[str], strong: str, alpha: float, weak_alpha: float,
                    overrides: str = "") -> dict[str, float]:
    """alpha for the strong modality, weak_alpha for the others (official: audio 0.95, visual 0.1), then
    the "m=value" overrides."""
    defaults = {m: (alpha if m == strong else weak_alpha) for m in modalities}
    return parse_alphas(overrides, modalities, defaults)


def parse_alphas(text: str, modalities: Sequence[str], default: float | Mapping[str, float]) -> dict[str, float]:
    """alpha per modality from "m=value,m=value" (the others keep `default`, one value or one per modality);
    ConfigError when malformed."""
    alphas = {m: (default[m] if isinstance(default, Mapping) else default) for m in modalities}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in modalities:
            raise ConfigError(f"inforeg alphas: {part!r} is not <modality>=<value> for a modality of the run "
                              f"({', '.join(modalities)})")
        try:
            alphas[name] = float(value)
        except ValueError:
            raise ConfigError(f"inforeg alphas: {value!r} is not a number") from None
        if not alphas[name] >= 0:
            raise ConfigError(f"inforeg alphas: {name} must be >= 0, got {alphas[name]}")
    return alphas


# -- the method -------------------------------------------------------------------------------------


@register
class InfoReg(Method):
    name = "inforeg"
    Params = InfoRegParams
    requires = frozenset({"encoders", "features", "linear_head"})
    description = "InfoReg: proximal pull of the leading encoder toward its epoch-start weights in its prime window"
    display_name = "InfoReg"
    table_order = 170
    # The official defaults: alpha 0.95, window threshold 0.05 over a 10-epoch moving average.
    thesis = ThesisSettings(params={"alpha": 0.95, "weak_alpha": 0.1, "threshold": 0.05, "span": 10})

    no_dev_set = "measures on the training batches"

    def validate(self, cfg: RunConfig, params: Any) -> None:
        for name in ("alpha", "weak_alpha"):
            if not getattr(params, name) >= 0:
                raise ConfigError(f"inforeg {name} must be >= 0, got {getattr(params, name)}")
        parse_alphas(params.alphas, cfg.modalities, params.alpha)
        if params.span < 1:
            raise ConfigError(f"inforeg span must be >= 1, got {params.span}")
        for name, extra in (("strong_modality", ("auto",)), ("window_modality", ("strong", "own"))):
            value = getattr(params, name)
            if value not in extra and value not in cfg.modalities:
                raise ConfigError(f"inforeg {name} {value!r} is not {', '.join(extra)} or a modality of the run "
                                  f"({', '.join(cfg.modalities)})")
        check_choices("inforeg", params, {"unimodal_loss": UNIMODAL_LOSSES})

    def _state(self, state: TrainState) -> InfoRegState:
        return state.scratch[STATE_KEY]

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        state.scratch[STATE_KEY] = InfoRegState(traces={m: [] for m in state.cfg.modalities})
        return {}

    def on_epoch_start(self, model: nn.Module, state: TrainState) -> Logs:
        params: InfoRegParams = state.params
        info = self._state(state)
        info.rates = {m: window_rate(info.traces[m], params.span) for m in state.cfg.modalities}
        own = {m: k > params.threshold for m, k in info.rates.items()}
        strong = strong_modality(info.totals, state.cfg.modalities, params.strong_modality)
        source = window_source(params.window_modality, strong)
        info.open = own if source is None else {m: own[source] for m in own}
        with torch.no_grad():
            info.reference = {m: [p.detach().clone() for p in model.encoders[m].parameters()]
                              for m in state.cfg.modalities}
            info.fisher = {m: [torch.zeros_like(p) for p in model.encoder_parameters(m)]
                           for m in state.cfg.modalities}
        logs: Logs = {f"window_rate/{m}": k for m, k in info.rates.items()}
        logs.update({f"in_window/{m}": float(flag) for m, flag in info.open.items()})
        return logs

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        features = model.encode(batch)  # m -> z_m (B, out_m)
        fused = model.fuse(features)  # (B, K)
        unimodal = half_bias_logits(model, features)  # m -> o_m (B, K), live
        sums = state.scratch.setdefault(STEP_SCORES_KEY, {})
        for m, s in true_class_scores(unimodal, batch.labels).items():
            sums[m] = sums.get(m, 0.0) + s
        loss = F.cross_entropy(fused, batch.labels)
        logs: Logs = {}
        if state.params.unimodal_loss == "head":
            for m, out in unimodal.items():
                uni = F.cross_entropy(out, batch.labels)
                loss = loss + uni
                logs[f"unimodal_loss/{m}"] = float(uni.detach())
        return loss, logs

    def after_backward(self, model: nn.Module, state: TrainState) -> Logs:
        info = self._state(state)
        scores = state.scratch.pop(STEP_SCORES_KEY, None)
        if not scores:
            raise RuntimeError("no batch scores for this step: `loss` must run before `after_backward`")
        params: InfoRegParams = state.params
        for m, s in scores.items():
            info.totals[m] = info.totals.get(m, 0.0) + s
        strong = strong_modality(info.totals, state.cfg.modalities, params.strong_modality)
        alphas = modality_alphas(state.cfg.modalities, strong, params.alpha, params.weak_alpha, params.alphas)
        betas = regulation_weights(scores, alphas, info.open)
        for m, beta in betas.items():
            if beta > 0.0:
                add_proximal_gradient(list(model.encoders[m].parameters()), info.reference[m], beta)
        with torch.no_grad():  # the Fisher estimate: squared stepped gradients of the encoder weight matrices
            for m in state.cfg.modalities:
                for total, param in zip(info.fisher[m], model.encoder_parameters(m), strict=True):
                    if param.grad is not None:
                        total.add_(param.grad.detach() ** 2)
        logs: Logs = {f"score/{m}": s for m, s in scores.items()}
        logs.update({f"beta/{m}": b for m, b in betas.items()})
        logs.update({f"strong/{m}": float(m == strong) for m in scores})
        return logs

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        info = self._state(state)
        logs: Logs = {}
        for m in state.cfg.modalities:
            trace = fisher_trace(info.fisher[m])
            info.traces[m].append(trace)
            logs[f"fisher_trace/{m}"] = trace
        return logs
