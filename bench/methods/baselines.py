"""The thesis baselines (6.2.4): unimodal, late concatenation (one or per-group learning rates),
soft-voting ensemble of unimodal models, and unimodal pre-training then concatenation fine-tuning."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from bench.config import ConfigError, RunConfig, dataset_family, make_config
from bench.methods.base import Batch, Method, ModelOutput, register

# Per-modality learning rates the thesis tuned for unimodal models (table 6.2, step every 4 iterations):
# the presets' unimodal step_every-4 rows use them, and `concat_lr` unless the run gives its own group_lrs.
TUNED_MODALITY_LRS: dict[str, dict[str, float]] = {
    "mosi": {"audio": 1e-3, "vision": 5e-4, "text": 1e-4},
    "mosei": {"audio": 5e-4, "vision": 1e-4, "text": 1e-4},
}


def unimodal_config(cfg: RunConfig, modality: str) -> RunConfig:
    """The unimodal run (same data, seed, optimizer and schedule) that ensemble / unipre build on."""
    return make_config(
        cfg.dataset, cfg.profile, method="unimodal", modalities=(modality,), seed=cfg.seed,
        optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size, step_every=cfg.step_every, max_epochs=cfg.max_epochs,
        early_stopping=cfg.early_stopping, patience=cfg.patience, scheduler=cfg.scheduler,
        lr_factor=cfg.lr_factor, lr_patience=cfg.lr_patience, data_version=cfg.data_version,
    )


def _dependency_states(cfg: RunConfig, deps: Mapping[str, Mapping[str, Tensor]]) -> dict[str, Mapping]:
    """modality -> best state_dict of that modality's unimodal run."""
    return {m: deps[unimodal_config(cfg, m).run_id] for m in cfg.modalities}


@register
class Unimodal(Method):
    name = "unimodal"
    min_modalities = 1
    max_modalities = 1
    description = "one encoder + Linear(out -> K), cross-entropy"
    display_name = "Unimodal"
    table_order = 10

    @classmethod
    def thesis_lr(cls, family: str, modalities: tuple[str, ...], optimizer: str, step_every: int) -> float | None:
        """Table 6.2: with Adam and an update every 4 iterations, the tuned rate of the modality."""
        if optimizer != "adam" or step_every != 4:
            return None
        return TUNED_MODALITY_LRS.get(family, TUNED_MODALITY_LRS["mosi"])[modalities[0]]


@register
class Concat(Method):
    name = "concat"
    description = "Late Concatenation, joint training with one learning rate (the baseline)"
    display_name = "Late Concatenation (Baseline)"
    table_order = 40
    is_baseline = True
    is_reference_baseline = True


@register
class ConcatLR(Method):
    name = "concat_lr"
    description = "Late Concatenation with one learning rate per encoder and one for the head"
    display_name = "Late Concatenation (per-encoder lr)"
    table_order = 50
    is_baseline = True

    def param_groups(self, model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
        from bench.models import default_param_groups

        tuned = TUNED_MODALITY_LRS.get(dataset_family(cfg.dataset), TUNED_MODALITY_LRS["mosi"])
        rates = {m: tuned[m] for m in cfg.modalities} | dict(cfg.group_lrs)
        return default_param_groups(model, cfg.replace(group_lrs=tuple(sorted(rates.items()))))


class SoftVotingEnsemble(nn.Module):
    """Unimodal models combined by averaging their class probabilities."""

    def __init__(self, members: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleDict(dict(members))

    def forward(self, batch: Batch) -> ModelOutput:
        member_logits = {m: model(batch).logits for m, model in self.members.items()}  # m -> (B, K)
        mean_probs = torch.stack([torch.softmax(z, dim=1) for z in member_logits.values()]).mean(dim=0)
        # log of the mean distribution: cross-entropy on it is the NLL of the soft vote
        return ModelOutput(
            logits=torch.log(mean_probs.clamp_min(1e-12)),
            modality_logits={m: z.detach() for m, z in member_logits.items()},
        )


@register
class Ensemble(Method):
    name = "ensemble"
    trains = False
    description = "soft voting over the same seed's unimodal models (no training of its own)"
    display_name = "Ensemble"
    table_order = 20

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        return [unimodal_config(cfg, m) for m in cfg.modalities]

    def validate(self, cfg: RunConfig, params: Any) -> None:
        if cfg.dev_set:
            raise ConfigError("ensemble does not use a development set; drop --dev-set")

    def build(self, spec: Any, cfg: RunConfig, deps: Mapping[str, Mapping[str, Tensor]]) -> nn.Module:
        from bench.models import LateFusionModel

        members = {}
        for modality, state in _dependency_states(cfg, deps).items():
            member = LateFusionModel(spec.only(modality))
            member.load_state_dict(state)
            members[modality] = member
        return SoftVotingEnsemble(members)


@register
class UniPre(Method):
    name = "unipre"
    description = "encoders initialised from the same seed's unimodal models, fresh head, concat training"
    display_name = "Uni-Pre Finetuned"
    table_order = 30

    def needs(self, cfg: RunConfig) -> list[RunConfig]:
        return [unimodal_config(cfg, m) for m in cfg.modalities]

    def build(self, spec: Any, cfg: RunConfig, deps: Mapping[str, Mapping[str, Tensor]]) -> nn.Module:
        from bench.models import LateFusionModel

        model = LateFusionModel(spec)
        for modality, state in _dependency_states(cfg, deps).items():
            prefix = f"encoders.{modality}."
            encoder_state = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
            model.encoders[modality].load_state_dict(encoder_state)
        return model
