"""SMV: sample-level modality valuation and re-sampling (Wei, Feng, Wang & Hu, "Enhancing Multimodal
Cooperation via Sample-level Modality Valuation", CVPR 2024; official code
GeWu-Lab/Valuate-and-Enhance-Multimodal-Cooperation, code/sample_level.py, code/modality_level.py,
code/datasets/dataloader.py and code/models/models.py; BalanceBenchmark's balancemm/trainer/Sample_trainer.py,
evaluation/modalitys.py and datasets/__init__.py as a second reading; docs/methods/smv.md).

After each epoch from `warmup - 1` on, every training sample i is valued (model in eval mode): for every
coalition S of modalities the fused prediction with the features z_m of the modalities outside S set to 0
(the official `exec_drop`), v_i(S) = |S| * [prediction right] (the official value 2 of the bimodal whole),
v_i({}) = 0, and each modality's Shapley value

    phi_i,m = sum_{S not holding m} |S|! (n - |S| - 1)! / n! * (v_i(S + m) - v_i(S)).

Sample level: sample i gets k_i,m extra copies that keep only modality m (every other z set to 0):
3 if phi < -0.1, 2 if -0.1 < phi < 0.4, 1 if 0.4 < phi < 1, else 0 (the official dataset's bins).
Modality level: the mean phi_m over a random part_ratio of the samples gives gap_m = 1 - mean phi_m;
int(alpha * |gap_1 - gap_2| * 2/3 * N) samples drawn with replacement get a copy keeping only the modality
with the larger gap.

The next epoch trains on the originals plus the copies. Here the copies travel with their original's
batch: the batch's objective is the mean over its expanded items,

    L = sum_i (l_i + sum_m k_i,m l_i^(m)) / sum_i (1 + sum_m k_i,m),

l_i the task's per-sample loss of the full sample, l_i^(m) that of the copy keeping only m.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bench.batch import Batch
from bench.config import ConfigError, RunConfig
from bench.methods.base import Logs, Method, TrainState, check_choices, register

COUNTS_KEY = "smv/counts"  # (N, n) int64 copies per training row and modality, for the next epoch
EVAL_BATCH = 256


@dataclass(frozen=True)
class SMVParams:
    level: str = "sample"  # "sample" (sample_level.py) | "modality" (modality_level.py)
    warmup: int = 5  # epochs of plain training; re-sampled training from epoch `warmup` (official --warmup)
    # v(S) = |S| * [right] ("count": the official value 2 of the bimodal whole) | [right] ("one": BalanceBenchmark)
    value: str = "count"
    part_ratio: float = 0.2  # modality level: the share of samples whose mean value is used (official)
    alpha: float = 1.0  # modality level: the factor on the gap difference (official --alpha)
    func: str = "linear"  # modality level: "linear" | "tanh" | "square" (the official dataset's options)


# -- the formulas ------------------------------------------------------------------------------------------


def coalitions(modalities: Sequence[str]) -> list[frozenset[str]]:
    """Every non-empty subset of the modalities."""
    return [frozenset(c) for r in range(1, len(modalities) + 1) for c in itertools.combinations(modalities, r)]


def shapley_values(right: Mapping[frozenset[str], Tensor], modalities: Sequence[str],
                   value: str = "count") -> Tensor:
    """phi (B, n) from each coalition's per-sample correctness (B,) bool; v(S) = |S| [right] or [right]."""
    n = len(modalities)

    def v(coalition: frozenset[str]) -> Tensor:
        if not coalition:
            return torch.zeros(next(iter(right.values())).shape, dtype=torch.float64)
        scale = float(len(coalition)) if value == "count" else 1.0
        return scale * right[coalition].double()

    columns = []
    for m in modalities:
        others = [o for o in modalities if o != m]
        phi = torch.zeros_like(v(frozenset()))
        for r in range(len(others) + 1):
            weight = math.factorial(r) * math.factorial(n - r - 1) / math.factorial(n)
            for subset in itertools.combinations(others, r):
                s = frozenset(subset)
                phi = phi + weight * (v(s | {m}) - v(s))
        columns.append(phi)
    return torch.stack(columns, dim=1)  # (B, n)


def sample_copies(phi: Tensor) -> Tensor:
    """The official bins, per entry of phi: 3 below -0.1, 2 in (-0.1, 0.4), 1 in (0.4, 1), else 0."""
    copies = torch.zeros(phi.shape, dtype=torch.long)
    copies[(phi > 0.4) & (phi < 1.0)] = 1
    copies[(phi > -0.1) & (phi < 0.4)] = 2
    copies[phi < -0.1] = 3
    return copies


def gap_difference(mean_phi: Sequence[float], alpha: float, func: str = "linear") -> float:
    """The official share of re-sampled samples from the gaps 1 - mean phi_m: d = |gap_1 - gap_2| * 2/3 (for
    n = 3 the mean over the pairs, ours); linear: alpha d; tanh: tanh(alpha d); square: alpha d^1.5."""
    gaps = [1.0 - p for p in mean_phi]
    pairs = list(itertools.combinations(gaps, 2))
    d = sum(abs(a - b) for a, b in pairs) / len(pairs) * 2.0 / 3.0
    if func == "tanh":
        return math.tanh(d * alpha)
    if func == "square":
        return d ** 1.5 * alpha
    return d * alpha


def modality_copies(phi: Tensor, params: SMVParams, generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """Modality level: (N, n) copies and what was measured. The part's mean values, the gap difference,
    int(difference * N) rows drawn with replacement, each one copy of the modality with the largest gap."""
    n_rows, n_mod = phi.shape
    part = max(int(n_rows * params.part_ratio), 1)
    chosen = torch.randint(n_rows, (part,), generator=generator)  # with replacement, as np.random.choice
    mean_phi = phi[chosen].mean(dim=0)  # (n,)
    difference = gap_difference(mean_phi.tolist(), params.alpha, params.func)
    draws = torch.randint(n_rows, (int(difference * n_rows),), generator=generator)
    weakest = int(torch.argmax(1.0 - mean_phi))  # the largest gap (the first on a tie)
    copies = torch.zeros((n_rows, n_mod), dtype=torch.long)
    copies[:, weakest] = torch.bincount(draws, minlength=n_rows)
    return copies, {"difference": difference, **{f"part_contribution/{i}": float(p) for i, p in enumerate(mean_phi)}}


def expanded_mean(full: Tensor, kept: Mapping[int, Tensor], copies: Tensor) -> Tensor:
    """sum_i (l_i + sum_m k_im l_i^(m)) / sum_i (1 + sum_m k_im); full (B,), kept: column m -> (B,), copies (B, n)."""
    total = full.sum()
    for column, losses in kept.items():
        total = total + (copies[:, column].to(losses.dtype) * losses).sum()
    return total / (full.shape[0] + copies.sum()).to(full.dtype)


# -- the model's passes ---------------------------------------------------------------------------------------


def keep_only(features: Mapping[str, Tensor], kept: frozenset[str]) -> dict[str, Tensor]:
    """The features with every modality outside `kept` set to zeros (the official exec_drop)."""
    return {m: z if m in kept else torch.zeros_like(z) for m, z in features.items()}


@torch.no_grad()
def value_split(model: nn.Module, state: TrainState) -> Tensor:
    """phi (N, n) of every training row, in row order, the model in eval mode."""
    params: SMVParams = state.params
    modalities = tuple(state.cfg.modalities)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for batch in state.batches("train", batch_size=EVAL_BATCH):
            features = model.encode(batch)
            right = {s: state.task.hits(model.fuse(keep_only(features, s)), batch.labels).cpu()
                     for s in coalitions(modalities)}
            rows.append(shapley_values(right, modalities, params.value))
    finally:
        model.train(was_training)
    return torch.cat(rows)


# -- the method -----------------------------------------------------------------------------------------------


@register
class SMV(Method):
    name = "smv"
    Params = SMVParams
    description = "per-sample Shapley valuation of each modality; copies keeping only the low-valued modality"
    display_name = "SMV"
    table_order = 272
    requires = frozenset({"features"})
    variants = {"modality_level": {"level": "modality"}}

    def validate(self, cfg: RunConfig, params: Any) -> None:
        check_choices("smv", params, {"level": ("sample", "modality"), "value": ("count", "one"),
                                      "func": ("linear", "tanh", "square")})
        if cfg.dev_set:
            raise ConfigError("smv: the official valuation reads the training split; it has no dev-set variant")
        if params.warmup < 1:
            raise ConfigError(f"smv: warmup must be >= 1 (the first valuation follows epoch warmup - 1), "
                              f"got {params.warmup}")
        if not 0.0 < params.part_ratio <= 1.0 or params.alpha < 0:
            raise ConfigError("smv: part_ratio must be in (0, 1] and alpha >= 0")

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        features = model.encode(batch)  # m -> (B, D_m)
        full = state.task.per_sample_loss(model.fuse(features), batch.labels)  # (B,)
        counts: Tensor | None = state.scratch.get(COUNTS_KEY)
        if counts is None:  # warm-up: plain training
            return full.mean(), {}
        copies = counts[batch.index].to(full.device)  # (B, n)
        kept = {}
        for column, m in enumerate(state.cfg.modalities):
            if bool(copies[:, column].any()):
                kept[column] = state.task.per_sample_loss(model.fuse(keep_only(features, frozenset({m}))),
                                                          batch.labels)
        return expanded_mean(full, kept, copies), {"expanded": float(1 + copies.sum() / batch.size)}

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        params: SMVParams = state.params
        phi = value_split(model, state)  # (N, n); valued every epoch, as the official code
        modalities = state.cfg.modalities
        logs: Logs = {f"contribution/{m}": float(phi[:, i].mean()) for i, m in enumerate(modalities)}
        if state.epoch < params.warmup - 1:
            return logs
        if params.level == "sample":
            counts = sample_copies(phi)
        else:
            generator = torch.Generator().manual_seed(state.cfg.seed * 1009 + state.epoch)
            counts, measured = modality_copies(phi, params, generator)
            logs["difference"] = measured["difference"]
            logs.update({f"part_contribution/{m}": measured[f"part_contribution/{i}"]
                         for i, m in enumerate(modalities)})
        state.scratch[COUNTS_KEY] = counts
        logs.update({f"copies/{m}": float(counts[:, i].float().mean()) for i, m in enumerate(modalities)})
        logs["resampled"] = float(1 + counts.sum() / counts.shape[0])  # N' / N of the next epoch
        return logs
