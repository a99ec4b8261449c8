"""`bench data synth | check | inspect | calibrate` through the real entry point."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from bench import calibrate
from bench.cli import main
from bench.data import loader
from bench.data.calibrate import TARGETS
from bench.data.registry import DATASETS
from bench.data.safe_pickle import safe_load


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout, stderr of `bench <argv>`."""
    try:
        main(argv)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_synth_writes_a_loadable_mmsa_pickle(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synth_mosi.pkl"
    code, stdout, _ = _run(["data", "synth", "--like", "mosi", "--profile", "smoke", "--seed", "0",
                            "--out", str(out)], capsys)
    assert code == 0 and "SYNTHETIC" in stdout and "48/24/24" in stdout
    record = safe_load(out)
    assert sorted(record) == ["test", "train", "valid"]
    assert record["train"]["audio"].shape == (48, 375, 5)
    assert {"id", "raw_text", "text", "audio_lengths", "vision_lengths", "regression_labels"} <= set(record["valid"])
    code, stdout, _ = _run(["data", "check", str(out)], capsys)
    assert code == 0 and f"OK: {out} passes validation" in stdout
    assert "train: 48 samples; text (50, 768), audio (375, 5), vision (500, 20)" in stdout
    # Loaded back as a custom file it is the same data as the built-in surrogate (text lengths derived).
    from_file, built_in = loader.load_dataset(str(out), "full"), loader.load_dataset("synth-mosi", "smoke")
    np.testing.assert_array_equal(from_file.test.lengths["text"], built_in.test.lengths["text"])
    np.testing.assert_array_equal(from_file.train.features["audio"], built_in.train.features["audio"])
    np.testing.assert_array_equal(from_file.valid.labels, built_in.valid.labels)


def test_synth_declares_the_file_it_writes_so_mosei_keeps_its_seven_classes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "plain_name.pkl"  # no 'mosei' in the path: the spec beside it says what the file is
    code, stdout, _ = _run(["data", "synth", "--like", "mosei", "--profile", "smoke", "--out", str(out)], capsys)
    assert code == 0 and (tmp_path / "plain_name.spec.toml").is_file() and "like = \"mosei\"" in stdout
    data = loader.load_dataset(str(out), "full")
    assert data.num_classes == 7 and data.label_rule == "binned" and data.spec.like == "mosei"
    assert data.dev_index.shape == (6,)  # min(200, round(0.1 * 64))


def test_check_and_inspect_an_undeclared_file_exit_2_in_one_line(tmp_path: Path, tiny_record, write_record,
                                                                 capsys) -> None:
    path = write_record(tiny_record(), name="loose.pkl", declared=False)
    for command in ("check", "inspect"):
        code, _, err = _run(["data", command, str(path)], capsys)
        assert code == 2 and err.count("\n") == 1 and "write loose.spec.toml beside it" in err


def test_inspect_a_sims_file_shows_the_specs_names_range_and_modality_scores(tmp_path: Path, capsys) -> None:
    import pickle

    from tiny import sims_record

    path = tmp_path / "SIMS" / "Processed" / "unaligned_39.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps(sims_record(), protocol=4))
    code, stdout, _ = _run(["data", "inspect", str(path), "--label-rule", "sims5"], capsys)
    assert code == 0 and "spec sims (CH-SIMS), scores in [-1.0, 1.0], rules sims3, sims5" in stdout
    assert "labels negative:" in stdout and "weakly negative:" in stdout and "weakly positive:" in stdout
    assert "audio  shape (20, 400, 33)" in stdout and "text scores min/mean/max" in stdout
    code, stdout, _ = _run(["data", "check", str(path)], capsys)
    assert code == 0 and "dataset spec: sims (CH-SIMS)" in stdout


def test_a_named_sims_needs_its_file_and_says_where(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(loader.DataError,
                       match=r"SIMS/Processed/unaligned_39.pkl not found.*'synth-sims' is the built-in surrogate"):
        loader.load_dataset("sims", "smoke")


def test_check_bad_file_exits_2_with_one_line_naming_it(tmp_path: Path, tiny_record, write_record, capsys) -> None:
    record = tiny_record()
    record["train"]["text"][0, 0, 0] = np.nan
    record["valid"]["regression_labels"][0] = 9.0
    path = write_record(record, name="broken.pkl")
    code, _, stderr = _run(["data", "check", str(path)], capsys)
    last = stderr.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith(f"error: {path}: split 'train', key 'text': 1 NaN") and last.endswith("(and 1 more problem)")


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", None])
def test_unreadable_inputs_exit_2(tmp_path: Path, capsys, content: bytes | None) -> None:
    path = tmp_path / "input.pkl"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    for command in ("check", "inspect"):
        code, _, stderr = _run(["data", command, str(path)], capsys)
        assert code == 2
        assert len(stderr.strip().splitlines()) == 1 and str(path) in stderr


def test_inspect_prints_shapes_lengths_histogram_and_hash(tiny_record, write_record, capsys, monkeypatch) -> None:
    record = tiny_record()
    path = write_record(record)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    code, stdout, _ = _run(["data", "inspect", str(path)], capsys)
    assert code == 0
    assert f"SHA-256 {digest}" in stdout and "does not match a published MMSA file" in stdout
    lengths = record["train"]["_true_audio_lengths"]
    assert (f"audio  shape (12, 7, 3)  length min/median/max {lengths.min()}/{np.median(lengths):g}/"
            f"{lengths.max()}") in stdout
    counts = np.bincount(np.sign(record["test"]["regression_labels"]).astype(int) + 1, minlength=3)
    assert f"labels negative:{counts[0]}  neutral:{counts[1]}  positive:{counts[2]}" in stdout
    monkeypatch.setitem(DATASETS, "mosi", DATASETS["mosi"].derive(
        name="mosi", like="", published_sha256={digest: "MOSI unaligned_50.pkl"}))
    loader.clear_memory_cache()
    code, stdout, _ = _run(["data", "inspect", str(path)], capsys)
    assert "matches the published MMSA file (MOSI unaligned_50.pkl)" in stdout


def test_inspect_a_surrogate_name(capsys) -> None:
    code, stdout, _ = _run(["data", "inspect", "synth-mosei", "--profile", "smoke"], capsys)
    assert code == 0 and "[SYNTHETIC]" in stdout and "7 classes" in stdout
    assert "audio  shape (64, 500, 74)" in stdout


def test_calibrate_prints_achieved_target_and_delta(capsys, monkeypatch) -> None:
    fake = {"text": 75.0, "audio": 40.0, "vision": 50.0}
    monkeypatch.setattr(calibrate, "_one_run", lambda like, profile, m, seed, knobs=(): (fake[m] + seed, 1.5))
    code, stdout, _ = _run(["data", "calibrate", "--like", "mosi", "--profile", "smoke", "--seeds", "0,2"], capsys)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in stdout.splitlines()[2:]}
    assert rows["text"][1:6] == ["73.91", "76.00", "+-", "1.41", "+2.09"] and rows["text"][7] == "yes"
    assert rows["audio"][5] == "-3.29" and rows["audio"][7] == "NO"


def test_calibrate_targets_match_the_thesis_reference() -> None:
    import csv

    reference = Path(__file__).resolve().parents[1] / "bench" / "reference" / "thesis_tables.csv"
    with open(reference) as handle:
        rows = [r for r in csv.DictReader(handle)
                if r["table"] == "6.2" and r["config"] == "standard" and r["method"] == "unimodal"]
    assert len(rows) == 6
    for row in rows:
        assert TARGETS[row["dataset"]][row["modalities"]] == pytest.approx(float(row["acc_mean"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "calibrate", "--like", "imdb"], "--like must be one of mosi, mosei"),
        (["data", "calibrate", "--like", "mosi", "--knob", "text=fast"], "--knob must look like text=6,1.9"),
        (["data", "calibrate", "--like", "mosi", "--seeds", "a,b"], "--seeds must be comma-separated integers"),
        (["data", "synth", "--like", "mosi", "--profile", "huge", "--out", "x.pkl"], "unknown profile 'huge'"),
    ],
)
def test_bad_options_exit_2(capsys, argv: list[str], message: str) -> None:
    code, _, stderr = _run(argv, capsys)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_inspect_shows_the_histogram_under_the_rule_in_force(capsys) -> None:
    from bench.data.labels import classes_by_rule

    code, stdout, _ = _run(["data", "inspect", "synth-mosei", "--profile", "smoke"], capsys)
    assert code == 0 and "7 classes (rule binned)" in stdout
    scores = np.asarray(loader.load_dataset("synth-mosei", "smoke").train.regression)
    binned = np.bincount(classes_by_rule(scores, "binned"), minlength=7)
    names = ("<-2", "[-2,-1)", "[-1,0)", "0", "(0,1]", "(1,2]", ">2")
    expected = "  labels " + "  ".join(f"{n}:{c}" for n, c in zip(names, binned, strict=True))
    assert stdout.splitlines()[stdout.splitlines().index("train: 64 samples") + 4] == expected
    code, stdout, _ = _run(["data", "inspect", "synth-mosei", "--profile", "smoke", "--label-rule", "round"],
                           capsys)
    rounded = np.bincount(classes_by_rule(scores, "round"), minlength=7)
    assert code == 0 and "7 classes (rule round)" in stdout and not np.array_equal(binned, rounded)
    assert "  labels " + "  ".join(f"{n}:{c}" for n, c in zip(("-3", "-2", "-1", "0", "+1", "+2", "+3"), rounded,
                                                               strict=True)) in stdout
    code, _, err = _run(["data", "inspect", "synth-mosi", "--profile", "smoke", "--label-rule", "round"], capsys)
    assert code == 2 and "label rule 'round' does not apply to 3-class MOSI" in err
