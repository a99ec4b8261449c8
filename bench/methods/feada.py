"""FeaDA: Feature Decomposition-Augmentation (Yin et al.; official code PowerLittleYin/FeaDA-main, a fork of
XpastaX/ConFEDE; docs/methods/feada.md). Runs on the `feada` model (bench/models/feada.py).

    L = L_pred + alpha L_uni + beta L_con + gamma (L_a + L_v)                                  (eq. 19)

    L_pred  MSE of the main head against y
    L_uni   MSE of the unimodal head on each of the six decomposed features against y (MOSI / MOSEI have no
            unimodal labels: y for every head, as the code does)                           (eqs. 7-9)
    L_con   NT-Xent (cosine similarity / tau, tau = 0.5) over feature pairs built per anchor sample
            (algorithm 1; the code's pair lists, see `anchor_pairs`)                       (eqs. 10-13)
    L_m     KLDivLoss(batchmean)(log_softmax(f_m^aug), softmax(p2a(f^{ms})))                (eqs. 15-16)

weights=paper: alpha 0.02, beta 0.03, gamma 0.01; weights=code (the MOSI code): 0.03 uni, 0.02 con, 0.09 KL.
Partner samples (2 same-label near, 2 different-label near, 2 different-label far) are chosen inside the
batch by the cosine of the anchors' descriptors, computed once over the training split at the start of
training as the code's data loader does (MOSI/data_loader.py; `code_descriptors`); labels are compared after
rounding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.config import ConfigError, RunConfig
from bench.methods.base import (
    Batch,
    BuildContext,
    Logs,
    Method,
    TrainState,
    check_choices,
    dataset_recipe,
    register,
)
from bench.models.feada import AUXILIARY, FEADA_PARTS, SLOTS, FeaDAParts, masked_mean, padding_mask
from bench.recipes import recipe

WEIGHTS: dict[str, dict[str, float]] = {
    "paper": {"uni": 0.02, "con": 0.03, "kl": 0.01},  # eq. 19, section 4.2 / appendix A.5
    "code": {"uni": 0.03, "con": 0.02, "kl": 0.09},  # MOSI/models/model.py
}
TAU = 0.5  # the official const_heat
DESCRIPTORS_KEY = "feada/descriptors"
DESCRIPTOR_KINDS = ("code", "ours")
MODALITIES = ("text", "audio", "vision")
# Rows of one anchor's feature table: slot-major, slot s of partner p at row s * n_samples + p (p = 0: anchor).
SIMILAR_SLOTS = (0, 1, 2)  # text_s, vision_s, audio_s in SLOTS
DISSIMILAR_SLOTS = (3, 4, 5)


@dataclass(frozen=True)
class FeaDAParams:
    weights: str = "paper"  # "paper" (alpha .02, beta .03, gamma .01) or "code" (.03 uni, .02 con, .09 KL)
    use_uni: bool = True  # table 4's ablations: False removes the term
    use_con: bool = True
    use_kl: bool = True
    use_prompt: bool = True
    prompt: str = "concat"  # "concat": the paper's zero-init appended step; "add": the code's rand-init, added
    train_projectors: bool = True  # False: the code's optimizer, which omits the projectors and p2a
    tau: float = TAU
    # > 0: the paper's two stages in one run: the first pretrain_epochs epochs train only the auxiliary
    # encoders (each regressing y through its own Linear head), which are then frozen; 0: one stage
    pretrain_epochs: int = 0
    # the descriptors whose cosine picks the partners: "code" (MOSI/data_loader.py: audio / vision frames
    # min-max scaled to [-1, 1] per feature over every frame of the split, padding included, summed over all
    # frames and divided by the true length; text unscaled, the mean over every (padded) step); "ours" (the
    # former: time means over the true length, then each column min-max scaled to [0, 1] over the split)
    descriptors: str = "code"

    def __post_init__(self) -> None:
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if int(self.pretrain_epochs) < 0:
            raise ValueError(f"pretrain_epochs must be >= 0, got {self.pretrain_epochs}")


# -- the loss terms (pure functions) ---------------------------------------------------------------------


def loss_weights(weights: str, use_uni: bool = True, use_con: bool = True, use_kl: bool = True) -> dict[str, float]:
    """The weight of each auxiliary term; an ablated term weighs 0."""
    chosen = dict(WEIGHTS[weights])
    for term, used in (("uni", use_uni), ("con", use_con), ("kl", use_kl)):
        if not used:
            chosen[term] = 0.0
    return chosen


def raw_descriptors(inputs: Mapping[str, Tensor], lengths: Mapping[str, Tensor]) -> Tensor:
    """Each sample's time-mean raw features over its true length, modalities concatenated: (B, sum D_m)."""
    means = []
    for m in MODALITIES:
        x = inputs[m]  # (B, T, D)
        means.append(masked_mean(x, padding_mask(lengths[m], x.shape[1], x.device)))
    return torch.cat(means, dim=1)


def code_descriptors(features: Mapping[str, Tensor], lengths: Mapping[str, Tensor]) -> Tensor:
    """The code's descriptors of a whole split (MOSI/data_loader.py, `__scale` and `__gen_cos_matrix`):
    audio / vision scaled per feature to [-1, 1] by the min and max over every frame of every sample
    (padding frames included), summed over every frame, divided by the true length; text unscaled, summed
    over every step and divided by the padded length. Concatenated (text, vision, audio; the cosine does not
    depend on the order). features m -> (N, T_m, D_m) zero-padded; lengths m -> (N,)."""
    parts = [features["text"].sum(dim=1) / features["text"].shape[1]]  # (N, D_t)
    for m in ("vision", "audio"):
        x = features[m]
        low = x.amin(dim=(0, 1))
        high = x.amax(dim=(0, 1))
        scaled = (x - low) / (high - low).clamp(min=1e-12) * 2 - 1  # (N, T, D)
        parts.append(scaled.sum(dim=1) / lengths[m].to(x.dtype).clamp(min=1)[:, None])
    return torch.cat(parts, dim=1)


def min_max_scale(x: Tensor) -> Tensor:
    """Each column scaled to [0, 1] over the rows; a constant column becomes 0. x: (N, D)."""
    low, high = x.min(dim=0).values, x.max(dim=0).values
    return (x - low) / (high - low).clamp(min=1e-12)


def select_partners(descriptors: Tensor, labels: Tensor, n_near: int = 2, n_out_near: int = 2,
                    n_out_far: int = 2) -> list[tuple[list[int], list[int]]]:
    """For each sample i of a batch: (neighbours, outliers), indices into the batch.

    neighbours: the n_near most cosine-similar samples with the same rounded label; outliers: the n_out_near
    most and the n_out_far least similar samples with another rounded label (fewer when the batch has fewer).
    descriptors (B, D); labels (B,) scores.
    """
    similarity = F.cosine_similarity(descriptors[:, None, :], descriptors[None, :, :], dim=2)  # (B, B)
    rounded = torch.round(labels).tolist()
    orders = torch.argsort(similarity, dim=1, descending=True, stable=True).tolist()  # B lists of B indices
    partners = []
    for i, ranked in enumerate(orders):
        order = [j for j in ranked if j != i]
        same = [j for j in order if rounded[j] == rounded[i]]
        other = [j for j in order if rounded[j] != rounded[i]]
        near = other[:n_out_near]
        far = [j for j in reversed(other) if j not in near][:n_out_far]
        partners.append((same[:n_near], near + far))
    return partners


def anchor_pairs(n_neighbours: int, n_outliers: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Positive and negative pairs of one anchor, as rows of its feature table.

    The table holds the six decomposed features (SLOTS order) of n = 1 + n_neighbours + n_outliers samples:
    row s * n + p is slot s of sample p (p = 0 the anchor, then the neighbours, then the outliers).
    Positives: every sample's text_s with its own vision_s and audio_s; the anchor's similar feature of each
    modality with the same feature of each neighbour. Negatives: every sample's text_s with its own three
    dissimilar features; the anchor's similar feature of each modality with the same feature of each outlier.
    (The official pair lists, generalised to any partner count.)
    """
    n = 1 + n_neighbours + n_outliers
    neighbours, outliers = range(1, 1 + n_neighbours), range(1 + n_neighbours, n)
    positives = [(s * n, s * n + p) for s in SIMILAR_SLOTS for p in neighbours]
    positives += [(p, s * n + p) for p in range(n) for s in SIMILAR_SLOTS[1:]]
    negatives = [(s * n, s * n + p) for s in SIMILAR_SLOTS for p in outliers]
    negatives += [(p, s * n + p) for p in range(n) for s in DISSIMILAR_SLOTS]
    return positives, negatives


def nt_xent(features: Tensor, positives: Sequence[tuple[int, int]], negatives: Sequence[tuple[int, int]],
            tau: float = TAU) -> Tensor:
    """NT-Xent over feature pairs: mean over positive pairs (a, p) of
    -log( exp(cos(a, p) / tau) / (exp(cos(a, p) / tau) + sum over negatives (a, k) of exp(cos(a, k) / tau)) ),
    the negatives of a pair being those with the same first row a (pytorch-metric-learning's NTXentLoss with
    an indices tuple, as the official code uses it). features (N, k); pairs are row indices.
    """
    return nt_xent_per_table(features[None], positives, negatives, tau)[0]


def nt_xent_per_table(tables: Tensor, positives: Sequence[tuple[int, int]], negatives: Sequence[tuple[int, int]],
                      tau: float = TAU) -> Tensor:
    """`nt_xent` of each of G tables that share one pair list: tables (G, N, k) -> (G,)."""
    rows = torch.tensor([*positives, *negatives], dtype=torch.long, device=tables.device)  # (P + Q, 2)
    scores = F.cosine_similarity(tables[:, rows[:, 0]], tables[:, rows[:, 1]], dim=2) / tau  # (G, P + Q)
    pos_scores, neg_scores = scores[:, : len(positives)], scores[:, len(positives):]  # (G, P), (G, Q)
    pos_anchor, neg_anchor = rows[: len(positives), 0], rows[len(positives):, 0]
    same_anchor = pos_anchor[:, None] == neg_anchor[None, :]  # (P, Q)
    neg_matrix = neg_scores[:, None, :].masked_fill(~same_anchor, float("-inf"))  # (G, P, Q)
    denominators = torch.logsumexp(torch.cat([pos_scores[:, :, None], neg_matrix], dim=2), dim=2)  # (G, P)
    return (denominators - pos_scores).mean(dim=1)


def contrastive_loss(features: Tensor, partners: Sequence[tuple[list[int], list[int]]], tau: float = TAU) -> Tensor:
    """L_con: the mean over anchors of NT-Xent over each anchor's pairs (eq. 13).

    features: (B, 6, k) the decomposed features in SLOTS order; partners: select_partners' output. Anchors
    with the same partner counts share one pair list, so each such group is scored in one batched call.
    """
    groups: dict[tuple[int, int], list[list[int]]] = {}
    for i, (neighbours, outliers) in enumerate(partners):
        groups.setdefault((len(neighbours), len(outliers)), []).append([i, *neighbours, *outliers])
    losses = []
    for (n_neighbours, n_outliers), samples in groups.items():
        index = torch.tensor(samples, dtype=torch.long, device=features.device)  # (G, n)
        tables = features[index].transpose(1, 2).reshape(len(samples), -1, features.shape[2])  # (G, 6n, k)
        losses.append(nt_xent_per_table(tables, *anchor_pairs(n_neighbours, n_outliers), tau))
    return torch.cat(losses).mean()


def kl_augmentation_loss(augmented: Tensor, target: Tensor) -> Tensor:
    """L_m = KLDivLoss(batchmean)(log_softmax(f_m^aug), softmax(p2a(f^{ms}))): sum over features of
    q (log q - log_softmax(f_aug)), q = softmax(target), averaged over the batch. Both (B, d)."""
    return F.kl_div(F.log_softmax(augmented, dim=1), F.softmax(target, dim=1), reduction="batchmean")


def unimodal_loss(outputs: Mapping[str, Tensor], labels: Tensor) -> Tensor:
    """L_uni = MSE over every head's outputs against y (eq. 9 with u = y for all six). outputs: slot -> (B, 1)."""
    predictions = torch.cat([outputs[slot].squeeze(1) for slot in sorted(outputs)])  # (6B,)
    return F.mse_loss(predictions, labels.repeat(len(outputs)))


def stacked_features(parts: FeaDAParts) -> Tensor:
    """The six decomposed features in SLOTS order: (B, 6, d/2)."""
    table = {**{f"{m}_s": v for m, v in parts.similar.items()}, **{f"{m}_d": v for m, v in parts.dissimilar.items()}}
    return torch.stack([table[slot] for slot in SLOTS], dim=1)


def paper_group_lrs(recipe_name: str) -> dict[str, float]:
    """The official encoder learning rates (MOSI/MOSEI config.py; bench/recipes.toml [<dataset>.methods.feada]);
    the rest ("other") runs at cfg.lr."""
    return dict(recipe(recipe_name).method("feada")["group_lrs"])


def paper_group_decays(recipe_name: str) -> dict[str, float]:
    """Per-group weight decay: the run's everywhere, except where the recipe sets one (MOSEI code: 1e-2 on text)."""
    return dict(recipe(recipe_name).method("feada")["group_decays"])


# -- the method -------------------------------------------------------------------------------------------


@register
class FeaDA(Method):
    name = "feada"
    Params = FeaDAParams
    description = ("FeaDA: similar / dissimilar decomposition by contrastive pairs, augmentation of the text-queried "
                   "auxiliary features by their similar parts, KL guidance, unimodal heads")
    display_name = "FeaDA"
    tasks = ("regression",)
    default_model = "feada"
    requires = frozenset({FEADA_PARTS})
    min_modalities = 3
    max_modalities = 3
    approximations = (
        "text: frozen 768-d token features, BERT not fine-tuned",
        "BERT's pooler output: a learned Linear + tanh of token 0",
        "token 0 (a fine-tuned [CLS] in the paper): the masked mean of the frozen text tokens (text_summary=mean)",
        "one training stage unless pretrain_epochs > 0 (then both stages share the run's epochs)",
        "contrastive partners chosen inside the batch, not drawn from the whole training set",
    )
    variants = {"no_uni": {"use_uni": False}, "no_con": {"use_con": False}, "no_kl": {"use_kl": False},
                "no_prompt": {"use_prompt": False}}

    @classmethod
    def paper_fields(cls, recipe_name: str, profile: str) -> dict[str, Any]:
        """The official training settings (MOSI / MOSEI configs, batch and accumulation per dataset in
        bench/recipes.toml); at the quick profile the recipe's `quick_epochs` where it sets one: the code's
        accumulation leaves a quarter of the optimizer steps, and the measured budget lets every seed leave
        the start's plateau (docs/methods/feada.md, "The quick budget")."""
        paper = recipe(recipe_name).method("feada")
        fields: dict[str, Any] = {
            "task_params": {"loss": "mse", "checkpoint": "loss"},
            "batch_size": int(paper["batch_size"]),
            "step_every": int(paper["step_every"]),
            "lr": 1e-3,  # the official "other" rate; the encoders' rates come from `param_groups`
            "weight_decay": 1e-3,
            "scheduler": "none",
            "early_stopping": False,  # the code trains every epoch and keeps the best validation loss
            "model_params": {"size": "paper" if profile == "full" else "quick"},
        }
        if profile == "full":
            fields["max_epochs"] = 25
        elif profile == "quick" and "quick_epochs" in paper:
            fields["max_epochs"] = int(paper["quick_epochs"])
        return fields

    def validate(self, cfg: RunConfig, params: Any) -> None:
        # text+audio+vision: min_modalities = max_modalities = 3 here, checked by the registry (validate_config)
        check_choices("feada", params, {"weights": tuple(WEIGHTS), "prompt": ("concat", "add"),
                                        "descriptors": DESCRIPTOR_KINDS})
        if params.pretrain_epochs >= cfg.max_epochs:
            raise ConfigError(f"feada: pretrain_epochs ({params.pretrain_epochs}) must be below max_epochs "
                              f"({cfg.max_epochs}): the second stage needs at least one epoch")

    def build(self, ctx: BuildContext) -> nn.Module:
        """The feada model with the method's prompt setting (prompt / use_prompt) in its parameters."""
        prompt = ctx.params.prompt if ctx.params.use_prompt else "none"
        spec = dataclasses.replace(ctx.spec, params=tuple(sorted({**dict(ctx.spec.params), "prompt": prompt}.items())))
        return ctx.model(spec)

    def param_groups(self, model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
        """Groups text / audio / vision / head: the official rates and decays of the dataset family for the
        encoders (cfg.group_lrs wins where it names a group), cfg.lr for the rest; train_projectors=False
        drops the projectors and p2a, as the official optimizer does."""
        block = dataset_recipe(cfg.dataset)
        rates, decays, given = paper_group_lrs(block), paper_group_decays(block), dict(cfg.group_lrs)
        groups = [{**g, "lr": given.get(g["name"], rates.get(g["name"], cfg.lr)),
                   "weight_decay": decays.get(g["name"], cfg.weight_decay)}
                  for g in super().param_groups(model, cfg)]
        if state_params(self, cfg).train_projectors:
            return groups
        left_out = {id(p) for p in model.projector_parameters()}
        kept = [{**g, "params": [p for p in g["params"] if id(p) not in left_out]} for g in groups]
        return [g for g in kept if g["params"]]

    def on_train_start(self, model: nn.Module, state: TrainState) -> Logs:
        """Descriptors of every training row (row order): the code's, or time means min-max scaled (ours)."""
        if state.params.descriptors == "code":
            split = state.splits["train"].split  # SplitArrays: full-width zero-padded arrays
            features = {m: torch.as_tensor(np.array(split.features[m], dtype=np.float32)) for m in MODALITIES}
            # torch.tensor copies: the stored arrays are read-only
            lengths = {m: torch.tensor(np.asarray(split.lengths[m])) for m in MODALITIES}
            state.scratch[DESCRIPTORS_KEY] = code_descriptors(features, lengths)
            return {}
        rows, values = [], []
        for batch in state.batches("train"):
            rows.append(batch.index)
            values.append(raw_descriptors(batch.inputs, batch.lengths).cpu())
        index, table = torch.cat(rows), min_max_scale(torch.cat(values))
        descriptors = torch.zeros(int(index.max()) + 1, table.shape[1])
        descriptors[index] = table
        state.scratch[DESCRIPTORS_KEY] = descriptors
        return {}

    def in_first_stage(self, state: TrainState) -> bool:
        return state.epoch < state.params.pretrain_epochs

    def on_epoch_end(self, model: nn.Module, state: TrainState) -> Logs:
        if state.epoch == state.params.pretrain_epochs - 1:
            model.freeze_pretrained()
        return {}

    def fresh_optimizer(self, epoch: int, state: TrainState) -> bool:
        """A new optimizer for the second stage, over the parameters still trained."""
        return epoch == state.params.pretrain_epochs

    def checkpoint_epoch(self, epoch: int, state: TrainState) -> bool:
        """No validation (nor checkpoint) of the main head during the first stage."""
        return epoch >= state.params.pretrain_epochs

    def loss(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, Logs]:
        params: FeaDAParams = state.params
        if self.in_first_stage(state):
            outputs = model.pretrain_outputs(batch)  # aux m -> (B, 1)
            stage_loss = sum(F.mse_loss(out.squeeze(1), batch.labels) for out in outputs.values())
            return stage_loss, {"loss/pretrain": float(stage_loss.detach())}
        weights = loss_weights(params.weights, params.use_uni, params.use_con, params.use_kl)
        parts: FeaDAParts = model.decompose(batch)
        task_loss = state.task.loss(parts.logits, batch.labels)
        terms = {
            "uni": unimodal_loss(parts.unimodal, batch.labels),
            "kl": sum(kl_augmentation_loss(parts.augmented[m], parts.kl_targets[m]) for m in AUXILIARY),
        }
        if weights["con"] > 0:
            descriptors = state.scratch[DESCRIPTORS_KEY][batch.index.cpu()]  # (B, D)
            partners = select_partners(descriptors, batch.labels.detach().cpu())
            terms["con"] = contrastive_loss(stacked_features(parts), partners, params.tau)
        loss = task_loss + sum(weights[k] * v for k, v in terms.items())
        logs = {"loss/task": float(task_loss.detach()), **{f"loss/{k}": float(v.detach()) for k, v in terms.items()}}
        return loss, logs


def state_params(method: Method, cfg: RunConfig) -> FeaDAParams:
    from bench.methods.base import resolve_params

    return resolve_params(method, cfg)


__all__ = ["WEIGHTS", "FeaDA", "FeaDAParams", "anchor_pairs", "code_descriptors", "contrastive_loss",
           "kl_augmentation_loss", "loss_weights", "min_max_scale", "nt_xent", "nt_xent_per_table", "raw_descriptors",
           "select_partners", "stacked_features", "unimodal_loss"]
