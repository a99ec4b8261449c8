"""FeaDA's architecture (Yin et al., "Feature Decomposition-Augmentation Network"; docs/methods/feada.md).

Text is frozen token features (B, T_t, D_t); audio and vision padded frame features. Per batch:

    text        token 0 of x_t replaced by the masked mean of its valid tokens (text_summary="mean", ours; see
                TextBranch), then h_t = dropout(Linear(D_t -> d)(x_t)) (B, T_t, d); f^t = h_t[:, 0];
                pooled = tanh(Linear(x_t[:, 0])) (stands in for BERT's pooler output: frozen features, no BERT here)
    association h_m = Linear(D_m -> d)(x_m) with the soft prompt (added at every step, or one extra step),
                then the code's MulT cross-modal transformer, query = h_t, key / value = h_m (inputs x sqrt(d) +
                positions, a shared LayerNorm, d-wide FFN, the causal mask; pads masked); f^{tm} = out[:, 0]
    decomposition  e_m = masked mean of a TransformerEncoder over Linear(x_m) (m = audio, vision), e_t = pooled;
                similar f^{ms} = sim_m(e_m), dissimilar f^{mds} = dis_m(e_m): LayerNorm -> Linear(d -> d/2) -> tanh
                -> dropout (0.3 / 0.5)
    augmentation   f_m^aug = f^{tm} * p2a(f^{ms}) (element-wise), one p2a = Linear(d/2 -> d) shared by audio, vision
    heads       main MLP(3d -> d, d/2, d/8 -> 1, GELU) on [f^t, f_a^aug, f_v^aug]; one unimodal MLP
                (d/2 -> d/4, d/8 -> 1) applied to each of the six decomposed features

`forward(batch)` returns the main head's output only (the generic methods run on it); `decompose(batch)`
returns every part the feada method's loss terms need (capability "feada_parts").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

from bench.batch import Batch, ModelOutput
from bench.models.base import (
    Model,
    ModelSpec,
    add_capability,
    masked_mean,
    padding_mask,
    register,
    require_modalities,
)

FEADA_PARTS = "feada_parts"
add_capability(
    FEADA_PARTS,
    "model.decompose(batch) -> FeaDAParts (similar / dissimilar features per modality, augmented features, "
    "their KL targets, unimodal head outputs); model.projector_parameters() (projectors and p2a); "
    "model.pretrain_outputs(batch) -> {aux m: (B, 1)} and model.freeze_pretrained() (the first stage)",
)

AUXILIARY = ("audio", "vision")
SIZES = ("paper", "quick")
PROMPTS = ("concat", "add", "none")
TEXT_SUMMARIES = ("mean", "token0")
CROSS_BLOCKS = ("code", "ours")
SLOTS = ("text_s", "vision_s", "audio_s", "text_d", "vision_d", "audio_d")  # the six decomposed features


@dataclass(frozen=True)
class Widths:
    """The widths of one size: model width d, heads, association layers per modality, encoder layers, and
    the decomposition encoders' FFN width as a multiple of d."""

    dim: int
    heads: int
    layers: dict[str, int]
    encoder_layers: int
    encoder_ffn: int = 4


WIDTHS: dict[str, Widths] = {
    # the official config: encoder feed-forward width = encoder_fea_dim (1d), MOSI/config.py
    "paper": Widths(768, 8, {"vision": 2, "audio": 5}, 2, encoder_ffn=1),
    "quick": Widths(32, 2, {"vision": 1, "audio": 1}, 1, encoder_ffn=2),  # ours: CPU-sized
}


@dataclass(frozen=True)
class FeaDAModelParams:
    """`size`: "paper" (768-d, the official layer counts) or "quick" (32-d, one layer each); `prompt`:
    "concat" (the paper: one zero-initialised prompt step appended), "add" (the code: a torch.rand-initialised
    prompt added at every step) or "none" (table 4's -P). The feada method sets it from its own prompt /
    use_prompt parameters. `text_summary`: what token 0 holds when the text branch reads it, "mean" (ours:
    the masked mean of the valid tokens) or "token0" (the token as stored). `cross_block`: "code" (the
    code's MulT TransformerEncoder: inputs times sqrt(d) plus sinusoidal positions, one LayerNorm shared by
    query, key and value, d-wide ReLU feed-forward, the shifted causal mask) or "ours" (the harness's former
    block: separate LayerNorms, 4d feed-forward, no scaling, positions or causal mask)."""

    size: str = "quick"
    prompt: str = "concat"
    text_summary: str = "mean"
    cross_block: str = "code"

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size must be one of {', '.join(SIZES)}, got {self.size!r}")
        if self.prompt not in PROMPTS:
            raise ValueError(f"prompt must be one of {', '.join(PROMPTS)}, got {self.prompt!r}")
        if self.text_summary not in TEXT_SUMMARIES:
            raise ValueError(f"text_summary must be one of {', '.join(TEXT_SUMMARIES)}, got {self.text_summary!r}")
        if self.cross_block not in CROSS_BLOCKS:
            raise ValueError(f"cross_block must be one of {', '.join(CROSS_BLOCKS)}, got {self.cross_block!r}")


@dataclass
class FeaDAParts:
    """What `decompose` returns: the main output and every tensor the feada losses read."""

    logits: Tensor  # (B, 1) main head
    similar: dict[str, Tensor]  # m -> f^{ms} (B, d/2)
    dissimilar: dict[str, Tensor]  # m -> f^{mds} (B, d/2)
    augmented: dict[str, Tensor]  # aux m -> f_m^aug (B, d)
    kl_targets: dict[str, Tensor]  # aux m -> p2a(f^{ms}) (B, d)
    unimodal: dict[str, Tensor] = field(default_factory=dict)  # slot name (SLOTS) -> (B, 1)


# -- helpers -------------------------------------------------------------------------------------------


def truncate(x: Tensor, lengths: Tensor) -> Tensor:
    """x (B, T, D) cut to the batch's longest true length (padding beyond it is all zeros anyway)."""
    return x[:, : max(int(lengths.max()), 1)]


def mlp(widths: list[int], dropout: float = 0.0) -> nn.Sequential:
    """Linear layers of the given widths with GELU (and dropout) between them, none after the last."""
    layers: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(w_in, w_out))
        if i < len(widths) - 2:
            layers += [nn.GELU(), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class CrossModalLayer(nn.Module):
    """A MulT-style cross-modal block: pre-LayerNorm attention from the query onto key/value, then a FFN."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm_q, self.norm_kv, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, query: Tensor, kv: Tensor, kv_pad: Tensor) -> Tensor:
        # query (B, T_q, d); kv (B, T_k, d); kv_pad (B, T_k) bool
        kv_normed = self.norm_kv(kv)
        attended, _ = self.attention(self.norm_q(query), kv_normed, kv_normed, key_padding_mask=kv_pad,
                                     need_weights=False)
        x = query + self.drop(attended)
        return x + self.drop(self.ff(self.norm_ff(x)))


def sinusoidal_positions(steps: int, dim: int, device: torch.device) -> Tensor:
    """The code's (fairseq / tensor2tensor) sinusoidal embeddings of positions 1..steps: (steps, dim), the
    first half sin, the second cos, frequencies exp(-i log(10000) / (dim/2 - 1)) (position 0 is padding)."""
    half = dim // 2
    rates = torch.exp(torch.arange(half, dtype=torch.float32, device=device) * -(math.log(10000.0) / (half - 1)))
    angles = torch.arange(1, steps + 1, dtype=torch.float32, device=device)[:, None] * rates[None]  # (steps, half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.cat([table, table.new_zeros(steps, 1)], dim=1) if dim % 2 else table


def first_query_window(query_steps: int, key_steps: int) -> int:
    """Keys the code's causal mask lets query position 0 see: buffered_future_mask's
    triu(-inf, 1 + |T_k - T_q|) leaves row 0 the keys 0..|T_k - T_q|."""
    return abs(key_steps - query_steps) + 1


class CodeCrossModalLayer(nn.Module):
    """The code's MulT encoder layer (models/trans/transformer.py): pre-LayerNorm, the same LayerNorm on query,
    key and value; attention (dropout 0.1); residual; pre-LayerNorm; Linear(d -> d), ReLU, dropout, Linear(d -> d)
    (xavier weights, zero biases); residual."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.norm_attn, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        for layer in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.dropout = dropout

    def forward(self, query: Tensor, kv: Tensor, kv_pad: Tensor) -> Tensor:
        # query (B, T_q, d); kv (B, T_k, d); kv_pad (B, T_k) bool, True = left out (padding or causal mask)
        kv_normed = self.norm_attn(kv)
        attended, _ = self.attention(self.norm_attn(query), kv_normed, kv_normed, key_padding_mask=kv_pad,
                                     need_weights=False)
        x = query + nn.functional.dropout(attended, self.dropout, self.training)
        hidden = nn.functional.dropout(torch.relu(self.fc1(self.norm_ff(x))), self.dropout, self.training)
        return x + nn.functional.dropout(self.fc2(hidden), self.dropout, self.training)


def summarised_first_token(x: Tensor, pad: Tensor) -> Tensor:
    """x (B, T, D) with token 0 replaced by the masked mean of the valid tokens (pad (B, T) bool).

    Why: in the paper token 0 is a fine-tuned BERT's [CLS], trained to summarise the sentence. Frozen
    features have no such token (a frozen [CLS] is a weak summary, and on the surrogate token 0 is one
    ordinary step), so without this every part of FeaDA that reads token 0 sees a single word.
    """
    return torch.cat([masked_mean(x, pad)[:, None], x[:, 1:]], dim=1)


class TextBranch(nn.Module):
    """Token projection (the association query, f^t at token 0) and the pooler stand-in."""

    def __init__(self, input_dim: int, dim: int, summary: str = "mean", dropout: float = 0.5) -> None:
        super().__init__()
        self.summary = summary
        self.proj = nn.Linear(input_dim, dim)
        self.pooler = nn.Sequential(nn.Linear(input_dim, dim), nn.Tanh())
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        # x (B, T_t, D_t), pad (B, T_t) -> tokens (B, T_t, d), pooled (B, d)
        if self.summary == "mean":
            x = summarised_first_token(x, pad)
        return self.drop(self.proj(x)), self.pooler(x[:, 0])


class AuxiliaryBranch(nn.Module):
    """An auxiliary modality's association path: projection, soft prompt, cross-modal layers (query = text)."""

    def __init__(self, input_dim: int, widths: Widths, layers: int, prompt: str, cross_block: str = "code") -> None:
        super().__init__()
        dim = widths.dim
        self.dim, self.cross_block = dim, cross_block
        self.prompt_mode = prompt
        self.proj = nn.Linear(input_dim, dim)
        # paper: zeros, concatenated as one extra step; code: torch.rand, added at every step
        init = torch.zeros(1, dim) if prompt == "concat" else torch.rand(1, dim)
        self.prompt = nn.Parameter(init, requires_grad=prompt != "none")
        block = CodeCrossModalLayer if cross_block == "code" else CrossModalLayer
        self.layers = nn.ModuleList(block(dim, widths.heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def prompted(self, x: Tensor, pad: Tensor) -> tuple[Tensor, Tensor]:
        """Projected steps with the prompt: x (B, T, D) -> (B, T', d) and its pad mask (B, T')."""
        h = self.proj(x)  # (B, T, d)
        if self.prompt_mode == "none":
            return h, pad
        if self.prompt_mode == "add":
            return h + self.prompt[None], pad
        prompt = self.prompt[None].expand(h.shape[0], -1, -1)  # (B, 1, d)
        never_padded = torch.zeros(pad.shape[0], 1, dtype=torch.bool, device=pad.device)
        return torch.cat([h, prompt], dim=1), torch.cat([pad, never_padded], dim=1)

    def forward(self, text_tokens: Tensor, x: Tensor, pad: Tensor) -> Tensor:
        """f^{tm}: the association output at query position 0, (B, d).

        Query positions never interact: every layer's key / value are this modality's own steps, and the
        attention and FFN act on each query position alone. So only position 0, the one read, is computed:
        the same f^{tm} as running all T_t text positions, at 1 / T_t of the attention.
        """
        kv, kv_pad = self.prompted(x, pad)
        out = text_tokens[:, :1]  # (B, 1, d)
        if self.cross_block == "code":
            out, kv, kv_pad = self.code_inputs(out, kv, kv_pad, text_tokens.shape[1])
        for layer in self.layers:
            out = layer(out, kv, kv_pad)
        return self.norm(out)[:, 0]

    def code_inputs(self, query: Tensor, kv: Tensor, kv_pad: Tensor, query_steps: int) -> tuple[Tensor, Tensor, Tensor]:
        """The code's TransformerEncoder inputs: sqrt(d) x + positions (1-based), embedding dropout 0.1; the
        causal mask of query position 0 joined to the key padding mask. query (B, 1, d) is text position 0."""
        scale = math.sqrt(self.dim)
        positions = sinusoidal_positions(kv.shape[1], self.dim, kv.device)  # (T_k, d)
        query = nn.functional.dropout(scale * query + positions[:1], 0.1, self.training)
        kv = nn.functional.dropout(scale * kv + positions, 0.1, self.training)
        window = first_query_window(query_steps, kv.shape[1])
        beyond = torch.arange(kv.shape[1], device=kv.device) >= window  # (T_k,)
        return query, kv, kv_pad | beyond[None]  # the window holds key 0, never padded: no row is all masked


class SequenceSummary(nn.Module):
    """An auxiliary modality's input to the projectors: masked mean of a TransformerEncoder (GELU, dropout 0.5)."""

    def __init__(self, input_dim: int, widths: Widths) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, widths.dim)
        layer = nn.TransformerEncoderLayer(widths.dim, widths.heads, dim_feedforward=widths.encoder_ffn * widths.dim,
                                           dropout=0.5, activation="gelu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, widths.encoder_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:  # x (B, T, D), pad (B, T) -> (B, d)
        return masked_mean(self.encoder(self.proj(x), src_key_padding_mask=pad), pad)


def projector(dim: int, dropout: float) -> nn.Sequential:
    """LayerNorm -> Linear(d -> d/2) -> tanh -> dropout: one similar or dissimilar projector."""
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim // 2), nn.Tanh(), nn.Dropout(dropout))


class FeaDANet(nn.Module):
    """The FeaDA network over text, audio and vision (see the module docstring)."""

    modalities: ClassVar[tuple[str, ...]] = ("text", "audio", "vision")

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        params = FeaDAModelParams(**dict(spec.params))
        widths = WIDTHS[params.size]
        dim = widths.dim
        self.dim = dim
        self.encoders = nn.ModuleDict({"text": TextBranch(spec.input_dim("text"), dim, params.text_summary)})
        for m in AUXILIARY:
            self.encoders[m] = AuxiliaryBranch(spec.input_dim(m), widths, widths.layers[m], params.prompt,
                                               params.cross_block)
        self.summaries = nn.ModuleDict({m: SequenceSummary(spec.input_dim(m), widths) for m in AUXILIARY})
        self.similar = nn.ModuleDict({m: projector(dim, 0.3) for m in self.modalities})
        self.dissimilar = nn.ModuleDict({m: projector(dim, 0.5) for m in self.modalities})
        self.p2a = nn.Linear(dim // 2, dim)
        self.head = mlp([3 * dim, dim, dim // 2, dim // 8, spec.output_size])
        self.unimodal_head = mlp([dim // 2, dim // 4, dim // 8, 1])
        # first stage (optional): the auxiliary encoders regress y on their own, then are frozen
        self.pretrain_heads = nn.ModuleDict({m: nn.Linear(dim, 1) for m in AUXILIARY})

    def pretrain_outputs(self, batch: Batch) -> dict[str, Tensor]:
        """First stage: each auxiliary encoder's own prediction of y from e_m, aux m -> (B, 1)."""
        device = batch.inputs["text"].device
        outputs = {}
        for m in AUXILIARY:
            x = truncate(batch.inputs[m], batch.lengths[m])  # (B, T_m, D_m)
            pad = padding_mask(batch.lengths[m], x.shape[1], device)  # (B, T_m)
            outputs[m] = self.pretrain_heads[m](self.summaries[m](x, pad))
        return outputs

    def freeze_pretrained(self) -> None:
        """End of the first stage: the auxiliary encoders (and their stage heads) stop training."""
        for module in (self.summaries, self.pretrain_heads):
            for param in module.parameters():
                param.requires_grad_(False)

    def projector_parameters(self) -> list[nn.Parameter]:
        """The similar / dissimilar projectors and p2a (the ones the official optimizer leaves out)."""
        return [*self.similar.parameters(), *self.dissimilar.parameters(), *self.p2a.parameters()]

    def decompose(self, batch: Batch) -> FeaDAParts:
        device = batch.inputs["text"].device
        x = {m: truncate(batch.inputs[m], batch.lengths[m]) for m in self.modalities}  # m -> (B, T_m, D_m)
        pad = {m: padding_mask(batch.lengths[m], x[m].shape[1], device) for m in self.modalities}
        tokens, pooled = self.encoders["text"](x["text"], pad["text"])  # (B, T_t, d), (B, d)
        summary = {"text": pooled, **{m: self.summaries[m](x[m], pad[m]) for m in AUXILIARY}}  # m -> (B, d)
        similar = {m: self.similar[m](summary[m]) for m in self.modalities}  # m -> (B, d/2)
        dissimilar = {m: self.dissimilar[m](summary[m]) for m in self.modalities}
        kl_targets, augmented = {}, {}
        for m in AUXILIARY:
            kl_targets[m] = self.p2a(similar[m])  # (B, d)
            augmented[m] = self.encoders[m](tokens, x[m], pad[m]) * kl_targets[m]  # f^{tm} * p2a(f^{ms})
        fused = torch.cat([tokens[:, 0], augmented["audio"], augmented["vision"]], dim=1)  # (B, 3d)
        features = {**{f"{m}_s": similar[m] for m in self.modalities},
                    **{f"{m}_d": dissimilar[m] for m in self.modalities}}
        unimodal = {slot: self.unimodal_head(features[slot]) for slot in SLOTS}  # slot -> (B, 1)
        return FeaDAParts(self.head(fused), similar, dissimilar, augmented, kl_targets, unimodal)

    def forward(self, batch: Batch) -> ModelOutput:
        parts = self.decompose(batch)
        return ModelOutput(logits=parts.logits)  # (B, 1); no per-modality z_m to offer


@register
class FeaDAModel(Model):
    name = "feada"
    Params = FeaDAModelParams
    description = ("FeaDA: text-queried cross-modal attention with soft prompts, similar / dissimilar projectors, "
                   "augmentation f^{tm} * p2a(f^{ms}), MLP head on [f^t, f_a^aug, f_v^aug]")
    # no per-modality logits, no linear head, no LSTM sizes: OGM, CGGM, ... refuse it by capability
    capabilities = frozenset({FEADA_PARTS})
    min_modalities = 3
    max_modalities = 3

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        require_modalities(cls.name, spec, tuple(FeaDANet.modalities))
        return FeaDANet(spec)


__all__ = ["FEADA_PARTS", "SLOTS", "WIDTHS", "CodeCrossModalLayer", "FeaDAModel", "FeaDAModelParams", "FeaDANet",
           "FeaDAParts", "first_query_window", "masked_mean", "padding_mask", "sinusoidal_positions",
           "summarised_first_token"]
