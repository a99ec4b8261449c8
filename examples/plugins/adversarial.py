"""An example plugin: a shared-private model and an adversarial method that aligns the shared space.

    bench --plugin examples/plugins/adversarial.py run --method adversarial_shared \
        --modalities text,audio,vision --dataset synth-mosi --profile smoke --seeds 0

It registers two parts, exactly as the built-in files do:

* the model `shared_private_mlp`: each modality's inputs are mean-pooled over their true length, then two
  Linear+tanh encoders map them to a *shared* part s_m (the same space for every modality) and a
  *private* part p_m. A linear head over [s_m | p_m] of every modality gives the task's output, and a small
  *modality discriminator* guesses from a shared feature s_m which modality m it came from.
* the method `adversarial_shared`: the task loss plus the discriminator's cross-entropy, with a gradient
  reversal layer between the shared features and the discriminator. One backward pass then trains the
  discriminator to tell the modalities apart and the encoders to make that impossible (Ganin & Lempitsky,
  2015, "Unsupervised Domain Adaptation by Backpropagation", with modalities as the domains). It steps two
  optimizers itself (`owns_step`): "main" (encoders and head) and "discriminator" (its own Adam, `disc_lr`).

The model needs a capability no built-in model has (the discriminator), so the plugin declares it with
bench.models.add_capability before registering: a method that needs it then refuses any other model with one
clear error, and `ogm` (which needs per-modality outputs) refuses this model the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.config import RunConfig
from bench.methods import Batch, Method, ModelOutput, OptimizerPlan, TrainState, resolve_params, scale_gradient
from bench.methods import register as register_method
from bench.models import Model, ModelSpec, add_capability, default_param_groups
from bench.models import register as register_model

DISCRIMINATOR = "modality_discriminator"
add_capability(
    DISCRIMINATOR,
    "model.discriminator (its own module), model.shared_features(features) -> {m: s_m (B, S)} and "
    "model.discriminate(s (N, S)) -> (N, n_modalities) logits, class i = model.modalities[i]",
)


# -- per-step quantities (pure functions) -----------------------------------------------------------


def reverse_gradient(x: Tensor, strength: float) -> Tensor:
    """The gradient reversal layer: returns x unchanged; d(loss)/dx becomes -strength * d(loss)/d(output).

    x: any shape; the output has the same shape and values.
    """
    return scale_gradient(x, -float(strength))


def mean_pool(x: Tensor, lengths: Tensor) -> Tensor:
    """The mean of each sample's first `length` steps; padding after the true length is ignored.

    x: (B, T, D); lengths: (B,) int64 with 1 <= length (any device). Returns (B, D).
    """
    steps = torch.arange(x.shape[1], device=x.device)  # (T,)
    lengths = lengths.to(x.device)
    mask = (steps[None, :] < lengths[:, None]).to(x.dtype)  # (B, T)
    total = (x * mask[:, :, None]).sum(dim=1)  # (B, D)
    return total / lengths.clamp(min=1).to(x.dtype)[:, None]


def stack_shared(shared: Mapping[str, Tensor], modalities: tuple[str, ...]) -> tuple[Tensor, Tensor]:
    """Every modality's shared features as one batch for the discriminator, with the modality as the target.

    shared: m -> (B, S). Returns features (n * B, S), modality m's rows in block i = modalities.index(m),
    and targets (n * B,) int64 holding that i.
    """
    blocks = [shared[m] for m in modalities]  # n x (B, S)
    features = torch.cat(blocks, dim=0)  # (n * B, S)
    targets = torch.cat([torch.full((block.shape[0],), i, dtype=torch.long, device=block.device)
                         for i, block in enumerate(blocks)])  # (n * B,)
    return features, targets


def discriminator_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of the modality guesses. logits: (N, n_modalities); targets: (N,) int64."""
    return F.cross_entropy(logits, targets)


def modality_accuracies(logits: Tensor, targets: Tensor, modalities: tuple[str, ...]) -> dict[str, float]:
    """Percent of rows whose modality the discriminator names correctly: overall ("") and per modality.

    logits: (N, n_modalities); targets: (N,) int64. Chance is 100 / n_modalities.
    """
    correct = (logits.argmax(dim=1) == targets).float()  # (N,)
    accuracies = {"": 100.0 * float(correct.mean())}
    for i, modality in enumerate(modalities):
        accuracies[modality] = 100.0 * float(correct[targets == i].mean())
    return accuracies


def discriminator_logs(logits: Tensor, targets: Tensor, loss: Tensor, modalities: tuple[str, ...]) -> dict[str, float]:
    """One step's trajectory values: disc_loss, disc_acc (%) and disc_acc/<m> (%)."""
    logs = {"disc_loss": float(loss.detach())}
    for modality, accuracy in modality_accuracies(logits.detach(), targets, modalities).items():
        logs[f"disc_acc/{modality}" if modality else "disc_acc"] = accuracy
    return logs


# -- the model --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SharedPrivateParams:
    """Widths of the shared part, the private part (0: none) and the discriminator's hidden layer."""

    shared_dim: int = 16
    private_dim: int = 8
    disc_hidden: int = 16

    def __post_init__(self) -> None:
        if int(self.shared_dim) < 1 or int(self.disc_hidden) < 1:
            raise ValueError(f"shared_dim and disc_hidden must be >= 1, got {self.shared_dim}, {self.disc_hidden}")
        if int(self.private_dim) < 0:
            raise ValueError(f"private_dim must be >= 0, got {self.private_dim}")


class SharedPrivateEncoder(nn.Module):
    """Mean pooling, then Linear+tanh into the shared space and (optionally) into a private one."""

    def __init__(self, input_dim: int, shared_dim: int, private_dim: int) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(input_dim, shared_dim), nn.Tanh())
        self.private = nn.Sequential(nn.Linear(input_dim, private_dim), nn.Tanh()) if private_dim else None

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        # x: (B, T, D); lengths: (B,)
        pooled = mean_pool(x, lengths)  # (B, D)
        parts = [self.shared(pooled)]  # (B, S)
        if self.private is not None:
            parts.append(self.private(pooled))  # (B, P)
        return torch.cat(parts, dim=1)  # (B, S + P)


class SharedPrivateNet(nn.Module):
    """Encoders per modality, a linear head over every z_m = [s_m | p_m], and the modality discriminator."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        params = SharedPrivateParams(**dict(spec.params))
        self.modalities = spec.modalities
        self.shared_dim = int(params.shared_dim)
        width = self.shared_dim + int(params.private_dim)
        self.encoders = nn.ModuleDict({
            m: SharedPrivateEncoder(spec.input_dim(m), self.shared_dim, int(params.private_dim))
            for m in spec.modalities
        })
        self.width = width
        self.head = nn.Linear(width * len(spec.modalities), spec.output_size)
        self.discriminator = nn.Sequential(
            nn.Linear(self.shared_dim, int(params.disc_hidden)), nn.ReLU(),
            nn.Linear(int(params.disc_hidden), len(spec.modalities)),
        )

    def encode(self, batch: Batch) -> dict[str, Tensor]:
        """z_m = [s_m | p_m] for every modality: (B, S + P)."""
        return {m: self.encoders[m](batch.inputs[m], batch.lengths[m]) for m in self.modalities}

    def feature_dim(self, modality: str) -> int:
        """S + P, the width of every z_m (the "features" capability)."""
        return self.width

    def fuse(self, features: Mapping[str, Tensor]) -> Tensor:
        """The head's output (B, output_size) from the concatenated z_m."""
        return self.head(torch.cat([features[m] for m in self.modalities], dim=1))

    def shared_features(self, features: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The shared part s_m of each z_m: (B, S)."""
        return {m: features[m][:, :self.shared_dim] for m in self.modalities}

    def discriminate(self, shared: Tensor) -> Tensor:
        """Modality logits (N, n_modalities) of shared features (N, S)."""
        return self.discriminator(shared)

    def forward(self, batch: Batch) -> ModelOutput:
        features = self.encode(batch)
        return ModelOutput(logits=self.fuse(features), features=features)

    def encoder_parameters(self, modality: str, include_biases: bool = False) -> list[nn.Parameter]:
        """The encoder's weight matrices (and its biases when asked)."""
        return [p for p in self.encoders[modality].parameters() if include_biases or p.dim() >= 2]


@register_model
class SharedPrivateMLP(Model):
    name = "shared_private_mlp"
    Params = SharedPrivateParams
    description = "mean-pooled inputs, Linear shared + private encoders, linear head, modality discriminator"
    capabilities = frozenset({"encoders", "features", "single_modality", DISCRIMINATOR})

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        return SharedPrivateNet(spec)


# -- the method -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdversarialParams:
    """`reversal`: lambda, the factor of the reversed gradient the encoders get; `disc_lr`: the
    discriminator's Adam learning rate."""

    reversal: float = 0.1
    disc_lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.reversal < 0:
            raise ValueError(f"reversal must be >= 0, got {self.reversal}")
        if self.disc_lr <= 0:
            raise ValueError(f"disc_lr must be > 0, got {self.disc_lr}")


def discriminator_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The discriminator's trainable parameters."""
    return [p for p in model.discriminator.parameters() if p.requires_grad]


def main_groups(model: nn.Module, cfg: RunConfig) -> list[dict[str, Any]]:
    """The run's usual parameter groups (one per encoder, one 'head'), without the discriminator."""
    excluded = {id(p) for p in discriminator_parameters(model)}
    groups = []
    for group in default_param_groups(model, cfg):
        kept = [p for p in group["params"] if id(p) not in excluded]
        if kept:
            groups.append({**group, "params": kept})
    return groups


@register_method
class AdversarialShared(Method):
    name = "adversarial_shared"
    Params = AdversarialParams
    description = "task loss + modality discriminator behind a gradient reversal layer on the shared features"
    tasks = ("classification", "regression")
    default_model = "shared_private_mlp"
    requires = frozenset({"features", DISCRIMINATOR})
    owns_step = True

    def optimizers(self, model: nn.Module, cfg: RunConfig) -> list[OptimizerPlan]:
        params: AdversarialParams = resolve_params(self, cfg)
        discriminator = [{"name": "discriminator", "params": discriminator_parameters(model)}]
        return [OptimizerPlan("main", main_groups(model, cfg)),
                OptimizerPlan("discriminator", discriminator, kind="adam", lr=params.disc_lr, weight_decay=0.0,
                              scheduled=False)]

    def train_step(self, model: nn.Module, batch: Batch, state: TrainState) -> tuple[Tensor, dict[str, float]]:
        """One batch: task loss + discriminator loss, one backward, both optimizers step.

        The discriminator's gradient minimises its loss; the encoders receive -reversal times that
        gradient through the reversal layer, so they learn shared features it cannot tell apart.
        """
        main, discriminator = state.optimizers["main"], state.optimizers["discriminator"]
        main.zero_grad(set_to_none=True)
        discriminator.zero_grad(set_to_none=True)
        features = model.encode(batch)  # m -> (B, S + P)
        task_loss = state.task.loss(model.fuse(features), batch.labels)
        shared, owners = stack_shared(model.shared_features(features), model.modalities)  # (n*B, S), (n*B,)
        logits = model.discriminate(reverse_gradient(shared, state.params.reversal))  # (n*B, n)
        adversary_loss = discriminator_loss(logits, owners)
        (task_loss + adversary_loss).backward()
        state.check_gradients()
        main.step()
        discriminator.step()
        return task_loss.detach(), discriminator_logs(logits, owners, adversary_loss, model.modalities)
