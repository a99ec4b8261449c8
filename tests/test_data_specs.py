"""Datasets as declared specs (bench.data.spec, bench.data.registry): built-ins, derived surrogates, spec
files, the must-be-declared rule, CH-SIMS as one spec, and modality names a spec declares."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from tiny import SIMS_SCORE_KEYS, SIMS_SHAPES, declare, physio_record, sims_record

from bench.data import load_dataset, loader, mmsa, splits, synth
from bench.data.registry import (
    DATASETS,
    dataset_names,
    load_spec_file,
    register,
    root_name,
    spec_for,
)
from bench.data.spec import DatasetSpec, LabelSpec
from bench.data.types import DataError


def _write(path: Path, record: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(record, protocol=4))
    return path


# -- built-in specs -----------------------------------------------------------------------------------


def test_mosi_mosei_and_the_surrogates_keep_todays_rules_sizes_and_class_names() -> None:
    mosi, mosei = spec_for("mosi"), spec_for("mosei")
    assert (mosi.labels.rules, mosi.dev_size, mosi.labels.score_range) == (("sign",), 100, (-3.0, 3.0))
    assert (mosei.labels.rules, mosei.dev_size) == (("binned", "round"), 200)
    assert mosei.labels.class_names["binned"] == ("<-2", "[-2,-1)", "[-1,0)", "0", "(0,1]", "(1,2]", ">2")
    assert mosi.labels.class_names["sign"] == ("negative", "neutral", "positive")
    sizes = {k: synth.SIZES[k] for k in ("mosi", "mosei")}
    assert sizes == {"mosi": {"smoke": (48, 24, 24), "quick": (500, 150, 300), "full": (1284, 229, 686)},
                     "mosei": {"smoke": (64, 32, 32), "quick": (800, 200, 400), "full": (16326, 1871, 4659)}}
    shift = spec_for("synth-mosei-shift")  # MOSEI-like labels in MOSI's shapes
    assert shift.synthetic and shift.like == "synth-mosei" and root_name(shift.name) == "mosei"
    assert shift.labels == mosei.labels and shift.recipe == "mosei" and shift.files == {}
    assert spec_for("synth-mosi").display == "synthetic CMU-MOSI surrogate"
    assert dataset_names()[:3] == ["mosi", "mosei", "sims"]


def test_the_dev_split_size_comes_from_the_spec() -> None:
    assert splits.dev_size(1284, spec_for("mosi").dev_size) == 100
    assert splits.dev_size(16326, spec_for("mosei").dev_size) == 200
    assert splits.dev_size(1368, spec_for("sims").dev_size) == 100
    assert splits.dev_size(500, 100) == 50  # never more than 10 % of train


def test_derive_copies_and_names_its_parent_and_a_taken_name_is_refused() -> None:
    child = spec_for("mosi").derive(name="mosi-copy", display="copy")
    assert child.like == "mosi" and child.labels == spec_for("mosi").labels and child.recipe == "mosi"
    with pytest.raises(DataError, match="'mosi' is already registered"):
        register(spec_for("mosi").derive(name="mosi"))


def test_a_label_spec_refuses_an_unknown_rule_in_one_line() -> None:
    with pytest.raises(DataError, match=r"label rule 'round' does not apply to 3-class MOSI-style labels"):
        spec_for("mosi").check_rule("round")
    with pytest.raises(DataError, match="scores need a range"):
        LabelSpec("scores", None, ("sign",), {})


# -- CH-SIMS ------------------------------------------------------------------------------------------


def test_sims_is_registered_as_mmsa_describes_it() -> None:
    sims = spec_for("sims")
    assert (sims.display, sims.metric_set, sims.labels.score_range) == ("CH-SIMS", "mmsa-sims", (-1.0, 1.0))
    assert sims.files == {"unaligned": "SIMS/Processed/unaligned_39.pkl"}
    assert sims.profile_sizes["full"] == (1368, 456, 457)
    assert sims.per_modality_labels == SIMS_SCORE_KEYS


def test_a_sims_schema_file_at_mmsas_path_loads_with_per_modality_scores(tmp_path: Path) -> None:
    record = sims_record()
    path = _write(tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl", record)  # matched by its relative path
    data = load_dataset(str(path), "full")
    assert data.spec.name == "sims" and data.spec.metric_set == "mmsa-sims"
    assert data.feature_dims == {m: dim for m, (_, dim) in SIMS_SHAPES.items()}
    assert data.seq_lens == {m: steps for m, (steps, _) in SIMS_SHAPES.items()}
    assert (data.train.size, data.valid.size, data.test.size) == (20, 8, 8)
    for m, key in SIMS_SCORE_KEYS.items():
        np.testing.assert_allclose(data.train.modality_scores[m], record["train"][key])
    # the default rule sims3: MMSA's Acc-3 bins, (-1, -0.1] -> 0, (-0.1, 0.1] -> 1, (0.1, 1] -> 2
    scores = record["train"]["regression_labels"]
    expected = np.where(scores <= -0.1, 0, np.where(scores <= 0.1, 1, 2))
    assert data.label_rule == "sims3" and data.num_classes == 3
    np.testing.assert_array_equal(data.train.labels, expected)
    assert data.split("dev").modality_scores["text"].shape == (2,)  # min(100, round(0.1 * 20))
    five = load_dataset(str(path), "full", label_rule="sims5")
    assert five.num_classes == 5 and set(np.unique(five.train.labels)) <= set(range(5))


def test_a_sims_schema_file_without_a_spec_is_refused_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path / "chsims.pkl", sims_record())
    with pytest.raises(DataError) as caught:
        load_dataset(str(path), "full")
    message = str(caught.value)
    assert "\n" not in message and "undeclared dataset file" in message and "chsims.spec.toml" in message
    with pytest.raises(DataError, match="chsims.spec.toml"):
        loader.data_fingerprint(str(path))


def test_a_spec_file_like_sims_declares_a_file_anywhere(tmp_path: Path) -> None:
    path = _write(tmp_path / "my_sims.pkl", sims_record(sizes=(10, 5, 5), seed=1))
    declare(path, name="my-sims", like="sims")
    data = load_dataset(str(path), "smoke")
    assert data.spec.name == "my-sims" and data.spec.like == "sims" and data.spec.metric_set == "mmsa-sims"
    assert set(data.train.modality_scores) == {"text", "audio", "vision"}


def test_sims_scores_outside_minus_one_one_are_refused(tmp_path: Path) -> None:
    record = sims_record()
    record["valid"]["regression_labels"][0] = 1.4  # fine for MOSI, not for CH-SIMS
    path = _write(tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl", record)
    with pytest.raises(DataError, match=r"split 'valid', key 'regression_labels': expected values in \[-1, 1\]"):
        load_dataset(str(path), "full")


def test_check_reads_the_spec_and_wants_its_per_modality_scores(tmp_path: Path) -> None:
    record = sims_record()
    del record["test"]["regression_labels_A"]
    path = _write(tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl", record)
    report = mmsa.check(path, spec_for(str(path)))
    assert report.problems == [f"{path}: split 'test': missing key 'regression_labels_A' (the spec's scores of "
                               "'audio')"]


# -- spec files and any modality names -----------------------------------------------------------------


def _physio_record() -> dict:
    return physio_record()


def test_a_full_spec_file_declares_any_modality_name(tmp_path: Path) -> None:
    path = _write(tmp_path / "wearables.pkl", _physio_record())
    (tmp_path / "wearables.spec.toml").write_text(
        'name = "wearables"\ndisplay = "Wearables"\nmodalities = ["physio", "text"]\ndev_size = 2\n'
        'metric_set = "mmsa"\n[profile_sizes]\nsmoke = [6, 3, 3]\nquick = [10, 6, 6]\nfull = [12, 6, 6]\n'
        '[labels]\nkind = "scores"\nscore_range = [-3.0, 3.0]\nrules = ["sign"]\n'
        'class_names = { sign = ["negative", "neutral", "positive"] }\n')
    data = load_dataset(str(path), "smoke")
    assert data.modalities == ("physio", "text") and data.feature_dims == {"physio": 2, "text": 6}
    assert data.seq_lens == {"physio": 9, "text": 4} and data.train.size == 6
    assert data.spec.recipe == "wearables" and data.spec.like == "" and data.label_rule == "sign"
    full = load_dataset(str(path), "full")
    np.testing.assert_array_equal(full.valid.lengths["physio"], _physio_record()["valid"]["physio_lengths"])


def test_a_spec_file_with_an_unknown_key_or_a_builtin_name_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "x.spec.toml"
    bad.write_text('like = "mosi"\nbatch_size = 32\n')
    with pytest.raises(DataError, match="unknown key\\(s\\) batch_size"):
        load_spec_file(bad)
    bad.write_text('name = "mosei"\nlike = "mosi"\n')
    with pytest.raises(DataError, match="'mosei' is a built-in name"):
        load_spec_file(bad)
    bad.write_text('like = "nope"\n')
    with pytest.raises(DataError, match="like = 'nope' is not a registered dataset"):
        load_spec_file(bad)


def test_a_spec_of_given_classes_uses_the_files_classification_labels(tmp_path: Path) -> None:
    record = _physio_record()
    for part in record.values():
        part["classification_labels"] = np.arange(part["text"].shape[0]) % 4
        del part["regression_labels"]
    path = _write(tmp_path / "emotions.pkl", record)
    declare(path, name="emotions", like="mosi", modalities=["text", "physio"],
            labels={"kind": "classes", "class_names": {"given": ["joy", "anger", "fear", "calm"]}})
    data = load_dataset(str(path), "full")
    assert data.label_rule == "given" and data.num_classes == 4 and data.train.regression is None
    assert data.modalities == ("text", "physio")
    assert data.spec.labels.names_for("given", 4) == ("joy", "anger", "fear", "calm")


def test_datasets_registered_by_spec_files_stay_out_of_the_builtin_names() -> None:
    from bench.data.registry import names_text

    assert "sims" in names_text() and "wearables" not in names_text()
    assert isinstance(DATASETS["sims"], DatasetSpec)


def test_two_files_whose_specs_share_a_name_each_keep_their_own_spec(tmp_path: Path) -> None:
    first = _write(tmp_path / "a" / "data.pkl", sims_record(sizes=(10, 5, 5)))
    second = _write(tmp_path / "b" / "data.pkl", sims_record(sizes=(10, 5, 5), seed=2))
    declare(first, name="shared", like="sims")
    declare(second, name="shared", like="sims", dev_size=3)
    assert spec_for(str(first)).dev_size == 100 and spec_for(str(second)).dev_size == 3
    assert spec_for(str(first)).dev_size == 100  # the second declaration did not rebind the first file


def test_a_spec_file_that_names_its_data_registers_a_loadable_name(tmp_path: Path) -> None:
    data_file = _write(tmp_path / "raw" / "recordings.pkl", _physio_record())
    spec_file = tmp_path / "wear.spec.toml"
    spec_file.write_text('name = "wear"\nlike = "mosi"\nmodalities = ["text", "physio"]\ndata = "raw/recordings.pkl"\n')
    assert load_spec_file(spec_file).name == "wear"
    data = load_dataset("wear", "full")
    assert data.name == "wear" and data.source == str(data_file.resolve()) and data.modalities == ("text", "physio")
    assert loader.data_fingerprint("wear") == data.fingerprint
