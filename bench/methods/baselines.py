"""The thesis baselines (6.2.4): unimodal, late concatenation (one or per-group learning rates),
soft-voting ensemble of unimodal models, and unimodal pre-training then concatenation fine-tuning."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bench.config import RunConfig
from bench.methods.base import Batch, BuildContext, Method, ModelOutput, dataset_recipe, register
from bench.plugins import restamp
from bench.recipes import recipe
from bench.tasks import Task, make_task

BOTH_TASKS = ("classification", "regression")


def tuned_modality_lrs(recipe_name: str) -> dict[str, float]:
    """Per-modality learning rates the thesis tuned for unimodal models (table 6.2, step every 4 iterations;
    bench/recipes.toml `unimodal_lrs`): the presets' unimodal step_every-4 rows use them, and `concat_lr`
    unless the run gives its own group_lrs."""

    return dict(recipe(recipe_name).get("unimodal_lrs"))


def unimodal_config(cfg: RunConfig, modality: str) -> RunConfig:
    """The unimodal run (same data, seed, optimizer, schedule, task and model) that ensemble / unipre build on.

    Every field is the run's, except what makes it a plain unimodal run: its method (no parameters), its one
    modality, and the fields a unimodal run never sets (per-group rates, dev set, window, test evaluations).
    """
    default = RunConfig()
    return restamp(cfg.replace(
        method="unimodal", modalities=(modality,), method_params=(), group_lrs=(), dev_set=False,
        ratio_every=default.ratio_every, window_start=default.window_start,
        window_end=min(default.window_end, cfg.max_epochs - 1), test_noise=(), test_dataset="",
    ))


def _dependency_states(cfg: RunConfig, deps: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Mapping]:
    """modality -> best state_dict of that modality's unimodal run."""
    return {m: deps[unimodal_config(cfg, m).run_id] for m in cfg.modalities}


def unimodal_models(ctx: BuildContext) -> dict[str, nn.Module]:
    """modality -> the same seed's unimodal model of that modality, its best checkpoint loaded."""
    models = {}
    for modality, state in _dependency_states(ctx.cfg, ctx.deps).items():
        member = ctx.model(ctx.spec.only(modality))
        member.load_state_dict(state)
        models[modality] = member
    return models


# The baselines combine any number of modalities (mfeat's six views; the model decides its own limit).
MAX_BASELINE_MODALITIES = 8


@register
class Unimodal(Method):
    name = "unimodal"
    min_modalities = 1
    max_modalities = 1
    tasks = BOTH_TASKS
    requires = frozenset({"single_modality"})
    description = "one encoder + Linear(out -> K), the task's loss"
    display_name = "Unimodal"
    table_order = 10

    @classmethod
    def thesis_lr(cls, family: str, modalities: tuple[str, ...], optimizer: str, step_every: int) -> float | None:
        """Table 6.2: with Adam and an update every 4 iterations, the tuned rate of the modality."""
        if optimizer != "adam" or step_every != 4:
            return None
        return tuned_modality_lrs(family)[modalities[0]]


@register
class Concat(Method):
    name = "concat"
    max_modalities = MAX_BASELINE_MODALITIES
    tasks = BOTH_TASKS
    description = "Late Concatenation, joint training with one learning rate (the baseline)"
    display_name = "Late Concatenation (Baseline)"
    table_order = 40
    is_baseline = True
    is_reference_baseline = True


@register
class ConcatLR(Method):
    name = "concat_lr"
    max_modalities = MAX_BASELINE_MODALITIES
    tasks = BOTH_TASKS
    requires = frozenset({"encoders"})
    description = "Late Concatenation with one learning rate per encoder and one for the head"
    display_name = "Late Concatenation (per-encoder lr)"
    table_order = 50
    is_baseline = True

    def param_groups(self, model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
        from bench.models import default_param_groups

        tuned = tuned_modality_lrs(dataset_recipe(cfg.dataset))
        # a modality without a tuned rate (a dataset's own name, e.g. mfeat's "pix") trains at cfg.lr
        rates = {m: tuned[m] for m in cfg.modalities if m in tuned} | dict(cfg.group_lrs)
        return default_param_groups(model, cfg.replace(group_lrs=tuple(sorted(rates.items()))))


def mean_outputs(member_outputs: Sequence[Tensor]) -> Tensor:
    """The members' mean output (B, K): the mean of their logits (UME), or of their scores."""
    return torch.stack(list(member_outputs)).mean(dim=0)


class SoftVotingEnsemble(nn.Module):
    """Unimodal models combined by `combine` (default: as the task averages members, `Task.average_members`:
    the log of the mean class distribution in classification, the mean score in regression)."""

    def __init__(self, members: Mapping[str, nn.Module], task: Task,
                 combine: Callable[[Sequence[Tensor]], Tensor] | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleDict(dict(members))
        self.combine = combine or task.average_members

    def forward(self, batch: Batch) -> ModelOutput:
        member_logits = {m: model(batch).logits for m, model in self.members.items()}  # m -> (B, K)
        return ModelOutput(
            logits=self.combine(list(member_logits.values())),
            modality_logits={m: z.detach() for m, z in member_logits.items()},
        )


@register
class Ensemble(Method):
    name = "ensemble"
    max_modalities = MAX_BASELINE_MODALITIES
    trains = False
    tasks = BOTH_TASKS
    requires = frozenset({"single_modality"})
    description = "soft voting over the same seed's unimodal models (no training of its own)"
    display_name = "Ensemble"
    table_order = 20

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        return [unimodal_config(cfg, m) for m in cfg.modalities]

    no_dev_set = "does not use a development set"

    def build(self, ctx: BuildContext) -> nn.Module:
        return SoftVotingEnsemble(unimodal_models(ctx), make_task(ctx.cfg.task, dict(ctx.cfg.task_params)))


@register
class UniPre(Method):
    name = "unipre"
    max_modalities = MAX_BASELINE_MODALITIES
    tasks = BOTH_TASKS
    requires = frozenset({"encoders", "single_modality"})
    description = "encoders initialised from the same seed's unimodal models, fresh head, concat training"
    display_name = "Uni-Pre Finetuned"
    table_order = 30

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        return [unimodal_config(cfg, m) for m in cfg.modalities]

    def build(self, ctx: BuildContext) -> nn.Module:
        model = ctx.model()
        for modality, state in _dependency_states(ctx.cfg, ctx.deps).items():
            prefix = f"encoders.{modality}."
            encoder_state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            model.encoders[modality].load_state_dict(encoder_state)
        return model
