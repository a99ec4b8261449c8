"""The shared model: half-bias logits, padding independence, parameter groups."""

from __future__ import annotations

import torch
from tiny import DIMS

from bench.methods.base import Batch
from bench.models import ENCODER_SIZES, LateFusionModel, SequenceEncoder, default_param_groups, model_spec
from bench.plan.resolve import make_config

torch.set_num_threads(1)


def _batch(n: int = 5, steps: int = 7, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(n, steps, d, generator=g) for m, d in DIMS.items()}
    lengths = {m: torch.randint(1, steps + 1, (n,), generator=g) for m in DIMS}
    return Batch(inputs=inputs, lengths=lengths, labels=torch.zeros(n, dtype=torch.long), index=torch.arange(n))


def _model(modalities=("text", "audio", "vision"), dataset="synth-mosi") -> LateFusionModel:
    cfg = make_config(dataset, "smoke", modalities=modalities, method="concat")
    torch.manual_seed(0)
    return LateFusionModel(model_spec(cfg, DIMS, num_classes=3))


def test_modality_logits_sum_to_fused_logits() -> None:
    for modalities in (("text", "vision"), ("text", "audio", "vision")):
        model = _model(modalities)
        out = model(_batch())
        summed = sum(out.modality_logits.values())
        assert torch.allclose(summed, out.logits, atol=1e-6)
        # each o_m carries exactly b / n of the bias
        n = len(modalities)
        z = out.features["text"]
        cols = model.head_slices()["text"]
        expected = z @ model.head.weight[:, cols].T + model.head.bias / n
        assert torch.allclose(out.modality_logits["text"], expected, atol=1e-6)
        assert not out.modality_logits["text"].requires_grad


def test_encoder_output_is_independent_of_padding() -> None:
    torch.manual_seed(1)
    encoder = SequenceEncoder(input_dim=3, size=ENCODER_SIZES["mosi"]["audio"])
    sample = torch.randn(1, 4, 3)  # true length 4
    short = torch.cat([sample, torch.zeros(1, 2, 3)], dim=1)  # padded to 6
    long = torch.cat([sample, 5.0 * torch.ones(1, 20, 3)], dim=1)  # padded to 24 with junk
    length = torch.tensor([4])
    assert torch.allclose(encoder(short, length), encoder(long, length), atol=1e-6)
    # a batch whose other member is longer gives the same output for this sample
    other = torch.randn(1, 24, 3)
    batch = torch.cat([long, other])
    both = encoder(batch, torch.tensor([4, 24]))
    assert torch.allclose(both[0], encoder(sample, length)[0], atol=1e-6)


def test_encoder_sizes_follow_table_6_1() -> None:
    mosei = _model(("text", "audio", "vision"), dataset="synth-mosei")
    assert mosei.encoders["text"].lstm.hidden_size == 64
    assert mosei.encoders["text"].proj.out_features == 64
    mosi = _model(("text", "audio", "vision"))
    assert mosi.encoders["text"].proj.out_features == 32
    assert mosi.encoders["audio"].lstm.hidden_size == 16
    assert mosi.encoders["vision"].proj.out_features == 32
    assert mosi.head.in_features == 32 + 16 + 32


def test_encoder_parameters_are_weights_only_by_default() -> None:
    model = _model()
    weights = model.encoder_parameters("text")
    assert all(p.dim() >= 2 for p in weights)
    assert len(weights) == 3  # LSTM weight_ih, weight_hh, proj.weight
    assert len(model.encoder_parameters("text", include_biases=True)) == 6


def test_param_groups_use_group_learning_rates() -> None:
    model = _model(("text", "vision"))
    cfg = make_config("synth-mosi", "smoke", modalities=("text", "vision"), lr=1e-3,
                      group_lrs={"text": 1e-4, "head": 2e-3})
    groups = {g["name"]: g for g in default_param_groups(model, cfg)}
    assert groups["text"]["lr"] == 1e-4
    assert groups["vision"]["lr"] == 1e-3
    assert groups["head"]["lr"] == 2e-3
    counted = sum(len(g["params"]) for g in groups.values())
    assert counted == len(list(model.parameters()))


def test_zero_input_encoding_matches_a_real_pass_over_zeros() -> None:
    model = _model()
    batch = _batch(n=6)
    zeroed = batch.with_zeroed(model.modalities)
    expected = model.encode(zeroed)
    shortcut = model.encode_zeros(batch)
    for m in model.modalities:
        assert torch.allclose(shortcut[m], expected[m], atol=1e-6)
    # and the gradient reaches the LSTM weights through the shortcut
    shortcut["text"].sum().backward()
    assert model.encoders["text"].lstm.weight_hh_l0.grad.abs().sum() > 0


def test_mode_dependence_is_detected() -> None:
    from bench.models import behaves_the_same_in_train_and_eval

    model = _model()
    assert behaves_the_same_in_train_and_eval(model)
    model.extra = torch.nn.Dropout(0.1)
    assert not behaves_the_same_in_train_and_eval(model)
    model.extra = torch.nn.BatchNorm1d(3)
    assert not behaves_the_same_in_train_and_eval(model)


def test_gathered_state_equals_the_packed_sequence_reference() -> None:
    # the speed-up (fused unpacked LSTM + gather) must give what packing gives, up to float rounding
    from torch.nn.utils.rnn import pack_padded_sequence

    torch.manual_seed(3)
    encoder = SequenceEncoder(input_dim=5, size=ENCODER_SIZES["mosi"]["vision"])
    x = torch.randn(8, 30, 5)
    lengths = torch.tensor([30, 1, 7, 12, 30, 2, 19, 25])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    _, (h_n, _) = encoder.lstm(packed)
    reference = encoder.proj(h_n[-1])
    assert torch.allclose(encoder(x, lengths), reference, atol=1e-6)
