"""Fuzzing the restricted unpickler and the MMSA validator: only DataError may ever escape.

Examples are derandomized (fixed by the test code), so CI sees the same inputs every time.
"""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_split
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import declare

from bench.data import DataError, load_dataset
from bench.data.mmsa import check
from bench.data.registry import spec_for
from bench.data.safe_pickle import safe_loads

SPLITS = ("train", "valid", "test")
MODALITIES = ("text", "audio", "vision")
BYTES_EXAMPLES = 300
MUTATED_PICKLE_EXAMPLES = 200
RECORD_EXAMPLES = 200



def fuzz(examples: int) -> settings:
    """Reproducible settings: derandomized, no example database, no deadline (CI machines vary)."""
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- the restricted unpickler ------------------------------------------------------------------------

def _safe_outcome(data: bytes) -> str:
    """'loaded' or 'refused'; any other exception fails the test (with the input shrunk by hypothesis)."""
    try:
        safe_loads(data, "fuzz")
    except DataError:
        return "refused"
    return "loaded"


@fuzz(BYTES_EXAMPLES)
@given(st.binary(max_size=400))
def test_random_bytes_only_ever_raise_data_error(data: bytes) -> None:
    assert _safe_outcome(data) in ("loaded", "refused")


def _numpy_pickle(protocol: int) -> bytes:
    """A small MMSA-like pickle: the opcodes and globals a real file uses, for mutation."""
    rng = np.random.default_rng(protocol)
    record = {"train": {"text": rng.normal(size=(2, 3, 4)).astype(np.float32),
                        "audio_lengths": np.array([1, 3]), "id": np.array(["a$_$1", "b$_$2"]),
                        "raw_text": np.array(["x", "y"], dtype=object), "regression_labels": [np.float32(0.5)]}}
    return pickle.dumps(record, protocol=protocol)


@st.composite
def mutated_pickles(draw: st.DrawFn) -> bytes:
    """A real numpy pickle with bytes overwritten, inserted, deleted, or cut short."""
    data = bytearray(_numpy_pickle(draw(st.sampled_from([2, 3, 4, 5]))))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["overwrite", "insert", "delete", "truncate"]))
        if action == "overwrite":
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and len(data) > 1:
            del data[at]
        elif action == "truncate" and at > 0:
            del data[at:]
    return bytes(data)


def test_mutated_numpy_pickles_only_ever_raise_data_error() -> None:
    outcomes: list[str] = []

    @fuzz(MUTATED_PICKLE_EXAMPLES)
    @given(mutated_pickles())
    def load(data: bytes) -> None:
        outcomes.append(_safe_outcome(data))

    load()
    # Not a vacuous fuzz: some mutants still load, others are refused.
    assert len(outcomes) == MUTATED_PICKLE_EXAMPLES and set(outcomes) == {"loaded", "refused"}


# -- the validator and the loader ---------------------------------------------------------------------

def _valid_record(draw: st.DrawFn) -> dict[str, Any]:
    """A valid MMSA-schema record (tiny shapes), with regression and/or classification labels."""
    sizes = [draw(st.integers(2, 7)) for _ in SPLITS]
    labels = draw(st.sampled_from(["regression", "classification", "both"]))
    record = {}
    for seed, (split, n) in enumerate(zip(SPLITS, sizes, strict=True)):
        part = {k: v for k, v in tiny_split(n, seed).items() if not k.startswith("_true_")}
        if labels != "regression":
            part["classification_labels"] = np.arange(n) % 3
        if labels == "classification":
            del part["regression_labels"]
        record[split] = part
    for modality in draw(st.lists(st.sampled_from(MODALITIES[1:]), unique=True, max_size=2)):
        for part in record.values():  # a dataset without this modality (consistently)
            part.pop(modality)
            part.pop(f"{modality}_lengths", None)
    return record


def _bad_array(draw: st.DrawFn, n: int) -> Any:
    """A value of the wrong rank, shape, dtype or type, or an array with NaN/inf."""
    kind = draw(st.sampled_from(["rank", "rows", "dtype", "nan", "inf", "empty_axis", "list", "none", "str"]))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    if kind == "rank":
        return rng.normal(size=(n,) + (2,) * draw(st.sampled_from([0, 1, 3]))).astype(np.float32)
    if kind == "rows":
        return rng.normal(size=(max(0, n + draw(st.sampled_from([-1, 1, 5]))), 3, 2)).astype(np.float32)
    if kind == "dtype":
        return rng.normal(size=(n, 3, 2)).astype(draw(st.sampled_from(["U4", "object", "complex64", "float16",
                                                                          "int8", "bool"])))
    if kind in ("nan", "inf"):
        x = rng.normal(size=(n, 3, 2)).astype(draw(st.sampled_from(["float32", "float64"])))
        if x.size:
            x.flat[rng.integers(0, x.size)] = np.nan if kind == "nan" else draw(st.sampled_from([np.inf, -np.inf]))
        return x
    if kind == "empty_axis":
        return np.zeros((n, 0, 2), dtype=np.float32)
    if kind == "list":
        return rng.normal(size=(n, 2, 2)).tolist()
    return None if kind == "none" else "not an array"


def _bad_lengths(draw: st.DrawFn, n: int) -> Any:
    base = np.arange(n) % 3 + 1
    kind = draw(st.sampled_from(["long", "negative", "fraction", "short", "rank2", "str", "list", "zero"]))
    return {"long": base + 50, "negative": base - 5, "fraction": base + 0.5, "short": base[:-1],
            "rank2": np.stack([base, base], 1), "str": base.astype(str), "list": base.tolist(),
            "zero": np.zeros(n, dtype=np.int64)}[kind]


def _bad_labels(draw: st.DrawFn, n: int) -> Any:
    kind = draw(st.sampled_from(["range", "nan", "inf", "short", "str", "rank2", "negative_class",
                                 "fraction_class", "scalar"]))
    y = np.linspace(-2, 2, n)
    if kind == "range" and n:
        y[0] = draw(st.sampled_from([3.5, -7.0, 1e9]))
    elif kind in ("nan", "inf") and n:
        y[-1] = np.nan if kind == "nan" else -np.inf
    return {"short": y[:-1], "str": y.astype(str), "rank2": np.stack([y, y], 1), "negative_class": y - 10,
            "fraction_class": y + 0.25, "scalar": 1.0}.get(kind, y)


def _mutate(draw: st.DrawFn, record: dict[str, Any]) -> Any:
    """One fault: a split or key removed or renamed, a value replaced by a bad one, a split emptied."""
    fault = draw(st.sampled_from(["drop_split", "rename_split", "split_type", "top_type", "drop_key", "features",
                                  "lengths", "labels", "classification", "label_kind", "ids", "empty_split",
                                  "extra_key"]))
    if fault == "top_type":
        return draw(st.sampled_from([None, [record], "train", 3, set()]))
    split = draw(st.sampled_from([s for s in SPLITS if s in record] or ["train"]))
    part = record.get(split)
    if fault == "drop_split" or not isinstance(part, dict):
        record.pop(split, None)
    elif fault == "rename_split":
        record[split.upper()] = record.pop(split)
    elif fault == "split_type":
        record[split] = draw(st.sampled_from([None, [1, 2], "x", np.zeros(3)]))
    else:
        _mutate_split(draw, fault, part)
    return record


def _rows(part: dict[str, Any]) -> int:
    """The split's sample count, read from whichever of its arrays is still intact."""
    for key in ("id", *MODALITIES, "regression_labels", "classification_labels"):
        value = part.get(key)
        if isinstance(value, np.ndarray) and value.ndim >= 1:
            return int(value.shape[0])
    return 3


def _mutate_split(draw: st.DrawFn, fault: str, part: dict[str, Any]) -> None:
    n = _rows(part)
    modality = draw(st.sampled_from([m for m in MODALITIES if m in part] or ["text"]))
    if fault == "drop_key":
        part.pop(draw(st.sampled_from(sorted(part))))
    elif fault == "features":
        part[modality] = _bad_array(draw, n)
    elif fault == "lengths":
        part[f"{modality}_lengths"] = _bad_lengths(draw, n)
    elif fault == "labels":
        part["regression_labels"] = _bad_labels(draw, n)
    elif fault == "classification":
        part["classification_labels"] = _bad_labels(draw, n)
    elif fault == "label_kind":  # this split labelled by class, the others by score
        part.pop("regression_labels", None)
        part["classification_labels"] = np.arange(n) % 2
    elif fault == "ids":
        part["id"] = draw(st.sampled_from([np.arange(max(0, n - 1)), 7, None, np.zeros((n, 2))]))
    elif fault == "empty_split":
        for key, value in list(part.items()):
            part[key] = value[:0] if isinstance(value, np.ndarray) else value
    else:
        part[draw(st.sampled_from(["junk", "dev", "text_extra"]))] = draw(st.sampled_from([None, 1, "x"]))


@st.composite
def mmsa_records(draw: st.DrawFn) -> Any:
    """A valid record with 0 to 3 random faults."""
    record: Any = _valid_record(draw)
    for _ in range(draw(st.integers(0, 3))):
        if not isinstance(record, dict):
            break
        record = _mutate(draw, record)
    return record


_NAMES = itertools.count()


def _refusal(action: Callable[[], Any]) -> str | None:
    """The DataError message of `action`, or None when it succeeds (anything else propagates)."""
    try:
        action()
    except DataError as err:
        return str(err)
    return None


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_random_records_only_ever_raise_data_error_and_check_agrees_with_the_loader(fuzz_dir: Path) -> None:
    outcomes: list[str] = []

    @fuzz(RECORD_EXAMPLES)
    @given(mmsa_records(), st.sampled_from(["full", "smoke"]))
    def validate(record: Any, profile: str) -> None:
        # A fresh name per example: the loader remembers files by (path, size, mtime).
        path = fuzz_dir / f"record{next(_NAMES)}.pkl"
        path.write_bytes(pickle.dumps(record, protocol=4))
        declare(path)  # a file given by path is declared (MOSI's schema), so only its content decides
        report = check(path, spec_for(str(path)))  # as `bench data check` does; collects problems, never raises
        refusal = _refusal(lambda: load_dataset(str(path), profile))
        # `bench data check` never passes a file the loader refuses (it may be stricter: it also reports
        # bad labels in a key the loader ignores).
        assert refusal is None or not report.ok, refusal
        outcomes.append("ok" if refusal is None else "refused")

    validate()
    assert len(outcomes) == RECORD_EXAMPLES
    # Not a vacuous fuzz: valid records load, broken ones are refused.
    assert outcomes.count("ok") >= RECORD_EXAMPLES // 5 and outcomes.count("refused") >= RECORD_EXAMPLES // 5
