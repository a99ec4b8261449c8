"""FeaDA: partner selection, pair lists, NT-Xent, the KL and unimodal terms by hand; weights and ablations;
the model's masks, prompts and groups; runs on synth-mosi, the concat baseline on the feada model, an MMSA file."""

from __future__ import annotations

import math

import pytest
import torch
from clitools import bench
from tiny import TAV, smoke_config

from bench.config import PROFILE_SETTINGS, ConfigError
from bench.methods import get_method, validate_config
from bench.methods.feada import (
    FeaDA,
    anchor_pairs,
    code_descriptors,
    contrastive_loss,
    kl_augmentation_loss,
    loss_weights,
    min_max_scale,
    nt_xent,
    raw_descriptors,
    select_partners,
    unimodal_loss,
)
from bench.models import model_class
from bench.models.base import ModelSpec
from bench.models.feada import (
    SLOTS,
    CodeCrossModalLayer,
    FeaDANet,
    first_query_window,
    sinusoidal_positions,
    summarised_first_token,
)
from bench.plan.resolve import make_config, plan
from bench.recipes import recipe
from bench.train import build_trainer, train_run

torch.set_num_threads(1)
REGRESSION = {"task": "regression", "task_params": {"loss": "mse"}}


def _config(**fields):
    return smoke_config(method="feada", modalities=TAV, **{**REGRESSION, **fields})


def _net(prompt: str = "concat", dims: tuple[int, int, int] = (6, 3, 4), text_summary: str = "mean",
         cross_block: str = "code") -> FeaDANet:
    params = (("cross_block", cross_block), ("prompt", prompt), ("size", "quick"), ("text_summary", text_summary))
    spec = ModelSpec(TAV, tuple(zip(TAV, dims, strict=True)), (), 1, params)
    return model_class("feada").build(spec)


def _batch(lengths: dict[str, list[int]], seed: int = 0):
    from bench.batch import Batch

    gen = torch.Generator().manual_seed(seed)
    dims, steps = {"text": 6, "audio": 3, "vision": 4}, {"text": 5, "audio": 7, "vision": 6}
    inputs = {m: torch.randn(len(lengths[m]), steps[m], dims[m], generator=gen) for m in TAV}
    for m in TAV:
        for i, n in enumerate(lengths[m]):
            inputs[m][i, n:] = 0.0
    size = len(lengths["text"])
    return Batch(inputs, {m: torch.tensor(lengths[m]) for m in TAV}, torch.linspace(-2, 2, size), torch.arange(size))


# -- formulas by hand --------------------------------------------------------------------------------------


def test_weights_paper_and_code_and_ablations() -> None:
    assert loss_weights("paper") == {"uni": 0.02, "con": 0.03, "kl": 0.01}
    assert loss_weights("code") == {"uni": 0.03, "con": 0.02, "kl": 0.09}
    assert loss_weights("paper", use_uni=False, use_kl=False) == {"uni": 0.0, "con": 0.03, "kl": 0.0}
    assert loss_weights("code", use_con=False) == {"uni": 0.03, "con": 0.0, "kl": 0.09}


def test_nt_xent_by_hand() -> None:
    # a = (1, 0), p = (0, 2), n = (-3, 0): cos(a, p) = 0, cos(a, n) = -1; / tau 0.5 -> 0 and -2
    features = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    # -log(e^0 / (e^0 + e^-2)) = log(1 + e^-2) = 0.126928
    assert float(nt_xent(features, [(0, 1)], [(0, 2)])) == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    # a second positive (p, n) has cos 0 and no negative with anchor row 1: -log(e^0 / e^0) = 0; the mean halves
    two = nt_xent(features, [(0, 1), (1, 2)], [(0, 2)])
    assert float(two) == pytest.approx(math.log1p(math.exp(-2.0)) / 2, rel=1e-6)
    # tau = 1: scores 0 and -1 -> log(1 + e^-1)
    assert float(nt_xent(features, [(0, 1)], [(0, 2)], tau=1.0)) == pytest.approx(math.log1p(math.exp(-1.0)))


def test_anchor_pairs_are_the_official_lists_for_two_neighbours_and_four_outliers() -> None:
    positives, negatives = anchor_pairs(2, 4)  # 7 samples, rows s * 7 + p
    official_pos_a = [0, 0, 7, 7, 14, 14, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    official_pos_b = [1, 2, 8, 9, 15, 16, 7, 14, 8, 15, 9, 16, 10, 17, 11, 18, 12, 19, 13, 20]
    official_neg_a = [0, 0, 0, 0, 7, 7, 7, 7, 14, 14, 14, 14] + [p for p in range(7) for _ in range(3)]
    official_neg_b = [3, 4, 5, 6, 10, 11, 12, 13, 17, 18, 19, 20] + [21 + p + 7 * k for p in range(7) for k in range(3)]
    assert sorted(positives) == sorted(zip(official_pos_a, official_pos_b, strict=True))
    assert sorted(negatives) == sorted(zip(official_neg_a, official_neg_b, strict=True))
    # no partners: T_s-V_s, T_s-A_s positives, T_s vs the three dissimilar features negatives
    assert anchor_pairs(0, 0) == ([(0, 1), (0, 2)], [(0, 3), (0, 4), (0, 5)])


def test_select_partners_by_hand() -> None:
    descriptors = torch.tensor([[1.0, 0.0], [1.0, 0.1], [1.0, 0.5], [0.0, 1.0],
                                [1.0, 0.2], [1.0, 1.0], [0.1, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0.4, 0.2, -0.3, 0.1, 1.6, 2.2, 1.0, -2.0])  # rounded 0, 0, 0, 0, 2, 2, 1, -2
    neighbours, outliers = select_partners(descriptors, labels)[0]
    # same label by cosine with (1, 0): 1 (0.995), 2 (0.894), 3 (0) -> the 2 nearest
    assert neighbours == [1, 2]
    # other labels: 4 (0.981), 5 (0.707), 6 (0.0995), 7 (0): near 4, 5; far 7, 6
    assert outliers == [4, 5, 7, 6]
    # sample 6 (label 1) has no same-label partner
    assert select_partners(descriptors, labels)[6][0] == []


def test_the_codes_descriptors_by_hand() -> None:
    # 2 samples; text (T 2, D 1): [[2], [0]] and [[4], [6]] -> sums / 2 = 1 and 5 (unscaled, padding counted)
    # audio (T 2, D 1) values [[0], [10]] and [[5], [0]] (sample 1 padded after 1 frame): min 0, max 10 over
    # every frame -> scaled to [-1, 1]: [[-1], [1]] and [[0], [-1]]; sums [0] and [-1], divided by the true
    # lengths 2 and 1: 0 and -1. vision (T 1): [[3]] and [[7]]: min 3, max 7 -> -1 and 1, lengths 1.
    features = {"text": torch.tensor([[[2.0], [0.0]], [[4.0], [6.0]]]),
                "audio": torch.tensor([[[0.0], [10.0]], [[5.0], [0.0]]]),
                "vision": torch.tensor([[[3.0]], [[7.0]]])}
    lengths = {"text": torch.tensor([1, 2]), "audio": torch.tensor([2, 1]), "vision": torch.tensor([1, 1])}
    # columns: text, vision, audio
    assert code_descriptors(features, lengths).tolist() == [[1.0, -1.0, 0.0], [5.0, 1.0, -1.0]]


def test_descriptors_mean_over_true_lengths_then_min_max() -> None:
    batch = _batch({"text": [2, 5], "audio": [7, 1], "vision": [3, 6]})
    d = raw_descriptors(batch.inputs, batch.lengths)  # (2, 6 + 3 + 4)
    assert d.shape == (2, 13)
    assert torch.allclose(d[0, :6], batch.inputs["text"][0, :2].mean(0))
    assert torch.allclose(d[1, 6:9], batch.inputs["audio"][1, :1].mean(0))
    scaled = min_max_scale(torch.tensor([[1.0, 5.0], [3.0, 5.0], [2.0, 5.0]]))
    assert scaled.tolist() == [[0.0, 0.0], [1.0, 0.0], [0.5, 0.0]]


def test_contrastive_loss_reads_the_table_slot_major() -> None:
    gen = torch.Generator().manual_seed(1)
    features = torch.randn(3, 6, 4, generator=gen)  # (B, slots, k)
    partners = [([1], [2]), ([], [0])]
    table0 = torch.stack([features[p, s] for s in range(6) for p in (0, 1, 2)])  # row s * 3 + p
    table1 = torch.stack([features[p, s] for s in range(6) for p in (1, 0)])
    expected = (nt_xent(table0, *anchor_pairs(1, 1)) + nt_xent(table1, *anchor_pairs(0, 1))) / 2
    assert torch.allclose(contrastive_loss(features, partners), expected)


def test_contrastive_loss_groups_anchors_by_partner_count_and_still_averages_over_anchors() -> None:
    gen = torch.Generator().manual_seed(2)
    features = torch.randn(4, 6, 3, generator=gen)
    partners = [([1], [2, 3]), ([0], [3, 2]), ([], [1]), ([2], [0, 1])]  # counts (1, 2) three times, (0, 1) once

    def one_anchor(i: int) -> torch.Tensor:
        samples = [i, *partners[i][0], *partners[i][1]]
        table = torch.stack([features[p, s] for s in range(6) for p in samples])
        return nt_xent(table, *anchor_pairs(len(partners[i][0]), len(partners[i][1])))

    expected = sum(one_anchor(i) for i in range(4)) / 4  # not the mean of the two group means
    assert torch.allclose(contrastive_loss(features, partners), expected, atol=1e-6)


def test_kl_term_by_hand() -> None:
    # row 1: log_softmax(0, 0) = log 1/2 each; softmax(0, ln 3) = (1/4, 3/4)
    # KL = 1/4 ln((1/4)/(1/2)) + 3/4 ln((3/4)/(1/2)) = 1/4 ln 0.5 + 3/4 ln 1.5; row 2 equal inputs: 0; batchmean
    augmented = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    target = torch.tensor([[0.0, math.log(3.0)], [1.0, 2.0]])
    expected = (0.25 * math.log(0.5) + 0.75 * math.log(1.5)) / 2
    assert float(kl_augmentation_loss(augmented, target)) == pytest.approx(expected, abs=1e-6)


def test_unimodal_loss_targets_y_for_every_head() -> None:
    labels = torch.tensor([1.0, -1.0])
    outputs = {slot: torch.zeros(2, 1) for slot in SLOTS}
    outputs["vision_d"] = torch.tensor([[3.0], [-1.0]])
    # squared errors: vision_d (4, 0); five heads at 0: (1, 1) each -> 14 / 12
    assert float(unimodal_loss(outputs, labels)) == pytest.approx(14.0 / 12.0)


# -- the model ---------------------------------------------------------------------------------------------


def test_padding_beyond_the_true_length_changes_nothing() -> None:
    net = _net().eval()
    batch = _batch({"text": [5, 3], "audio": [7, 2], "vision": [6, 4]})
    before = net.decompose(batch)
    batch.inputs["audio"][1, 2:] = 9.0  # garbage inside the batch's max length, past sample 1's true length
    batch.inputs["vision"][1, 4:] = -7.0
    after = net.decompose(batch)
    assert torch.allclose(before.logits, after.logits, atol=1e-6)
    assert torch.allclose(before.similar["audio"], after.similar["audio"], atol=1e-6)


def test_token_0_becomes_the_mean_of_the_valid_tokens() -> None:
    x = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [5.0, 4.0], [0.0, 0.0]]])  # (1, 4, 2), the last step padded
    pad = torch.tensor([[False, False, False, True]])
    out = summarised_first_token(x, pad)
    assert out[0, 0].tolist() == [3.0, 2.0]  # (1 + 3 + 5) / 3, (0 + 2 + 4) / 3
    assert torch.equal(out[:, 1:], x[:, 1:])


def test_text_summary_mean_lets_every_token_reach_the_head_and_token0_only_the_first() -> None:
    batch = _batch({"text": [5, 5], "audio": [7, 7], "vision": [6, 6]})
    for summary, moves in (("mean", True), ("token0", False)):
        torch.manual_seed(0)
        net = _net(text_summary=summary).eval()
        before = net.decompose(batch).logits
        batch.inputs["text"][:, 3] += 5.0  # a token past the first
        after = net.decompose(batch).logits
        batch.inputs["text"][:, 3] -= 5.0
        assert (not torch.allclose(before, after, atol=1e-6)) == moves, summary


def test_association_reads_only_query_position_0_and_equals_the_full_query_sequence() -> None:
    net = _net(cross_block="ours").eval()
    branch = net.encoders["audio"]
    gen = torch.Generator().manual_seed(3)
    tokens, x = torch.randn(2, 5, net.dim, generator=gen), torch.randn(2, 7, 3, generator=gen)
    pad = torch.tensor([[False] * 7, [False] * 4 + [True] * 3])
    kv, kv_pad = branch.prompted(x, pad)
    out = tokens
    for layer in branch.layers:  # every text position as a query, as a MulT block would run it
        out = layer(out, kv, kv_pad)
    assert torch.allclose(branch(tokens, x, pad), branch.norm(out)[:, 0], atol=1e-5)


def test_the_codes_positions_and_causal_window_by_hand() -> None:
    # dim 4: half 2, rates exp(-i log(10000) / (2 - 1)) = [1, 1e-4]; position 1: [sin 1, sin 1e-4, cos 1, cos 1e-4]
    table = sinusoidal_positions(2, 4, torch.device("cpu"))
    assert torch.allclose(table[0], torch.tensor([math.sin(1.0), math.sin(1e-4), math.cos(1.0), math.cos(1e-4)]))
    assert torch.allclose(table[1], torch.tensor([math.sin(2.0), math.sin(2e-4), math.cos(2.0), math.cos(2e-4)]))
    # buffered_future_mask: triu(-inf, 1 + |T_k - T_q|): query 0 sees keys 0..|T_k - T_q|
    assert first_query_window(50, 375) == 326 and first_query_window(5, 8) == 4 and first_query_window(5, 5) == 1


def test_the_codes_cross_block_ignores_keys_beyond_the_causal_window() -> None:
    net = _net().eval()  # cross_block "code"
    branch = net.encoders["audio"]
    assert isinstance(branch.layers[0], CodeCrossModalLayer) and branch.layers[0].fc1.out_features == net.dim
    gen = torch.Generator().manual_seed(3)
    tokens, x = torch.randn(2, 5, net.dim, generator=gen), torch.randn(2, 7, 3, generator=gen)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    # 7 audio steps + the concatenated prompt = 8 keys, 5 text steps: query 0 sees keys 0..3
    base = branch(tokens, x, pad)
    later = x.clone()
    later[:, 4:] = torch.randn(2, 3, 3, generator=gen)  # keys 4..6 (and the prompt, key 7): outside
    assert torch.allclose(branch(tokens, later, pad), base, atol=1e-6)
    inside = x.clone()
    inside[:, 3] += 1.0  # key 3: inside
    assert not torch.allclose(branch(tokens, inside, pad), base, atol=1e-4)


def test_prompt_modes() -> None:
    assert torch.count_nonzero(_net("concat").encoders["audio"].prompt) == 0  # the paper: zeros
    assert torch.all(_net("add").encoders["audio"].prompt > 0)  # the code: torch.rand
    assert not _net("none").encoders["vision"].prompt.requires_grad
    trainer = build_trainer(_config(method_params={"use_prompt": False}), _tiny())
    assert trainer.model.encoders["audio"].prompt_mode == "none"
    trainer = build_trainer(_config(method_params={"prompt": "add"}), _tiny())
    assert trainer.model.encoders["vision"].prompt_mode == "add"


def _tiny():
    from tiny import make_tiny_dataset

    return make_tiny_dataset()


def test_groups_and_train_projectors() -> None:
    method = get_method("feada")
    cfg = _config(lr=1e-3, weight_decay=1e-3, group_lrs={"audio": 2e-3})
    net = _net()
    groups = {g["name"]: g for g in method.param_groups(net, cfg)}
    assert set(groups) == {"text", "audio", "vision", "head"}
    # official rates: text 5e-5, vision 1e-3 (MOSI), other = cfg.lr; group_lrs wins (audio)
    assert [groups[g]["lr"] for g in ("text", "audio", "vision", "head")] == [5e-5, 2e-3, 1e-3, 1e-3]
    assert groups["text"]["weight_decay"] == 1e-3
    mosei = {g["name"]: g for g in method.param_groups(net, make_config("synth-mosei", "smoke", method="feada",
                                                                         modalities=TAV, **REGRESSION))}
    assert mosei["vision"]["lr"] == 1e-4 and mosei["text"]["weight_decay"] == 1e-2
    projector_ids = {id(p) for p in net.projector_parameters()}
    assert projector_ids <= {id(p) for p in groups["head"]["params"]}
    frozen_cfg = _config(method_params={"train_projectors": False})
    kept = {id(p) for g in method.param_groups(net, frozen_cfg) for p in g["params"]}
    assert not projector_ids & kept and id(net.head[0].weight) in kept


def test_paper_fields() -> None:
    mosi, mosei = FeaDA.paper_fields("mosi", "quick"), FeaDA.paper_fields("mosei", "full")
    # MOSI/config.py update_epochs = 4: TVA_train.py steps the optimizer every 4 batches
    assert (mosi["batch_size"], mosi["step_every"], mosi["model_params"]["size"]) == (32, 4, "quick")
    assert mosi["task_params"] == {"loss": "mse", "checkpoint": "loss"}
    # the quick budget (docs/methods/feada.md, "The quick budget"): the recipe's quick_epochs, above the profile's
    # 12, which left seeds on the start's plateau under the code's step-every-4 (CH-SIMS reads the generic
    # block); smoke keeps its epochs
    quick_epochs = {name: FeaDA.paper_fields(name, "quick")["max_epochs"] for name in ("mosi", "mosei", "sims")}
    assert quick_epochs == {name: recipe(block).method("feada")["quick_epochs"]
                            for name, block in (("mosi", "mosi"), ("mosei", "mosei"), ("sims", "generic"))}
    assert min(quick_epochs.values()) > PROFILE_SETTINGS["quick"].max_epochs
    assert "max_epochs" not in FeaDA.paper_fields("mosi", "smoke")
    assert mosi["early_stopping"] is False and mosi["scheduler"] == "none"
    assert (mosei["batch_size"], mosei["step_every"], mosei["max_epochs"]) == (16, 4, 25)
    assert mosei["lr"] == 1e-3 and mosei["model_params"]["size"] == "paper"


# -- configuration errors ------------------------------------------------------------------------------------


def test_the_quick_budget_reaches_the_planned_run_and_the_user_still_wins() -> None:
    """Through the planning chain: the recipe's quick_epochs set max_epochs (so it is in the run id), by
    dataset family; a user's epochs win over it; the full profile keeps the paper's 25."""
    def planned(dataset: str, profile: str = "quick", **fields):
        return plan(dataset, "feada", "text,audio,vision", profile=profile, task="regression", **fields)

    mosi, sims = planned("synth-mosi"), planned("synth-sims")
    assert (mosi.config.max_epochs, sims.config.max_epochs) == (36, 56)
    assert mosi.origins["max_epochs"] == "method recipe (feada)"
    assert mosi.config.run_id != planned("synth-mosi", max_epochs=12).config.run_id
    user = planned("synth-mosi", max_epochs=5)
    assert (user.config.max_epochs, user.origins["max_epochs"]) == (5, "user")
    assert planned("synth-mosi", profile="full").config.max_epochs == 25


def test_bad_combinations_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="needs exactly 3 modalities"):
        validate_config(smoke_config(method="feada", modalities=("audio", "vision"), **REGRESSION))
    assert smoke_config(method="feada", modalities=TAV).task == "regression"  # its only task, when none is given
    with pytest.raises(ConfigError, match="no classification form"):
        validate_config(smoke_config(method="feada", modalities=TAV, task="classification"))
    with pytest.raises(ConfigError, match="modality_outputs"):  # ogm needs per-modality outputs
        validate_config(smoke_config(method="ogm", model="feada", modalities=TAV))
    with pytest.raises(ConfigError, match="weights must be one of"):
        validate_config(_config(method_params={"weights": "other"}))


def test_the_cli_exits_2_without_text(capsys) -> None:
    code = bench("run", "--method", "feada", "--modalities", "audio,vision", "--task", "regression",
                 "--dataset", "synth-mosi", "--profile", "smoke", "--seeds", "0")
    assert code == 2
    assert "'feada' needs exactly 3 modalities, got 2 (audio, vision)" in capsys.readouterr().err


# -- the hook and runs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags, terms", [({}, ("uni", "con", "kl")), ({"use_uni": False, "use_kl": False}, ("con",)),
                                          ({"use_con": False}, ("uni", "kl"))])
def test_loss_is_task_plus_the_weighted_terms_left(flags, terms) -> None:
    from bench.methods import TrainState

    tiny = _tiny()
    trainer = build_trainer(_config(method_params=flags), tiny)
    state: TrainState = trainer.state
    method = get_method("feada")
    method.on_train_start(trainer.model, state)
    batch = next(iter(state.batches("train")))
    loss, logs = method.loss(trainer.model, batch, state)
    weights = loss_weights("paper", **flags)
    expected = logs["loss/task"] + sum(weights[t] * logs[f"loss/{t}"] for t in terms)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert ("loss/con" in logs) == ("con" in terms)


def _series(result, modality: str) -> list[float]:
    return [row["value"] for row in result.trajectory if row["series"] == "loss" and row["modality"] == modality]


def test_smoke_run_on_synth_mosi_logs_the_terms_and_the_contrastive_loss_falls() -> None:
    result = train_run(_config(max_epochs=4, batch_size=32))
    assert result.status == "ok", result.error
    for term in ("task", "uni", "con", "kl"):
        assert len(_series(result, term)) == 8  # 48 samples / 32 -> 2 steps per epoch, 4 epochs
    con = _series(result, "con")
    assert sum(con[-2:]) < sum(con[:2])
    assert result.config.model_params == (("cross_block", "code"), ("prompt", "concat"), ("size", "quick"),
                                          ("text_summary", "mean"))


def test_concat_runs_on_the_feada_model_with_the_task_loss_only() -> None:
    result = train_run(smoke_config(method="concat", model="feada", modalities=TAV, **REGRESSION))
    assert result.status == "ok", result.error
    assert _series(result, "con") == [] and math.isfinite(result.metrics["test_mae"])


def test_runs_on_a_real_schema_unaligned_mmsa_file(tiny_record, write_record) -> None:
    path = write_record(tiny_record())  # text (5, 8), audio (7, 3), vision (6, 4) with *_lengths keys
    cfg = make_config(str(path), "full", method="feada", modalities=TAV, max_epochs=1, **REGRESSION)
    result = train_run(cfg)
    assert result.status == "ok", result.error
    assert len(_series(result, "con")) == 1 and math.isfinite(result.metrics["test_mae"])


def test_same_config_and_seed_give_the_same_numbers() -> None:
    first, second = train_run(_config(max_epochs=1)), train_run(_config(max_epochs=1))
    assert _series(first, "con") == _series(second, "con") and first.metrics == second.metrics


def test_the_paper_size_is_768_wide_with_the_official_layer_counts() -> None:
    spec = ModelSpec(TAV, (("text", 768), ("audio", 5), ("vision", 20)), (), 1, (("size", "paper"),))
    net = model_class("feada").build(spec).eval()
    assert net.dim == 768 and len(net.encoders["audio"].layers) == 5 and len(net.encoders["vision"].layers) == 2
    assert net.p2a.in_features == 384 and net.head[0].in_features == 3 * 768
    # the code's feed-forward widths: encoder_fea_dim (1d) in the decomposition encoders and the MulT blocks
    assert net.summaries["audio"].encoder.layers[0].linear1.out_features == 768
    assert net.encoders["vision"].layers[0].fc1.out_features == 768
    from bench.batch import Batch

    batch = Batch({"text": torch.randn(2, 3, 768), "audio": torch.randn(2, 4, 5), "vision": torch.randn(2, 4, 20)},
                  {m: torch.tensor([3, 2]) for m in TAV}, torch.zeros(2), torch.arange(2))
    with torch.no_grad():
        parts = net.decompose(batch)
    assert parts.logits.shape == (2, 1) and parts.similar["vision"].shape == (2, 384)


def test_two_stages_pretrain_then_freeze_the_auxiliary_encoders() -> None:
    result = train_run(_config(max_epochs=3, method_params={"pretrain_epochs": 1}))
    assert result.status == "ok", result.error
    epochs_of = {term: {row["epoch"] for row in result.trajectory if row["series"] == "loss"
                        and row["modality"] == term} for term in ("pretrain", "con")}
    assert epochs_of == {"pretrain": {0}, "con": {1, 2}}
    assert result.metrics["best_epoch"] >= 1  # the first stage is never a checkpoint
    # the frozen encoders' weights are those at the end of the first stage: run one stage-1 epoch alone
    first = train_run(_config(max_epochs=2, method_params={"pretrain_epochs": 1}))
    key = "summaries.audio.proj.weight"
    assert torch.equal(result.state_dict[key], first.state_dict[key])
    from bench.data import load_dataset

    initial = build_trainer(first.config, load_dataset("synth-mosi", "smoke")).model.state_dict()[key]
    assert not torch.equal(initial, first.state_dict[key])  # the first stage did train them
    with pytest.raises(ConfigError, match="pretrain_epochs"):
        validate_config(_config(max_epochs=2, method_params={"pretrain_epochs": 2}))
