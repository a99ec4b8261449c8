"""SATI's architecture (arXiv 2409.00143; official code X-G-Y/SATI, built on MISA; docs/methods/sati.md).

Text is frozen token features (B, T_t, D_t); audio and vision padded frame features. Per batch:

    align       audio / vision resampled per sample onto the text's true length (linear interpolation over
                the true lengths; identity when the lengths already agree, as in MMSA aligned_50 files)
    encoders    audio / vision: a 1-layer TransformerEncoder on the raw features (d_model = D_m); text: none
                (frozen features); then per frame Linear -> H, ReLU, LayerNorm: u_m (B, T, H)
    codes       private p_m = sigmoid(Linear_m(u_m)), shared s_m = sigmoid(Linear(u_m)) (one for all three)
    recon       r_m = Linear_m(time mean of p_m + s_m) (B, H), compared by the method with every frame of u_m
    gates       g_m = step(tanh(Linear(FBP(s_m, s_t)))) in {0, 1} per frame (no gradient), m = audio, vision
    fusion      o_m = LN(g_m * CrossAttn(q = p_t + PE, kv = p_m + PE) + p_t + PE) (the code's CrossAttention:
                bias-free q / k / v, output Linear, dropout 0.2); concat (B, T, 2H) -> 1-layer
                transformer -> masked time mean -> Linear(2H -> H), dropout 0.6, ReLU -> Linear(H -> 1)

`forward(batch)` returns the head's output only (the generic methods run on it); `parts(batch)` returns
everything the sati method's terms need (capability "sati_parts").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from bench.batch import Batch, ModelOutput
from bench.models.base import Model, ModelSpec, add_capability, padding_mask, register, require_modalities
from bench.models.base import masked_mean as mean_over_unpadded

SATI_PARTS = "sati_parts"
add_capability(
    SATI_PARTS,
    "model.parts(batch) -> SATIParts (per-frame shared / private codes, reconstructions and their targets, "
    "the aligned length); model.discriminate(codes (N, H)) -> (N, H) discriminator embeddings and "
    "model.margin_weight (3, H), the cosine head W of the modality discriminator (class i = MODALITIES[i])",
)

MODALITIES = ("text", "audio", "vision")
AUXILIARY = ("audio", "vision")
SIZES = ("paper", "quick")
ALIGNS = ("resample",)
VISION_GATES = ("own", "reuse_audio")


@dataclass(frozen=True)
class Widths:
    """One size: code width H, FBP hidden width and factor k, fusion heads, raw-encoder feed-forward width."""

    hidden: int
    fbp_hidden: int
    fbp_k: int
    heads: int
    raw_ff: int


WIDTHS: dict[str, Widths] = {
    "paper": Widths(128, 32, 2, 4, 2048),  # the official code (2048: torch's TransformerEncoderLayer default)
    "quick": Widths(32, 8, 2, 2, 64),  # ours: CPU-sized
}


@dataclass(frozen=True)
class SATIModelParams:
    """`size`: "paper" (H 128) or "quick" (H 32); `align`: how unaligned audio / vision meet the text's steps
    ("resample": linear interpolation per sample); `vision_gate`: "own" (the paper: vision has its own gate
    layers) or "reuse_audio" (the code: the vision gate's own FBP, then the audio gate's Linear)."""

    size: str = "quick"
    align: str = "resample"
    vision_gate: str = "own"

    def __post_init__(self) -> None:
        for name, choices in (("size", SIZES), ("align", ALIGNS), ("vision_gate", VISION_GATES)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")


@dataclass
class SATIParts:
    """What `parts` returns: the head's output and the per-frame tensors the sati losses read."""

    logits: Tensor  # (B, 1)
    shared: dict[str, Tensor]  # m -> s_m (B, T, H)
    private: dict[str, Tensor]  # m -> p_m (B, T, H)
    reconstructed: dict[str, Tensor]  # m -> r_m (B, H), from the time mean of p_m + s_m
    targets: dict[str, Tensor]  # m -> u_m (B, T, H), the frames r_m is compared with
    lengths: Tensor  # (B,) the text's true length, every modality's after alignment
    gates: dict[str, Tensor]  # aux m -> g_m (B, T, 1) in {0, 1}


# -- pure helpers ------------------------------------------------------------------------------------------


def resample_frames(x: Tensor, steps: int) -> Tensor:
    """Linear interpolation of a sequence x (L, D) onto `steps` points spanning the same interval.

    Output frame j sits at position j (L - 1) / (steps - 1) of the input (both ends kept); a 1-frame input is
    repeated; steps == L returns x itself.
    """
    length = x.shape[0]
    if steps == length:
        return x
    if length == 1 or steps == 1:
        return x[:1].expand(steps, -1) if length == 1 else x[:1]
    positions = torch.arange(steps, dtype=x.dtype, device=x.device) * (length - 1) / (steps - 1)  # (steps,)
    below = positions.floor().long().clamp(max=length - 2)  # (steps,)
    frac = (positions - below.to(x.dtype))[:, None]  # (steps, 1)
    return x[below] * (1 - frac) + x[below + 1] * frac


def align_to_text(x: Tensor, lengths: Tensor, text_lengths: Tensor, steps: int) -> Tensor:
    """Each sample's valid frames x[i, :lengths[i]] resampled onto text_lengths[i] steps, zero-padded to
    `steps`: x (B, T_m, D) -> (B, steps, D). Identity (up to padding) where the lengths already agree."""
    # resample_frames' arithmetic, for every sample at once (the same float operations, so the same values)
    n_in = lengths.to(x.device).clamp(min=1)[:, None]  # (B, 1)
    n_out = text_lengths.to(x.device).clamp(min=1)[:, None]  # (B, 1)
    step = torch.arange(steps, dtype=x.dtype, device=x.device)[None, :]  # (1, steps)
    positions = step * (n_in - 1).to(x.dtype) / (n_out - 1).clamp(min=1).to(x.dtype)  # (B, steps)
    below = positions.floor().long().clamp(min=0)
    below = torch.minimum(below, (n_in - 2).clamp(min=0))  # (B, steps)
    above = torch.minimum(below + 1, n_in - 1)  # (B, steps); a 1-frame input reads its frame twice
    frac = (positions - below.to(x.dtype))[:, :, None]  # (B, steps, 1)
    frac = torch.where((n_in == 1)[:, :, None], torch.zeros_like(frac), frac)

    def frames(index: Tensor) -> Tensor:  # (B, steps) -> (B, steps, D)
        return torch.gather(x, 1, index[:, :, None].expand(-1, -1, x.shape[2]))

    out = frames(below) * (1 - frac) + frames(above) * frac  # (B, steps, D)
    valid = step < n_out.to(x.dtype)  # (B, steps)
    return out * valid[:, :, None].to(x.dtype)


def masked_mean(x: Tensor, lengths: Tensor) -> Tensor:
    """Mean over each sample's first `length` steps: x (B, T, D) -> (B, D)."""
    return mean_over_unpadded(x, padding_mask(lengths, x.shape[1], x.device))


def hard_gate(x: Tensor) -> Tensor:
    """The code's gate: 1 where tanh(x) > 0 else 0, computed without gradient (a step has none)."""
    with torch.no_grad():
        return (torch.tanh(x) > 0).to(x.dtype)


def positional_encoding(steps: int, dim: int, device: torch.device) -> Tensor:
    """Sinusoidal positions (steps, dim) (Vaswani et al.)."""
    position = torch.arange(steps, device=device, dtype=torch.float32)[:, None]
    rates = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(steps, dim, device=device)
    table[:, 0::2] = torch.sin(position * rates)
    table[:, 1::2] = torch.cos(position * rates)[:, : dim // 2]
    return table


# -- modules ---------------------------------------------------------------------------------------------


class FactorizedBilinearPooling(nn.Module):
    """Factorised bilinear pooling as the code has it: (U x * V y) (no biases), dropout, sum over each group of
    k adjacent entries, L2 normalised. x, y (.., dim) -> (.., out)."""

    def __init__(self, dim: int, out: int, k: int, dropout: float = 0.4) -> None:
        super().__init__()
        self.k, self.out = k, out
        self.left, self.right = nn.Linear(dim, out * k, bias=False), nn.Linear(dim, out * k, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:  # x, y (B, T, dim) -> (B, T, out)
        joint = self.drop(self.left(x) * self.right(y))  # (B, T, out * k)
        pooled = joint.view(*joint.shape[:-1], self.out, self.k).sum(dim=-1)  # (B, T, out)
        return F.normalize(pooled, dim=-1)


class Gate(nn.Module):
    """g = step(tanh(Linear(FBP(s_m, s_t)))): one scalar per frame (B, T, 1) in {0, 1}, no gradient to its layers."""

    def __init__(self, widths: Widths) -> None:
        super().__init__()
        self.pool = FactorizedBilinearPooling(widths.hidden, widths.fbp_hidden, widths.fbp_k)
        self.linear = nn.Linear(widths.fbp_hidden, 1)

    def forward(self, shared_m: Tensor, shared_t: Tensor, linear: nn.Module | None = None) -> Tensor:
        """`linear`: another gate's Linear after this gate's own pooling (the code's vision gate)."""
        return hard_gate((linear or self.linear)(self.pool(shared_m, shared_t)))


class CrossAttention(nn.Module):
    """The code's CrossAttention (src/models.py): bias-free q / k / v projections, scaled dot product per head
    (1 / sqrt(H / heads)), an output Linear with bias, then dropout 0.2 on the output. Padded keys are left
    out (ours: the code attends to every one of its 50 steps). q (B, T, H), kv (B, T, H) -> (B, T, H)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim, bias=False)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def split(self, x: Tensor) -> Tensor:  # (B, T, H) -> (B, heads, T, H / heads)
        return x.view(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def forward(self, query: Tensor, kv: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]  # (B, 1, 1, T): True = attend
        attended = F.scaled_dot_product_attention(self.split(self.query(query)), self.split(self.key(kv)),
                                                  self.split(self.value(kv)), attn_mask=mask)  # (B, heads, T, d)
        joined = attended.transpose(1, 2).reshape(query.shape)  # (B, T, H)
        return self.drop(self.out(joined))


class RawEncoder(nn.Module):
    """A 1-layer TransformerEncoder on the raw frames (d_model = D_m; 2 heads when D_m is even, else 1)."""

    def __init__(self, input_dim: int, heads: int, feedforward: int) -> None:
        super().__init__()
        heads = heads if input_dim % heads == 0 else 1
        layer = nn.TransformerEncoderLayer(input_dim, heads, dim_feedforward=feedforward, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:  # (B, T, D), (B, T) -> (B, T, D)
        return self.encoder(x, src_key_padding_mask=pad)


class SATINet(nn.Module):
    """The SATI network over text, audio and vision (see the module docstring)."""

    modalities: ClassVar[tuple[str, ...]] = MODALITIES

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        params = SATIModelParams(**dict(spec.params))
        widths = WIDTHS[params.size]
        hidden = widths.hidden
        self.hidden, self.vision_gate = hidden, params.vision_gate
        # audio 2 heads, vision 1 (the code's choice)
        self.raw = nn.ModuleDict({m: RawEncoder(spec.input_dim(m), h, widths.raw_ff)
                                  for m, h in (("audio", 2), ("vision", 1))})
        self.project = nn.ModuleDict({m: nn.Sequential(nn.Linear(spec.input_dim(m), hidden), nn.ReLU(),
                                                       nn.LayerNorm(hidden)) for m in MODALITIES})
        self.private = nn.ModuleDict({m: nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid()) for m in MODALITIES})
        self.shared = nn.Sequential(nn.Linear(hidden, hidden), nn.Sigmoid())
        self.recon = nn.ModuleDict({m: nn.Linear(hidden, hidden) for m in MODALITIES})
        self.discriminator = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.6))
        # W (3, H), no bias: the code's nn.Linear(H, 3, bias=False) and its default init, U(-1/sqrt(H), 1/sqrt(H))
        self.margin_weight = nn.Parameter(torch.empty(len(MODALITIES), hidden))
        nn.init.kaiming_uniform_(self.margin_weight, a=math.sqrt(5))
        self.gates = nn.ModuleDict({m: Gate(widths) for m in AUXILIARY})
        self.attention = nn.ModuleDict({m: CrossAttention(hidden, widths.heads) for m in AUXILIARY})
        self.fusion_norm = nn.ModuleDict({m: nn.LayerNorm(hidden) for m in AUXILIARY})
        layer = nn.TransformerEncoderLayer(2 * hidden, 1, dim_feedforward=widths.raw_ff, batch_first=True)  # 1 head
        self.fusion = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.Dropout(0.6), nn.ReLU(),
                                  nn.Linear(hidden, spec.output_size))

    def aligned_inputs(self, batch: Batch) -> tuple[dict[str, Tensor], Tensor]:
        """Every modality on the text's steps: m -> (B, T, D_m), and the true lengths (B,)."""
        text_lengths = batch.lengths["text"].clamp(min=1)
        steps = int(text_lengths.max())
        x = {"text": batch.inputs["text"][:, :steps]}
        for m in AUXILIARY:
            x[m] = align_to_text(batch.inputs[m], batch.lengths[m], text_lengths, steps)
        return x, text_lengths

    def gate(self, m: str, shared: dict[str, Tensor]) -> Tensor:
        """g_m; "reuse_audio": the vision gate pools with its own FBP, then takes the audio gate's Linear (the
        code's `fc_gate_at` after `fbp_vt`)."""
        linear = self.gates["audio"].linear if self.vision_gate == "reuse_audio" and m == "vision" else None
        return self.gates[m](shared[m], shared["text"], linear)

    def discriminate(self, codes: Tensor) -> Tensor:
        """Discriminator embeddings (N, H) of codes (N, H); the cosine head W is `margin_weight`."""
        return self.discriminator(codes)

    def parts(self, batch: Batch) -> SATIParts:
        x, lengths = self.aligned_inputs(batch)
        steps = x["text"].shape[1]
        pad = padding_mask(lengths, steps, x["text"].device)  # (B, T)
        features = {"text": x["text"], **{m: self.raw[m](x[m], pad) for m in AUXILIARY}}
        utterance = {m: self.project[m](features[m]) for m in MODALITIES}  # m -> u_m (B, T, H)
        private = {m: self.private[m](utterance[m]) for m in MODALITIES}
        shared = {m: self.shared(utterance[m]) for m in MODALITIES}
        reconstructed = {m: self.recon[m](masked_mean(private[m] + shared[m], lengths)) for m in MODALITIES}
        positions = positional_encoding(steps, self.hidden, pad.device)[None]  # (1, T, H)
        query = private["text"] + positions  # (B, T, H)
        gates, fused = {}, []
        for m in AUXILIARY:
            kv = private[m] + positions
            attended = self.attention[m](query, kv, key_padding_mask=pad)
            gates[m] = self.gate(m, shared)  # (B, T, 1)
            fused.append(self.fusion_norm[m](gates[m] * attended + query))
        joint = self.fusion(torch.cat(fused, dim=2), src_key_padding_mask=pad)  # (B, T, 2H)
        logits = self.head(masked_mean(joint, lengths))  # (B, 1)
        return SATIParts(logits, shared, private, reconstructed, utterance, lengths, gates)

    def forward(self, batch: Batch) -> ModelOutput:
        return ModelOutput(logits=self.parts(batch).logits)


@register
class SATIModel(Model):
    name = "sati"
    Params = SATIModelParams
    description = ("SATI: shared / private per-frame codes (MISA-style), modality discriminator with a cosine "
                   "head, text-queried cross-attention gated by factorised bilinear pooling of shared codes")
    # no per-modality logits, no linear head: OGM, CGGM, ... refuse it by capability
    capabilities = frozenset({SATI_PARTS})
    min_modalities = 3
    max_modalities = 3

    @classmethod
    def build(cls, spec: ModelSpec) -> nn.Module:
        require_modalities(cls.name, spec, tuple(MODALITIES))
        return SATINet(spec)


__all__ = ["MODALITIES", "SATI_PARTS", "WIDTHS", "CrossAttention", "SATIModel", "SATIModelParams", "SATINet",
           "SATIParts", "align_to_text", "hard_gate", "masked_mean", "padding_mask", "resample_frames"]
