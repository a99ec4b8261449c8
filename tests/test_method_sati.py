"""SATI: gradient reversal, the margin softmax, CMD, JSD, reconstruction, resampling and the hard gate by
hand; weights and ablations; runs on synth-mosi, concat on the sati model, aligned and unaligned MMSA files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from clitools import bench
from tiny import TAV, smoke_config

from bench.config import ConfigError
from bench.methods import get_method, validate_config
from bench.methods.sati import (
    QUICK_EPOCHS,
    SATI,
    SATIParams,
    cmd,
    consistency_loss,
    first_checkpoint_epoch,
    jensen_shannon,
    loss_weights,
    margin_softmax_loss,
    reconstruction_loss,
    reverse_gradient,
    sequential_variation_loss,
)
from bench.models import model_class
from bench.models.base import ModelSpec
from bench.models.sati import CrossAttention, align_to_text, hard_gate, resample_frames
from bench.plan.resolve import make_config
from bench.train import build_trainer, train_run

torch.set_num_threads(1)
REGRESSION = {"task": "regression", "task_params": {"loss": "mse"}}


def _config(**fields):
    return smoke_config(method="sati", modalities=TAV, **{**REGRESSION, **fields})


def _series(result, term: str) -> list[float]:
    return [row["value"] for row in result.trajectory if row["series"] == "loss" and row["modality"] == term]


# -- formulas by hand --------------------------------------------------------------------------------------


def test_gradient_reversal_keeps_the_forward_and_negates_and_scales_the_gradient() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y.detach(), x.detach())
    (y * torch.tensor([2.0, 4.0, -6.0])).sum().backward()
    assert x.grad.tolist() == [-1.0, -2.0, 3.0]  # -0.5 * (2, 4, -6)


def test_margin_softmax_by_hand() -> None:
    # x = (1, 0) against W rows (1, 0), (0, 2), (-1, 0): cosines 1, 0, -1
    x, weight = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    # target 1: theta = pi / 2, s cos(pi / 2 + 0.5) = -30 sin 0.5; the others 30 * 1 and 30 * -1
    target_logit = -30 * math.sin(0.5)
    expected = -target_logit + math.log(math.exp(target_logit) + math.exp(30.0) + math.exp(-30.0))
    expected += 0.01 * (1 + 4 + 1)  # ||W||^2
    got = margin_softmax_loss(x, weight, torch.tensor([1]))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # no margin, no scale, no regulariser: plain softmax over the cosines (1, 0, -1), target 0
    plain = margin_softmax_loss(x, weight, torch.tensor([0]), scale=1.0, margin=0.0, weight_reg=0.0)
    assert float(plain) == pytest.approx(-1 + math.log(math.e + 1 + math.exp(-1)), rel=1e-5)
    # the code's additive cosine margin: target logit 30 (0 - 0.5) = -15
    cosine = margin_softmax_loss(x, weight, torch.tensor([1]), kind="cosine")
    expected_cosine = 15 + math.log(math.exp(-15.0) + math.exp(30.0) + math.exp(-30.0)) + 0.06
    assert float(cosine) == pytest.approx(expected_cosine, rel=1e-5)


def test_cmd_over_five_moments_by_hand() -> None:
    x = torch.tensor([[0.0], [2.0]])  # mean 1, centred -1, 1: moments 2..5 are 1, 0, 1, 0
    assert float(cmd(x, torch.tensor([[1.0], [1.0]]))) == pytest.approx(2.0)  # 0 + 1 + 0 + 1 + 0
    assert float(cmd(x, torch.tensor([[3.0], [3.0]]))) == pytest.approx(4.0)  # mean gap 2, then 1 + 1
    assert float(cmd(x, torch.tensor([[3.0], [3.0]]), moments=2)) == pytest.approx(3.0)
    # two features: mean gap (1, 1) -> sqrt 2; second moments (1, 0) vs 0 -> 1; fourth (1, 0) -> 1
    x2, y2 = torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert float(cmd(x2, y2)) == pytest.approx(math.sqrt(2) + 2)
    pooled = {"text": x, "audio": torch.tensor([[1.0], [1.0]]), "vision": torch.tensor([[3.0], [3.0]])}
    # pairs (t, a) 2, (t, v) 4, (a, v): mean gap 2, no moments -> 2; mean 8 / 3
    assert float(consistency_loss(pooled)) == pytest.approx(8 / 3)


def test_jsd_between_adjacent_frames_by_hand() -> None:
    p, q = [0.5, 0.5], [0.75, 0.25]
    mid = [0.625, 0.375]
    by_hand = 0.5 * sum(a * math.log(a / b) for a, b in zip(p, mid, strict=True)) + \
        0.5 * sum(a * math.log(a / b) for a, b in zip(q, mid, strict=True))
    assert float(jensen_shannon(torch.tensor(p), torch.tensor(q))) == pytest.approx(by_hand, rel=1e-5)
    # one sample, frames (0, 0), (ln 3, 0), (ln 3, 0): softmax (.5, .5), (.75, .25), (.75, .25); pairs JSD, 0
    sample = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [math.log(3), 0.0]])
    assert float(sequential_variation_loss(sample[None], torch.tensor([3]))) == pytest.approx(by_hand / 2, rel=1e-5)
    # padding after length 2: only the pair (0, 1) counts
    assert float(sequential_variation_loss(sample[None], torch.tensor([2]))) == pytest.approx(by_hand, rel=1e-5)
    # the batch mean comes before the JSD: sample 0 (0, 0) -> (ln 3, 0), sample 1 (ln 3, 0) -> (0, 0) have the
    # same batch-mean distribution (.625, .375) at both frames, so the divergence is 0
    swapped = torch.stack([sample[:2], sample[:2].flip(0)])  # (2, 2, 2)
    assert float(sequential_variation_loss(swapped, torch.tensor([2, 2]))) == pytest.approx(0.0, abs=1e-7)
    # with sample 1 cut to one frame, the pair's batch mean is sample 0 alone again
    assert float(sequential_variation_loss(swapped, torch.tensor([2, 1]))) == pytest.approx(by_hand, rel=1e-5)


def test_reconstruction_compares_one_vector_with_every_valid_frame_then_averages_modalities() -> None:
    frames = torch.tensor([[[1.0, 3.0], [3.0, 1.0], [9.0, 9.0]]])  # (1, 3, 2), third frame padding
    # r = (2, 2): frame errors (1 + 1) / 2 = 1 and (1 + 1) / 2 = 1 -> 1; audio r = frames -> 0; mean 0.5
    got = reconstruction_loss({"text": torch.tensor([[2.0, 2.0]]), "audio": torch.tensor([[1.0, 3.0]])},
                              {"text": frames, "audio": torch.tensor([[[1.0, 3.0]] * 3])}, torch.tensor([2]))
    assert float(got) == pytest.approx(0.5)


def test_resampling_three_frames_onto_five_steps_by_hand() -> None:
    x = torch.tensor([[0.0, 10.0], [2.0, 20.0], [6.0, 0.0]])
    out = resample_frames(x, 5)  # positions 0, .5, 1, 1.5, 2
    assert out.tolist() == [[0.0, 10.0], [1.0, 15.0], [2.0, 20.0], [4.0, 10.0], [6.0, 0.0]]
    assert resample_frames(x, 3) is x  # equal lengths: the identity
    # a padded batch: sample 0 has 3 valid frames of 4 and text length 5; sample 1 4 frames, text length 2
    batch = torch.zeros(2, 4, 2)
    batch[0, :3] = x
    batch[1] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    aligned = align_to_text(batch, torch.tensor([3, 4]), torch.tensor([5, 2]), 5)
    assert aligned.shape == (2, 5, 2)
    assert torch.equal(aligned[0], out) and aligned[1].tolist() == [[0.0, 0.0], [3.0, 3.0]] + [[0.0, 0.0]] * 3


def test_the_batched_alignment_equals_resampling_each_sample_alone() -> None:
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(5, 6, 3, generator=gen)  # (B, T_m, D)
    lengths, text_lengths = torch.tensor([6, 1, 4, 3, 0]), torch.tensor([9, 4, 1, 3, 2])  # 1 frame, 1 step, equal
    aligned = align_to_text(x, lengths, text_lengths, 9)
    for i in range(5):
        n_in, n_out = max(int(lengths[i]), 1), max(int(text_lengths[i]), 1)
        assert torch.equal(aligned[i, :n_out], resample_frames(x[i, :n_in], n_out)), i
        assert torch.count_nonzero(aligned[i, n_out:]) == 0


def test_the_hard_gate_is_zero_or_one_without_gradient() -> None:
    z = torch.tensor([-2.0, -0.1, 0.0, 0.3, 5.0], requires_grad=True)
    gate = hard_gate(z)
    assert gate.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0] and not gate.requires_grad


def test_weights_and_ablations() -> None:
    assert loss_weights(SATIParams()) == {"dom": 0.4, "cmd": 1.0, "recon": 1.0, "jsd": 1.0}
    assert loss_weights(SATIParams(use_adversarial=False, use_svr=False)) == {"dom": 0.0, "cmd": 1.0, "recon": 1.0,
                                                                               "jsd": 0.0}


def test_paper_fields() -> None:
    mosi, mosei = SATI.paper_fields("mosi", "quick"), SATI.paper_fields("mosei", "full")
    assert mosi["batch_size"] == 64 and mosei["batch_size"] == 16 and mosi["max_epochs"] == QUICK_EPOCHS
    assert "max_epochs" not in SATI.paper_fields("mosi", "smoke")  # smoke keeps its epochs
    assert mosei["max_epochs"] == 50 and mosi["task_params"] == {"loss": "mse", "checkpoint": "acc2_has0"}
    # the code: MOSI patience 100 of 50 epochs (never stops early), start_saving 0.4; MOSEI start_saving 0.0
    assert mosi["early_stopping"] is False and mosei["early_stopping"] is False
    assert mosi["method_params"] == {"start_saving": 0.4} and mosei["method_params"] == {"start_saving": 0.0}
    assert mosi["model_params"] == {"size": "quick"} and mosei["model_params"] == {"size": "paper"}
    assert "optimizer" not in mosi  # Adam is the presets' default; an SGD row stays SGD (its own run id)


def test_the_best_checkpoint_is_kept_from_the_codes_start_saving_epoch() -> None:
    # the code: start_saving_epoch = int(n_epoch * start_saving) = int(50 * 0.4) = 20
    assert first_checkpoint_epoch(50, 0.4) == 20 and first_checkpoint_epoch(30, 0.4) == 12
    assert first_checkpoint_epoch(12, 0.4) == 4 and first_checkpoint_epoch(50, 0.0) == 0
    state = type("State", (), {"cfg": _config(max_epochs=50), "params": SATIParams()})()
    assert [e for e in range(50) if SATI().checkpoint_epoch(e, state)] == list(range(20, 50))
    assert SATIParams().margin_kind == "cosine"  # what the code computes


# -- the model ------------------------------------------------------------------------------------------------


def _net(gate: str = "own", size: str = "quick"):
    spec = ModelSpec(TAV, (("text", 768), ("audio", 5), ("vision", 20)), (), 1,
                     (("align", "resample"), ("size", size), ("vision_gate", gate)))
    return model_class("sati").build(spec)


def _batch():
    from bench.batch import Batch

    gen = torch.Generator().manual_seed(0)
    inputs = {"text": torch.randn(2, 6, 768, generator=gen), "audio": torch.randn(2, 9, 5, generator=gen),
              "vision": torch.randn(2, 11, 20, generator=gen)}
    lengths = {"text": torch.tensor([6, 4]), "audio": torch.tensor([9, 5]), "vision": torch.tensor([11, 3])}
    return Batch(inputs, lengths, torch.zeros(2), torch.arange(2))


def test_the_model_aligns_onto_the_text_and_the_vision_gate_choice_uses_the_audio_layers() -> None:
    net = _net().eval()
    with torch.no_grad():
        parts = net.parts(_batch())
    assert parts.logits.shape == (2, 1) and parts.shared["vision"].shape == (2, 6, 32)
    assert parts.reconstructed["audio"].shape == (2, 32) and parts.gates["vision"].shape == (2, 6, 1)
    assert parts.lengths.tolist() == [6, 4]
    reuse = _net("reuse_audio").eval()
    reuse.load_state_dict(net.state_dict())
    with torch.no_grad():
        # the code's vision gate: its own FBP (fbp_vt), then the audio gate's Linear (fc_gate_at)
        shared = parts.shared
        pooled = net.gates["vision"].pool(shared["vision"], shared["text"])
        assert torch.equal(reuse.gate("vision", shared), hard_gate(net.gates["audio"].linear(pooled)))
        assert torch.equal(reuse.gate("audio", shared), net.gate("audio", shared))
    paper = _net(size="paper")
    assert paper.hidden == 128 and paper.head[0].in_features == 256 and paper.margin_weight.shape == (3, 128)
    # W: nn.Linear(128, 3, bias=False)'s default init, U(-1/sqrt(128), 1/sqrt(128)) = U(-0.0884, 0.0884)
    assert float(paper.margin_weight.detach().abs().max()) <= 1 / math.sqrt(128)


def test_cross_attention_is_the_codes_by_hand() -> None:
    # one head, H = 2, q / k / v / out the identity (out bias 0), no dropout: scores q k^T / sqrt(2)
    attention = CrossAttention(2, 1, dropout=0.0)
    with torch.no_grad():
        for layer in (attention.query, attention.key, attention.value, attention.out):
            layer.weight.copy_(torch.eye(2))
        attention.out.bias.zero_()
    assert attention.query.bias is None and attention.key.bias is None and attention.value.bias is None
    q = torch.tensor([[[1.0, 0.0]]])  # (1, 1, 2)
    kv = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    # scores [1, 0] / sqrt(2) = [0.70711, 0]: softmax [e^0.70711, 1] / (e^0.70711 + 1) = [0.669762, 0.330238]
    out = attention(q, kv)
    assert torch.allclose(out, torch.tensor([[[0.669762, 0.330238]]]), atol=1e-5)
    # a padded key is left out: only the first key -> [1, 0]
    masked = attention(q, kv, key_padding_mask=torch.tensor([[False, True]]))
    assert torch.allclose(masked, torch.tensor([[[1.0, 0.0]]]))
    assert attention.drop.p == 0.0 and CrossAttention(2, 1).drop.p == 0.2  # the code's output dropout


def test_forward_is_the_head_output_of_parts() -> None:
    net = _net().eval()
    with torch.no_grad():
        assert torch.equal(net(_batch()).logits, net.parts(_batch()).logits)


# -- configuration errors ----------------------------------------------------------------------------------------


def test_bad_combinations_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs exactly 3 modalities"):
        validate_config(smoke_config(method="sati", modalities=("audio", "vision"), **REGRESSION))
    assert smoke_config(method="sati", modalities=TAV).task == "regression"  # its only task, when none is given
    with pytest.raises(ConfigError, match="no classification form"):
        validate_config(smoke_config(method="sati", modalities=TAV, task="classification"))
    with pytest.raises(ConfigError, match="vision_gate must be one of"):
        validate_config(_config(method_params={"vision_gate": "other"}))
    with pytest.raises(ConfigError, match="margin_kind must be one of"):
        validate_config(_config(method_params={"margin_kind": "other"}))


def test_the_cli_exits_2_without_text(capsys) -> None:
    code = bench("run", "--method", "sati", "--modalities", "audio,vision", "--task", "regression",
                 "--dataset", "synth-mosi", "--profile", "smoke", "--seeds", "0")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'sati' needs exactly 3 modalities, got 2 (audio, vision)" in err[0]


# -- the hook and runs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, terms", [({}, ("dom", "cmd", "recon", "jsd")),
                                          ({"use_adversarial": False}, ("cmd", "recon", "jsd")),
                                          ({"use_svr": False}, ("dom", "cmd", "recon"))])
def test_loss_is_task_plus_the_weighted_terms_left(flags, terms) -> None:
    from bench.data import load_dataset

    trainer = build_trainer(_config(method_params=flags), load_dataset("synth-mosi", "smoke"))
    state = trainer.state
    batch = next(iter(state.batches("train")))
    loss, logs = get_method("sati").loss(trainer.model, batch, state)
    weights = loss_weights(SATIParams(**flags))
    assert {k for k in logs if k != "loss/task"} == {f"loss/{t}" for t in terms}
    expected = logs["loss/task"] + sum(weights[t] * logs[f"loss/{t}"] for t in terms)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_the_gradient_value_clip_bounds_every_entry() -> None:
    from bench.data import load_dataset

    trainer = build_trainer(_config(), load_dataset("synth-mosi", "smoke"))
    for p in trainer.model.parameters():
        p.grad = torch.full_like(p, 3.0)
    get_method("sati").after_backward(trainer.model, trainer.state)
    assert all(float(p.grad.abs().max()) == 1.0 for p in trainer.model.parameters())


def test_smoke_run_on_synth_mosi_logs_the_terms_and_reconstruction_falls() -> None:
    result = train_run(_config(max_epochs=4, batch_size=32, lr=1e-3))
    assert result.status == "ok", result.error
    for term in ("task", "dom", "cmd", "recon", "jsd"):
        assert len(_series(result, term)) == 8  # 48 samples / 32 -> 2 steps per epoch, 4 epochs
    recon = _series(result, "recon")
    assert sum(recon[-2:]) < sum(recon[:2])
    assert dict(result.config.model_params) == {"align": "resample", "size": "quick", "vision_gate": "own"}


def test_concat_runs_on_the_sati_model_with_the_task_loss_only() -> None:
    result = train_run(smoke_config(method="concat", model="sati", modalities=TAV, **REGRESSION))
    assert result.status == "ok", result.error
    assert _series(result, "dom") == [] and math.isfinite(result.metrics["test_mae"])


def test_runs_on_a_real_schema_unaligned_mmsa_file(tiny_record, write_record) -> None:
    path = write_record(tiny_record())  # text (5, 8), audio (7, 3), vision (6, 4) with *_lengths keys
    cfg = make_config(str(path), "full", method="sati", modalities=TAV, max_epochs=1, **REGRESSION)
    result = train_run(cfg)
    assert result.status == "ok", result.error
    assert len(_series(result, "jsd")) == 1 and math.isfinite(result.metrics["test_mae"])


def _aligned(record: dict) -> dict:
    """The record with every modality on 50 steps and one true length per sample (as aligned_50 files)."""
    rng = np.random.default_rng(7)
    for part in record.values():
        n = len(part["regression_labels"])
        lengths = rng.integers(2, 51, size=n)
        for m, dim in (("text", 8), ("audio", 3), ("vision", 4)):
            x = rng.normal(size=(n, 50, dim)).astype(np.float32) + 0.5
            x[np.arange(50)[None, :] >= lengths[:, None]] = 0.0
            part[m] = x
            if m != "text":
                part[f"{m}_lengths"] = lengths.astype(np.int64)
    return record


def test_runs_on_a_real_schema_aligned_mmsa_file_where_alignment_is_the_identity(tiny_record, write_record) -> None:
    path = write_record(_aligned(tiny_record()))
    cfg = make_config(str(path), "full", method="sati", modalities=TAV, max_epochs=1, **REGRESSION)
    result = train_run(cfg)
    assert result.status == "ok", result.error
    from bench.data import load_dataset

    batch = next(iter(build_trainer(cfg, load_dataset(str(path), "full")).state.batches("train")))
    assert torch.equal(batch.lengths["audio"], batch.lengths["text"])
    aligned = align_to_text(batch.inputs["audio"], batch.lengths["audio"], batch.lengths["text"],
                            int(batch.lengths["text"].max()))
    assert torch.equal(aligned, batch.inputs["audio"][:, : aligned.shape[1]])


def test_same_config_and_seed_give_the_same_numbers() -> None:
    first, second = train_run(_config(max_epochs=1)), train_run(_config(max_epochs=1))
    assert _series(first, "jsd") == _series(second, "jsd") and first.metrics == second.metrics
