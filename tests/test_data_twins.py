"""The surrogate's twins (bench.data.twins) and the one registry of surrogate names."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import declare

from bench.data import data_fingerprint, load_dataset, synth, twins
from bench.data.loader import load_file
from bench.data.registry import names_text
from bench.data.surrogates import SURROGATE_NAMES, SURROGATES, surrogate_name
from bench.data.types import DataError
from bench.plan.datasets import default_label_rule, recipe_key
from bench.plan.resolve import make_config
from bench.train import train_run

torch.set_num_threads(1)

# Fingerprints of the base surrogate, computed on main before the twins existed (commit 5d2a4f6).
# Every stored run id depends on them: they must never change.
BASE_FINGERPRINTS = {
    ("mosi", "smoke"): "fce7bb5de49f347080db8f4ccbf9a55e94125813638ce4e7ba1a9c41ecda165d",
    ("mosi", "quick"): "25fe90665a62bd08e564bdf2f3a8e5ff00c9aeeb645654a9fa88f2ba849825ae",
    ("mosi", "full"): "af215b947c1ace39d730942e15dcdc93c14d26b38e5c2f9e2c41f4e6e36fe7b1",
    ("mosei", "smoke"): "2aafc42ec4b211ff9104c16ea71ab61b23997ace6ce429b70c4da271776cdd4f",
    ("mosei", "quick"): "21257dc89649d3c1b9bbd65bd05d4dcbe8fcfbc0934243c07390fd579bf7ae70",
    ("mosei", "full"): "1554f73d1a2eddb9739dcbfbb1405c6c81ca46a959e4c42c2e3344d9be74d052",
}
# sha256 over the smoke arrays (features, labels, lengths of every split), also computed on main.
BASE_SMOKE_ARRAYS = {
    "mosi": "b5744c0859e960620f5d7c6507d920ef288ed48bc66de96b73314ec9afa3c1a7",
    "mosei": "beb547a03ac2856cd59c0f94656dcbc4dba891fc3a0557540af9861d367c0ee9",
}
ARRAY_KEYS = ("text", "audio", "vision", "regression_labels", "audio_lengths", "vision_lengths")
TWINS = ("synth-mosi-aligned", "synth-mosei-aligned", "synth-mosei-shift", "synth-mosi-shift")


def _arrays_sha(data: dict) -> str:
    digest = hashlib.sha256()
    for split in synth.RAW_SPLITS:
        for key in ARRAY_KEYS:
            digest.update(np.ascontiguousarray(data[split][key]).tobytes())
    return digest.hexdigest()


# -- the old names are untouched ----------------------------------------------------------------------


@pytest.mark.parametrize(("like", "profile"), sorted(BASE_FINGERPRINTS))
def test_base_fingerprints_are_those_of_before_the_twins(like: str, profile: str) -> None:
    expected = BASE_FINGERPRINTS[(like, profile)]
    assert synth.synth_params(like, profile).fingerprint == expected
    assert data_fingerprint(f"synth-{like}", profile) == expected
    assert "variant" not in synth.synth_params(like, profile).to_json()  # the new fields stay out


@pytest.mark.parametrize("like", sorted(BASE_SMOKE_ARRAYS))  # MOSI / MOSEI: the CH-SIMS-like ones came later
def test_base_smoke_arrays_are_bit_identical_to_before(like: str) -> None:
    assert _arrays_sha(synth.generate(synth.synth_params(like, "smoke"))) == BASE_SMOKE_ARRAYS[like]


def test_a_twin_field_away_from_its_default_enters_the_json() -> None:
    base = synth.synth_params("mosi", "smoke")
    moved = twins.dataclasses.replace(base, direction_cos=0.5)
    assert '"direction_cos":0.5' in moved.to_json() and moved.fingerprint != base.fingerprint


# -- registry and harness names -------------------------------------------------------------------------


def test_registry_names_families_and_messages() -> None:
    assert SURROGATE_NAMES == ("synth-mosi", "synth-mosei", *TWINS, "synth-sims", "synth-simsv2")
    families = {name: recipe_key(name) for name in SURROGATE_NAMES if "sims" not in name}
    assert families == {"synth-mosi": "mosi", "synth-mosei": "mosei", "synth-mosi-aligned": "mosi",
                        "synth-mosei-aligned": "mosei", "synth-mosei-shift": "mosei", "synth-mosi-shift": "mosi"}
    assert default_label_rule("synth-mosei-shift") == "binned"
    assert make_config("synth-mosei-shift").batch_size == 32 and recipe_key("mosei") == "mosei"
    assert surrogate_name("mosi", "shift") == "synth-mosi-shift"
    assert all(name in names_text() for name in (*SURROGATE_NAMES, "mosi", "mosei"))
    with pytest.raises(DataError, match="synth-mosei-shift"):
        load_dataset("/no/such/file.pkl", "smoke")


@pytest.mark.parametrize("name", TWINS)
def test_every_twin_loads_by_name_synthetic_with_its_own_fingerprint(name: str) -> None:
    data = load_dataset(name, "smoke")
    entry = SURROGATES[name]
    assert data.name == name and data.synthetic and name in data.source
    assert data.num_classes == (7 if entry.like == "mosei" else 3)
    assert data.fingerprint == data_fingerprint(name, "smoke") == twins.surrogate_params(name, "smoke").fingerprint
    assert data.fingerprint not in BASE_FINGERPRINTS.values()
    sizes = synth.SIZES[entry.like]["smoke"]
    assert (data.train.size, data.valid.size, data.test.size) == sizes


# -- aligned twins -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "dims"), [("synth-mosi-aligned", {"text": 768, "audio": 5, "vision": 20}),
                                            ("synth-mosei-aligned", {"text": 768, "audio": 74, "vision": 35})])
def test_aligned_twin_shapes_and_word_aligned_lengths(name: str, dims: dict[str, int]) -> None:
    data = load_dataset(name, "smoke")
    assert data.feature_dims == dims
    assert data.seq_lens == {"text": 50, "audio": 50, "vision": 50}
    for split in ("train", "valid", "test"):
        part = data.split(split)
        text = np.asarray(part.lengths["text"])
        for m in ("audio", "vision"):
            np.testing.assert_array_equal(part.lengths[m], text)
            features = np.asarray(part.features[m])  # (N, 50, D)
            rows = np.arange(part.size)
            assert np.all(np.abs(features[rows, text - 1]).sum(-1) > 0)  # last valid step is not padding
            assert not features[np.arange(50)[None, :] >= text[:, None]].any()  # zero after the text length


def test_aligned_twin_shares_labels_ids_and_text_with_the_base() -> None:
    base, aligned = load_dataset("synth-mosi", "smoke"), load_dataset("synth-mosi-aligned", "smoke")
    for split in ("train", "test"):
        np.testing.assert_array_equal(base.split(split).regression, aligned.split(split).regression)
        np.testing.assert_array_equal(base.split(split).ids, aligned.split(split).ids)
        np.testing.assert_array_equal(base.split(split).features["text"], aligned.split(split).features["text"])
    assert not np.array_equal(base.train.lengths["audio"], aligned.train.lengths["audio"])


def test_aligned_pickle_has_no_length_keys_and_loads_back_with_text_lengths(tmp_path: Path) -> None:
    params = twins.surrogate_params("synth-mosei-aligned", "smoke")
    data = synth.generate(params)
    assert "audio_lengths" not in data["train"] and "vision_lengths" not in data["train"]
    path = tmp_path / "MOSEI" / "Processed" / "aligned_50.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(data, protocol=4))
    loaded = load_file(path, "full")
    assert loaded.num_classes == 7  # "mosei" in the path: the MOSEI rule
    plan = synth.plan_splits(params)[0]
    for m in ("text", "audio", "vision"):  # derived from the zero padding = the generated true lengths
        np.testing.assert_array_equal(loaded.train.lengths[m], plan.lengths["text"])


@pytest.mark.parametrize("lengths", ["absent", "all_50"])
def test_a_real_schema_aligned_file_loads(tmp_path: Path, lengths: str) -> None:
    """MMSA aligned_50.pkl: extra keys (text_bert, annotations, classification_labels), lengths absent or
    all equal to the padded 50."""
    rng = np.random.default_rng(0)
    record = {}
    for split, n in (("train", 10), ("valid", 4), ("test", 4)):
        words = rng.integers(3, 51, size=n)  # (N,) true text lengths
        part = {"id": np.array([f"clip{split}{i}" for i in range(n)]),
                "raw_text": np.array(["w " * int(k) for k in words], dtype=object),
                "regression_labels": rng.choice(np.arange(-9, 10) / 3, size=n).astype(np.float32),
                "text_bert": np.zeros((n, 3, 50), dtype=np.float32),
                "annotations": np.array(["Positive"] * n, dtype=object)}
        part["classification_labels"] = np.sign(part["regression_labels"]).astype(np.float32) + 1
        for m, dim in (("text", 768), ("audio", 5), ("vision", 20)):
            x = rng.normal(size=(n, 50, dim)).astype(np.float32)  # (N, 50, D)
            x[np.arange(50)[None, :] >= words[:, None]] = 0.0
            part[m] = x
        if lengths == "all_50":
            part["audio_lengths"] = np.full(n, 50)
            part["vision_lengths"] = np.full(n, 50)
        record[split] = part
    path = tmp_path / "MOSI" / "Processed" / "aligned_50.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(record, protocol=4))
    data = load_file(path, "full")
    assert data.seq_lens == {"text": 50, "audio": 50, "vision": 50}
    assert data.feature_dims == {"text": 768, "audio": 5, "vision": 20}
    expected_audio = record["train"]["audio_lengths"] if lengths == "all_50" else record["train"]["raw_text"]
    if lengths == "absent":
        expected_audio = np.array([len(t.split()) for t in expected_audio])
    np.testing.assert_array_equal(data.train.lengths["audio"], expected_audio)


# -- shift twins -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("twin", "source"), [("synth-mosei-shift", "synth-mosi"), ("synth-mosi-shift", "synth-mosei")])
def test_shift_twin_has_the_source_shapes_and_the_like_labels(twin: str, source: str) -> None:
    shifted, origin = load_dataset(twin, "smoke"), load_dataset(source, "smoke")
    assert shifted.feature_dims == origin.feature_dims and shifted.seq_lens == origin.seq_lens
    assert shifted.modalities == origin.modalities == ("text", "audio", "vision")
    assert shifted.num_classes != origin.num_classes  # the label distribution of the other dataset
    like = SURROGATES[twin].like
    assert (shifted.train.size, shifted.valid.size, shifted.test.size) == synth.SIZES[like]["smoke"]


def _valid_step_mean(data, modality: str) -> np.ndarray:
    """(D,) mean feature vector over every valid step of the train split."""
    x = np.asarray(data.train.features[modality])  # (N, T, D)
    lengths = np.asarray(data.train.lengths[modality])
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]  # (N, T)
    return x[valid].mean(axis=0)


@pytest.mark.parametrize("modality", ["text", "audio", "vision"])
def test_shift_twin_mean_vectors_differ_from_the_source_measured(modality: str) -> None:
    shifted, origin = load_dataset("synth-mosei-shift", "quick"), load_dataset("synth-mosi", "quick")
    gap = np.linalg.norm(_valid_step_mean(shifted, modality) - _valid_step_mean(origin, modality))
    spec = synth.synth_params("mosi", "quick").modality(modality)
    # The designed shift has norm ~ mean_shift * mean_scale * sqrt(D); measurement noise is far smaller.
    designed = twins.MEAN_SHIFT * spec.mean_scale * np.sqrt(spec.dim)
    assert gap > 0.5 * designed


def test_shift_twin_world_is_the_source_world_moved() -> None:
    twin, source = twins.surrogate_params("synth-mosei-shift", "smoke"), synth.synth_params("mosi", "smoke")
    for name in ("text", "audio", "vision"):
        source_mean, source_dir = synth._world(source, source.modality(name))
        twin_mean, twin_dir = synth._world(twin, twin.modality(name))
        assert float(twin_dir @ source_dir) == pytest.approx(twins.DIRECTION_COS)
        assert float(np.linalg.norm(twin_dir)) == pytest.approx(1.0)
        assert not np.allclose(twin_mean, source_mean)
        assert twin.modality(name).speaker == pytest.approx(twins.SPEAKER_SCALE * source.modality(name).speaker)
        # the source's calibration knobs: the same modality imbalance
        assert twin.modality(name).signal == source.modality(name).signal


def test_rotated_direction_by_hand() -> None:
    # direction e1, draw (1, 1): its part orthogonal to e1 is e2, so the result is (cos, sin)
    out = synth.rotated_direction(np.array([1.0, 0.0]), 0.6, np.array([1.0, 1.0]))
    np.testing.assert_allclose(out, [0.6, 0.8])


# -- determinism and training -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TWINS)
def test_twin_generation_is_deterministic(name: str) -> None:
    params = twins.surrogate_params(name, "smoke")
    assert _arrays_sha_any(synth.generate(params)) == _arrays_sha_any(synth.generate(params))
    assert twins.surrogate_params(name, "smoke", seed=1).fingerprint != params.fingerprint


def _arrays_sha_any(data: dict) -> str:
    digest = hashlib.sha256()
    for split in synth.RAW_SPLITS:
        for key in sorted(k for k in data[split] if k not in ("id", "raw_text")):
            digest.update(np.ascontiguousarray(data[split][key]).tobytes())
    return digest.hexdigest()


def test_short_concat_train_on_the_aligned_twin() -> None:
    cfg = make_config("synth-mosi-aligned", "smoke", method="concat", max_epochs=2)
    result = train_run(cfg)
    assert result.status == "ok" and result.synthetic
    assert result.data_fingerprint == data_fingerprint("synth-mosi-aligned", "smoke")
    assert 0.0 <= result.metrics["test_acc"] <= 100.0


# -- the harness reads the registry ------------------------------------------------------------------


def _bench(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of `bench <argv>` (tests/clitools.py runs it in-process)."""
    from clitools import bench

    code = bench(*argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_bench_data_list_and_synth_know_every_twin(tmp_path: Path, capsys) -> None:
    code, out, _ = _bench(["data", "list"], capsys)
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()]
    assert listed[:len(SURROGATE_NAMES) + 3] == [*SURROGATE_NAMES, "mosi", "mosei", "sims"]
    assert all("SYNTHETIC" in line for line in out.splitlines() if line.startswith("synth-"))
    target = tmp_path / "mosei_shift.pkl"
    code, out, _ = _bench(["data", "synth", "--like", "mosei-shift", "--profile", "smoke", "--out", str(target)],
                          capsys)
    assert code == 0 and "SYNTHETIC synth-mosei-shift" in out
    assert twins.surrogate_params("synth-mosei-shift", "smoke").fingerprint in out
    code, _, err = _bench(["data", "synth", "--like", "nope", "--out", str(target)], capsys)
    assert code == 2 and "mosi-aligned" in err


def test_grids_and_presets_accept_the_twins() -> None:
    from bench.gridfile import check_datasets
    from bench.presets import resolve_dataset

    assert check_datasets("grid.toml", TWINS) == TWINS
    assert resolve_dataset("synth-mosei-shift", "auto") == "synth-mosei-shift"


def test_a_front_padded_aligned_file_loads_with_full_lengths(tmp_path: Path) -> None:
    """If a file pads at the front, the last step is never zero: every derived length is the padded 50."""
    rng = np.random.default_rng(1)
    record = {}
    for split, n in (("train", 8), ("valid", 4), ("test", 4)):
        part = {"regression_labels": rng.choice(np.arange(-9, 10) / 3, size=n).astype(np.float32)}
        for m, dim in (("text", 768), ("audio", 5), ("vision", 20)):
            x = rng.normal(size=(n, 50, dim)).astype(np.float32)  # (N, 50, D)
            x[:, :10] = 0.0  # leading padding
            part[m] = x
        record[split] = part
    path = tmp_path / "front" / "aligned_50.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps(record, protocol=4))
    declare(path)
    data = load_file(path, "full")
    assert all((np.asarray(data.test.lengths[m]) == 50).all() for m in ("text", "audio", "vision"))
