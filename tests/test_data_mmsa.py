"""MMSA loading and validation: each error names file, split, key, expected vs found."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.data import load_dataset
from bench.data.mmsa import check, derived_lengths
from bench.data.types import DataError


def _load(path: Path):
    return load_dataset(str(path), "full")


def test_valid_file_loads_with_sizes_and_lengths_from_the_arrays(tiny_record, write_record) -> None:
    record = tiny_record()
    data = _load(write_record(record))
    assert data.modalities == ("text", "audio", "vision")
    assert data.feature_dims == {"text": 8, "audio": 3, "vision": 4}
    assert data.seq_lens == {"text": 5, "audio": 7, "vision": 6}
    assert (data.train.size, data.valid.size, data.test.size) == (12, 6, 6)
    assert not data.synthetic and data.num_classes == 3
    for m in ("text", "audio", "vision"):  # text derived from trailing zeros, the others given
        np.testing.assert_array_equal(data.train.lengths[m], record["train"][f"_true_{m}_lengths"])
    np.testing.assert_array_equal(data.test.regression, record["test"]["regression_labels"])
    assert data.train.ids[0] == record["train"]["id"][0]


def test_aligned_file_without_length_keys_derives_all_lengths(tiny_record, write_record) -> None:
    record = tiny_record(with_lengths=False)
    data = _load(write_record(record))
    np.testing.assert_array_equal(data.valid.lengths["vision"], record["valid"]["_true_vision_lengths"])


def test_derived_length_is_last_nonzero_step_plus_one_and_zero_when_empty() -> None:
    x = np.zeros((3, 6, 2), dtype=np.float32)  # (N, T, D)
    x[0, :4] = 1.0
    x[1, 1] = 1.0  # a zero step before the last used one still counts inside the length
    x[1, 3, 1] = -2.0
    assert derived_lengths(x).tolist() == [4, 4, 0]


def test_all_zero_sample_gets_length_one_and_a_note(tiny_record, write_record) -> None:
    record = tiny_record()
    record["train"]["text"][2] = 0.0
    data = _load(write_record(record))
    assert data.train.lengths["text"][2] == 1
    assert any("1 all-zero samples in text/train" in note for note in data.notes)


def test_zero_length_is_clamped_and_noted(tiny_record, write_record) -> None:
    record = tiny_record()
    record["valid"]["audio_lengths"][[0, 3]] = 0
    data = _load(write_record(record))
    assert data.valid.lengths["audio"][0] == 1 and data.valid.lengths["audio"][3] == 1
    assert "set 2 zero lengths to 1 in audio/valid" in data.notes


def test_missing_split(tiny_record, write_record) -> None:
    record = tiny_record()
    del record["valid"]
    path = write_record(record)
    with pytest.raises(DataError, match=rf"{path}: missing split 'valid' \(expected train, valid, test; "
                                        r"found test, train\)"):
        _load(path)


def test_missing_feature_key(tiny_record, write_record) -> None:
    record = tiny_record()
    del record["test"]["audio"]
    path = write_record(record)
    with pytest.raises(DataError, match=rf"{path}: split 'test': missing key 'audio' \(train has it\)"):
        _load(path)


def test_missing_label_key(tiny_record, write_record) -> None:
    record = tiny_record()
    del record["train"]["regression_labels"]
    with pytest.raises(DataError, match="split 'train': missing key 'regression_labels'"):
        _load(write_record(record))


def test_wrong_rank(tiny_record, write_record) -> None:
    record = tiny_record()
    record["train"]["vision"] = record["train"]["vision"][:, :, 0]
    with pytest.raises(DataError, match=r"split 'train', key 'vision': expected 3 dimensions \(N, T, D\), "
                                        r"found shape \(12, 6\)"):
        _load(write_record(record))


def test_feature_rows_do_not_match_labels(tiny_record, write_record) -> None:
    record = tiny_record()
    record["valid"]["text"] = record["valid"]["text"][:5]
    with pytest.raises(DataError, match="split 'valid', key 'text': expected 6 rows .* found 5"):
        _load(write_record(record))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda lengths: lengths[:-1], r"key 'audio_lengths': expected 12 lengths .* found 11"),
        (lambda lengths: np.where(np.arange(12) == 4, 9, lengths),
         r"key 'audio_lengths': expected lengths <= 7 .* found 1 longer \(max 9\)"),
        (lambda lengths: np.where(np.arange(12) < 2, -1, lengths),
         r"key 'audio_lengths': expected lengths >= 0, found 2 negative"),
    ],
    ids=["wrong-N", "longer-than-padded", "negative"],
)
def test_inconsistent_lengths(tiny_record, write_record, change, expected: str) -> None:
    record = tiny_record()
    record["train"]["audio_lengths"] = change(record["train"]["audio_lengths"])
    with pytest.raises(DataError, match=r"split 'train', " + expected):
        _load(write_record(record))


def test_nan_and_inf_are_counted(tiny_record, write_record) -> None:
    record = tiny_record()
    record["test"]["text"][0, 0, :2] = np.nan
    record["test"]["text"][1, 0, 0] = np.inf
    with pytest.raises(DataError, match=r"split 'test', key 'text': 2 NaN and 1 \+inf values"):
        _load(write_record(record))


def test_negative_inf_is_zeroed_and_noted(tiny_record, write_record) -> None:
    record = tiny_record()
    record["train"]["audio"][0, 0, :3] = -np.inf
    record["valid"]["vision"][1, 0, 0] = -np.inf
    data = _load(write_record(record))
    assert data.train.features["audio"][0, 0, :3].tolist() == [0.0, 0.0, 0.0]
    assert np.isfinite(data.train.features["audio"]).all()
    assert "zeroed 3 -inf values in audio/train" in data.notes
    assert "zeroed 1 -inf values in vision/valid" in data.notes


def test_labels_out_of_range(tiny_record, write_record) -> None:
    record = tiny_record()
    record["valid"]["regression_labels"][2] = 3.5
    with pytest.raises(DataError, match=r"key 'regression_labels': expected values in \[-3, 3\], found 1 outside "
                                        r"\(min .*, max 3\.5\)"):
        _load(write_record(record))


def test_empty_split(tiny_record, write_record) -> None:
    record = tiny_record(sizes=(12, 0, 6))
    with pytest.raises(DataError, match="split 'valid': the split is empty"):
        _load(write_record(record))


def test_top_level_not_a_dict(write_record) -> None:
    with pytest.raises(DataError, match="expected a dict with keys train/valid/test"):
        _load(write_record([1, 2, 3]))


def test_custom_file_with_classification_labels_and_other_sizes(tiny_record, write_record) -> None:
    record = tiny_record()
    for split, part in record.items():
        del part["regression_labels"]
        n = part["text"].shape[0]
        part["classification_labels"] = np.arange(n) % (5 if split == "train" else 3)
        del part["vision"], part["vision_lengths"]
    data = _load(write_record(record, name="custom.pkl", spec={"like": "mosi", "labels": {"kind": "classes"}}))
    assert data.label_rule == "given" and data.num_classes == 5 and data.modalities == ("text", "audio")
    assert data.name == "custom" and data.train.regression is None
    assert data.train.labels.tolist() == (np.arange(12) % 5).tolist()


def test_a_file_declared_like_mosei_gets_the_mosei_rule(tiny_record, write_record) -> None:
    record = tiny_record()
    record["train"]["regression_labels"][:3] = [-0.5, 2.5, 0.0]
    data = _load(write_record(record, name="my_subset.pkl", spec={"like": "mosei"}))
    assert data.num_classes == 7 and data.spec.like == "mosei" and data.label_rule == "binned"
    assert data.train.labels[:3].tolist() == [2, 6, 3]  # the binned rule: [-1, 0), > 2, exactly 0


def test_check_collects_every_problem(tiny_record, write_record) -> None:
    record = tiny_record()
    record["train"]["text"][0, 0, 0] = np.nan
    record["test"]["regression_labels"][0] = -4.0
    report = check(write_record(record))
    assert not report.ok and len(report.problems) == 2
    assert "split 'train', key 'text': 1 NaN" in report.problems[0]
    assert "split 'test', key 'regression_labels'" in report.problems[1]
    assert report.summary[0] == "modalities: text, audio, vision"
