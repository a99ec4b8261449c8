"""Bad input through the real entry point: exit code 2, one line on stderr naming the file and the problem,
no traceback (unless --debug). Plus the restricted unpickler against crafted numpy payloads."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_execute_fakes as fakes
from conftest import tiny_split
from tiny import declare

from bench import cli, execute
from bench.data import DataError
from bench.data.registry import names_text
from bench.data.safe_pickle import safe_loads


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)  # nothing may train anyway
    monkeypatch.chdir(tmp_path)  # a stray default runs/ would land here


def _bench(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `bench <args>`, in this process."""
    try:
        cli.main(args)
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- bad data files ----------------------------------------------------------------------------------------

class _Payload:
    """Unpickling this would create the marker file (os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _record() -> dict[str, Any]:
    """A valid tiny MMSA-schema record (train 12 / valid 6 / test 6)."""
    return {split: {k: v for k, v in tiny_split(n, seed).items() if not k.startswith("_true_")}
            for seed, (split, n) in enumerate((("train", 12), ("valid", 6), ("test", 6)))}


def _broken(change: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    """A writer of a valid record with one change applied (the change may return a replacement)."""

    def write(path: Path) -> None:
        record = _record()
        replaced = change(record)
        path.write_bytes(pickle.dumps(record if replaced is None else replaced, protocol=4))

    return write


def _set(split: str, key: str, value: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], None]:
    def change(record: dict[str, Any]) -> None:
        record[split][key] = value(record[split])

    return change


def _drop(split: str, *keys: str) -> Callable[[dict[str, Any]], None]:
    def change(record: dict[str, Any]) -> None:
        for key in keys:
            del record[split][key]

    return change


def _poke(split: str, key: str, index: tuple[int, ...], value: float) -> Callable[[dict[str, Any]], None]:
    def change(record: dict[str, Any]) -> None:
        record[split][key][index] = value

    return change


def _mixed_label_kinds(record: dict[str, Any]) -> None:
    record["valid"]["classification_labels"] = np.arange(6) % 3
    del record["valid"]["regression_labels"]


def _huge_bytearray(path: Path) -> None:
    # BYTEARRAY8 declaring 20 GB: the unpickler must refuse it, not try to allocate it.
    path.write_bytes(b"\x80\x05\x96" + (20 << 30).to_bytes(8, "little") + b"\x00" * 16 + b".")


def _raw(data: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(data)


def _truncated(path: Path) -> None:
    path.write_bytes(pickle.dumps(_record(), protocol=4)[:-200])


def _forbidden_global(path: Path) -> None:
    path.write_bytes(pickle.dumps({"train": {"text": _Payload(path.parent / "PWNED")}}))


# case id -> (write the file (None: leave it absent), expected problem in the error line)
DATA_CASES: dict[str, tuple[Callable[[Path], None] | None, str]] = {
    "missing_file": (None, "no such file"),
    "directory": (lambda path: path.mkdir(), "is a directory"),
    "empty_file": (_raw(b""), "the file is empty"),
    "truncated_pickle": (_truncated, "not a readable pickle (truncated or not a pickle)"),
    "non_pickle_bytes": (_raw(b"%PDF-1.7 this is not a pickle\n"), "not a readable pickle"),
    "huge_declared_size": (_huge_bytearray, "BYTEARRAY8 declares 21474836480 bytes, more than the input"),
    "forbidden_global": (_forbidden_global, "refused to load: the pickle asks for the forbidden global 'posix.system'"),
    "top_level_not_a_dict": (_broken(lambda r: [r["train"]]), "expected a dict with keys train/valid/test"),
    "wrong_top_level_keys": (_broken(lambda r: {"training": r["train"], "validation": r["valid"],
                                                 "testing": r["test"]}),
                             "missing split 'train' (expected train, valid, test; found testing, training, "
                             "validation)"),
    "split_not_a_dict": (_broken(lambda r: {**r, "valid": [1, 2]}), "split 'valid': expected a dict of arrays"),
    "missing_modality": (_broken(_drop("test", "audio", "audio_lengths")), "split 'test': missing key 'audio' "
                                                                           "(train has it)"),
    "missing_labels": (_broken(_drop("train", "regression_labels")), "missing key 'regression_labels'"),
    "wrong_rank": (_broken(_set("train", "vision", lambda p: p["vision"][:, :, 0])),
                   "key 'vision': expected 3 dimensions (N, T, D), found shape (12, 6)"),
    "shape_mismatch": (_broken(_set("valid", "text", lambda p: p["text"][:5])),
                       "key 'text': expected 6 rows (one per label), found 5"),
    "non_numeric_features": (_broken(_set("test", "audio", lambda p: p["audio"].astype(str))),
                             "key 'audio': expected numbers, found dtype <U"),
    "lengths_longer_than_padded": (_broken(_set("train", "audio_lengths", lambda p: p["audio_lengths"] + 7)),
                                   "key 'audio_lengths': expected lengths <= 7 (the padded size of 'audio')"),
    "lengths_count_mismatch": (_broken(_set("train", "vision_lengths", lambda p: p["vision_lengths"][:-2])),
                               "key 'vision_lengths': expected 12 lengths (one per row of 'vision'), found 10"),
    "nan_features": (_broken(_poke("test", "text", (0, 0, 0), np.nan)), "key 'text': 1 NaN and 0 +inf values"),
    "inf_features": (_broken(_poke("train", "vision", (3, 0, 1), np.inf)), "key 'vision': 0 NaN and 1 +inf values"),
    "labels_out_of_range": (_broken(_poke("valid", "regression_labels", (2,), 3.5)),
                            "key 'regression_labels': expected values in [-3, 3], found 1 outside"),
    "nan_labels": (_broken(_poke("test", "regression_labels", (1,), np.nan)),
                   "key 'regression_labels': 1 NaN/inf values"),
    "fractional_class_labels": (_broken(_set("train", "classification_labels", lambda p: np.arange(12) / 2)),
                                "classification_labels must be whole numbers"),
    "mixed_label_kinds": (_broken(_mixed_label_kinds), "cannot make class labels"),
    "empty_split": (_broken(lambda r: {**r, "valid": {k: v[:0] for k, v in r["valid"].items()}}),
                    "split 'valid': the split is empty (0 samples)"),
}

# The cases also run through `bench run --dataset PATH`, where the message may differ (the path check first).
RUN_CASES = {"missing_file": f"is neither {names_text()} nor an existing file",
             "directory": f"is neither {names_text()} nor an existing file",
             "truncated_pickle": DATA_CASES["truncated_pickle"][1],
             "forbidden_global": DATA_CASES["forbidden_global"][1],
             "wrong_top_level_keys": DATA_CASES["wrong_top_level_keys"][1],
             "lengths_longer_than_padded": DATA_CASES["lengths_longer_than_padded"][1],
             "nan_features": DATA_CASES["nan_features"][1],
             "empty_split": DATA_CASES["empty_split"][1]}


def _bad_file(case: str, tmp_path: Path) -> Path:
    path = tmp_path / "data" / f"{case}.pkl"
    path.parent.mkdir(exist_ok=True)
    write, _ = DATA_CASES[case]
    if write is not None:
        write(path)
    declare(path)  # declared (like MOSI): what is refused is the file's content
    return path


def _assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert "Traceback" not in err


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_check_refuses_a_bad_file_in_one_line(case: str, tmp_path: Path, capsys) -> None:
    path = _bad_file(case, tmp_path)
    code, out, err = _bench(["data", "check", str(path)], capsys)
    _assert_one_error_line(code, err, f"error: {path}", DATA_CASES[case][1])
    assert "Traceback" not in out and not (tmp_path / "data" / "PWNED").exists()


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_refuses_a_bad_dataset_file_before_training(case: str, tmp_path: Path, capsys) -> None:
    path = _bad_file(case, tmp_path)
    runs = tmp_path / "runs"
    code, out, err = _bench(["run", "--method", "concat", "--modalities", "text,vision", "--dataset", str(path),
                             "--profile", "smoke", "--seeds", "0", "--runs-dir", str(runs)], capsys)
    _assert_one_error_line(code, err, str(path), RUN_CASES[case])
    assert not runs.exists() and not (tmp_path / "data" / "PWNED").exists()  # nothing trained, nothing ran


def test_run_refuses_a_modality_the_dataset_file_lacks(tmp_path: Path, capsys) -> None:
    def without_vision(record: dict[str, Any]) -> None:
        for part in record.values():
            del part["vision"], part["vision_lengths"]

    path = tmp_path / "no_vision.pkl"
    _broken(without_vision)(path)
    declare(path)
    assert _bench(["data", "check", str(path)], capsys)[0] == 0  # a valid file, just without vision
    runs = tmp_path / "runs"
    code, _, err = _bench(["run", "--method", "concat", "--modalities", "text,vision", "--dataset", str(path),
                           "--profile", "smoke", "--runs-dir", str(runs)], capsys)
    _assert_one_error_line(code, err, f"dataset '{path}' has no modality 'vision' (it has text, audio)")
    assert not runs.exists()


def test_debug_shows_the_traceback_instead(tmp_path: Path) -> None:
    path = _bad_file("nan_features", tmp_path)
    with pytest.raises(DataError, match="1 NaN and 0 \\+inf values"):
        cli.main(["--debug", "data", "check", str(path)])


# -- bad options ------------------------------------------------------------------------------------------

RUN = ["run", "--method", "concat", "--modalities", "text,vision", "--profile", "smoke", "--seeds", "0"]
GRID = ["grid", "table-6.10", "--profile", "smoke", "--dataset", "mosi", "--method", "concat", "--seeds", "0"]
OPTION_CASES: dict[str, tuple[list[str], str]] = {
    "unknown_method": (["run", "--method", "nope", "--modalities", "text,vision"], "unknown method 'nope'"),
    "unknown_method_in_grid": (["grid", "table-6.3", "--method", "agm"], "unknown method"),
    "unknown_preset_grid": (["grid", "table-99"], "unknown preset 'table-99'"),
    "unknown_preset_table": (["table", "table-99"], "unknown preset 'table-99'"),
    "unknown_modality": (["run", "--method", "concat", "--modalities", "text,smell"], "unknown modality 'smell'"),
    "too_few_modalities": (["run", "--method", "concat", "--modalities", "text"], "needs 2 to 8 modalities"),
    "unknown_profile": ([*RUN, "--profile", "huge"], "unknown profile 'huge'"),
    "unknown_optimizer": ([*RUN, "--optimizer", "rmsprop"], "unknown optimizer 'rmsprop'"),
    "unknown_source": ([*GRID, "--source", "web"], "unknown data source 'web'"),
    "unknown_parameter": (["run", "--method", "ogm", "--modalities", "text,vision", "--param", "beta=1"],
                          "unknown parameter(s) beta for method 'ogm'"),
    "bad_seeds": ([*RUN, "--seeds", "a,b"], "--seeds must be comma-separated integers"),
    "unknown_executor": ([*RUN, "--executor", "cluster"], "unknown executor 'cluster'"),
    "unknown_plot": (["plot", "spirals"], "unknown plot 'spirals'"),
    "unknown_table_format": (["table", "table-6.10", "--format", "docx"], "unknown table format 'docx'"),
    "unknown_run_id": (["rerun", "0123456789abcdef"], "no stored result for run 0123456789abcdef"),
    "real_data_missing_run": ([*RUN, "--dataset", "mosi", "--source", "real"],
                              "MOSI/Processed/unaligned_50.pkl not found"),
    "real_data_missing_grid": ([*GRID, "--source", "real"], "MOSI/Processed/unaligned_50.pkl not found"),
    # conflicting flags (cli_runs.ExecOptions, execute.check_options, grid's own check)
    "dry_run_with_retry_failed": ([*GRID, "--dry-run", "--retry-failed"], "--dry-run trains nothing; it conflicts "
                                                                           "with --retry-failed"),
    "inline_with_workers": ([*RUN, "--executor", "inline", "--workers", "3"], "conflicts with --workers 3"),
    "slurm_option_without_slurm": ([*RUN, "--partition", "gpu"], "--partition only applies to --executor slurm"),
    "slurm_time_without_slurm": ([*GRID, "--time", "30"], "--time only applies to --executor slurm"),
    "zero_workers": ([*RUN, "--workers", "0"], "--workers must be >= 1"),
    "zero_workers_per_gpu": ([*GRID, "--workers-per-gpu", "0"], "--workers-per-gpu must be >= 1"),
    "slurm_without_sbatch": ([*RUN, "--executor", "slurm"], "no Slurm here (sbatch is not on PATH)"),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_options_exit_2_with_one_line(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(execute.shutil, "which", lambda name: None)  # no Slurm on this machine
    args, message = OPTION_CASES[case]
    runs = tmp_path / "runs"
    code, _, err = _bench([*args, "--runs-dir", str(runs)], capsys)
    _assert_one_error_line(code, err, message)
    assert not (runs / "results").exists()


# -- the restricted unpickler against crafted numpy payloads -----------------------------------------------

class _DirectArray:
    """numpy.ndarray called directly on raw bytes with an object dtype: 16 bytes become 2 object pointers."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (np.ndarray, ((2,), np.dtype("O"), b"A" * 16))


def _object_array_pickle() -> bytes:
    return pickle.dumps(np.array(["x", "y"], dtype=object), protocol=2)


def _crafted_payloads() -> dict[str, bytes]:
    """Pickles using only allow-listed globals that crash numpy (segfault) unless the unpickler checks them."""
    plain = _object_array_pickle()
    object_state = b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK?t"
    assert plain.count(object_state) == 1 and plain.count(b"K\x01K\x02\x85") == 1
    list_data = plain[plain.index(b"]q"):plain.index(b"etq") + 1]
    return {
        "forged_dtype_flags": plain.replace(object_state, object_state.replace(b"K?", b"K\x00")).replace(
            list_data, b"C\x10" + b"A" * 16),
        "direct_ndarray_on_bytes": pickle.dumps(_DirectArray(), protocol=2),
        "object_array_shorter_than_shape": plain.replace(b"K\x01K\x02\x85", b"K\x01K\x40\x85"),
        "malformed_dtype_state": plain.replace(object_state, object_state.replace(b"NNN", b"N")),
        # BUILD (None, {"__defaults__": (1,)}) would setattr on the unpickler's own helper function
        "build_on_a_function": b"\x80\x02c_codecs\nencode\nN}X\x0c\x00\x00\x00__defaults__K\x01\x85s\x86b.",
    }


CHECK_SCRIPT = """
import json, sys
from bench.data import DataError
from bench.data.safe_pickle import safe_loads
from bench.data.safe_pickle import safe_loads
results = {}
for name, hexdata in json.loads(sys.stdin.read()).items():
    try:
        safe_loads(bytes.fromhex(hexdata), name)
        results[name] = "loaded"
    except DataError as err:
        results[name] = str(err)
print(json.dumps(results))
"""


def test_crafted_numpy_payloads_are_refused_without_crashing_the_process() -> None:
    """In a subprocess, in case of a regression: with a plain allow-list (or plain pickle) the first four
    segfault the interpreter, the last changes a function of the unpickler."""
    payloads = _crafted_payloads()
    done = subprocess.run([sys.executable, "-c", CHECK_SCRIPT], input=json.dumps({k: v.hex() for k, v in
                                                                                  payloads.items()}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout)
    expected = {
        "forged_dtype_flags": "dtype state (3, '|', None, None, None, -1, -1, 0) is not the one numpy writes",
        "direct_ndarray_on_bytes": "is not callable",
        "object_array_shorter_than_shape": "array state (1, (64,), dtype('O'), False, ['x', 'y']) is not the one",
        "malformed_dtype_state": "dtype state (3, '|', None, -1, -1, 63) is not the one numpy writes",
        "build_on_a_function": "setting the state of a function is not allowed",
    }
    for name, fragment in expected.items():
        assert fragment in results[name], (name, results[name])
    # The genuine object array still loads.
    np.testing.assert_array_equal(safe_loads(_object_array_pickle()), np.array(["x", "y"], dtype=object))
