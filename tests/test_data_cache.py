"""The memory-mapped array cache: keyed by the file's hash, read back as memory maps, written atomically."""

from __future__ import annotations

import hashlib
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from tiny import declare

from bench.data import cache, loader, mmsa
from bench.data.types import DataError


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("BENCH_CACHE_DIR", str(root))
    loader.clear_memory_cache()
    return root


def test_second_load_reads_the_memory_maps(own_cache, tiny_record, write_record, monkeypatch) -> None:
    path = write_record(tiny_record())
    first = loader.load_dataset(str(path), "full")
    loader.clear_memory_cache()

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(mmsa, "read_raw", no_unpickling)
    second = loader.load_dataset(str(path), "full")
    assert isinstance(second.train.features["text"], np.memmap)
    assert not second.train.features["text"].flags.writeable
    np.testing.assert_array_equal(second.valid.features["audio"], first.valid.features["audio"])
    np.testing.assert_array_equal(second.test.labels, first.test.labels)


def test_cache_is_keyed_by_the_file_hash(own_cache, tiny_record, write_record, tmp_path) -> None:
    record = tiny_record()
    path = write_record(record)
    data = loader.load_dataset(str(path), "full")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.fingerprint == digest
    assert (own_cache / "mmsa" / digest / "meta.json").is_file()
    copy = tmp_path / "copy.pkl"  # same bytes elsewhere: same entry, nothing converted again
    copy.write_bytes(path.read_bytes())
    declare(copy)
    assert loader.load_dataset(str(copy), "full").fingerprint == digest
    assert len(list((own_cache / "mmsa").iterdir())) == 1
    record["train"]["regression_labels"][0] = 1.0 if record["train"]["regression_labels"][0] != 1.0 else 2.0
    changed = write_record(record, name="changed.pkl")
    assert loader.load_dataset(str(changed), "full").fingerprint != digest
    entries = sorted(p.name for p in (own_cache / "mmsa").iterdir())
    assert len(entries) == 2 and not any(name.startswith(".tmp") for name in entries)


def test_failed_conversion_leaves_no_entry(own_cache, tiny_record, write_record) -> None:
    record = tiny_record()
    record["test"]["vision"][0, 0, 0] = np.nan
    with pytest.raises(DataError, match="1 NaN"):
        loader.load_dataset(str(write_record(record)), "full")
    assert list((own_cache / "mmsa").iterdir()) == []


def test_real_profiles_take_a_fixed_stratified_subset(own_cache, tiny_record, write_record, monkeypatch) -> None:
    path = write_record(tiny_record(), spec={"like": "mosi", "profile_sizes": {"smoke": [8, 4, 4]}})
    small = loader.load_dataset(str(path), "smoke")
    again = loader.load_dataset(str(path), "smoke")
    assert (small.train.size, small.valid.size, small.test.size) == (8, 4, 4)
    np.testing.assert_array_equal(small.train.ids, again.train.ids)
    assert any("profile smoke: fixed stratified subset 8/4/4" in note for note in small.notes)


def test_conversion_memory_stays_below_one_and_a_half_copies(own_cache, tmp_path) -> None:
    """Unpickle + validate + write of ~12 MB of arrays peaks below 1.5x the array bytes."""
    rng = np.random.default_rng(0)
    record, array_bytes = {}, 0
    for split, n in (("train", 200), ("valid", 60), ("test", 60)):
        part = {
            "text": rng.normal(size=(n, 20, 256)).astype(np.float32),  # (N, L, 768) in miniature
            "audio": rng.normal(size=(n, 40, 30)).astype(np.float32),
            "audio_lengths": np.full(n, 40),
            "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
            "id": np.array([f"v{i}" for i in range(n)]),
        }
        part["audio"][0, 0, 0] = -np.inf  # forces one copy of one array, the worst case
        array_bytes += part["text"].nbytes + part["audio"].nbytes
        record[split] = part
    path = tmp_path / "big.pkl"
    path.write_bytes(pickle.dumps(record, protocol=4))
    del record, part
    digest = cache.file_sha256(path)
    tracemalloc.start()
    try:
        loader.convert_file(path, digest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * array_bytes, (peak / array_bytes)
    meta = cache.read_meta(cache.entry_dir("mmsa", digest))
    assert meta["notes"] == ["zeroed 1 -inf values in audio/train", "zeroed 1 -inf values in audio/valid",
                             "zeroed 1 -inf values in audio/test"]


def test_named_real_dataset_missing_says_how_to_get_it(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="set BENCH_DATA_DIR .* 'synth-mosi' is the built-in surrogate"):
        loader.load_dataset("mosi")
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=r"MOSEI/Processed/unaligned_50.pkl not found"):
        loader.load_dataset("mosei")


def test_named_real_dataset_uses_the_family_rule(own_cache, tiny_record, write_record, tmp_path) -> None:
    record = tiny_record()
    record["train"]["regression_labels"][:2] = [-0.5, 2.5]
    for part in record.values():  # a 3-class column the MOSEI rule must ignore
        part["classification_labels"] = np.zeros(part["text"].shape[0], dtype=np.int64)
    folder = tmp_path / "data" / "MOSEI" / "Processed"
    folder.mkdir(parents=True)
    write_record(record).rename(folder / "unaligned_50.pkl")
    data = loader.load_dataset("mosei", "full", data_dir=tmp_path / "data")
    # [133]'s bins: -0.5 in [-1, 0) -> 2, 2.5 > 2 -> 6
    assert data.name == "mosei" and data.num_classes == 7 and data.train.labels[:2].tolist() == [2, 6]
    assert data.label_rule == "binned"
    assert data.dev_index.shape == (1,)  # min(200, round(0.1 * 12))
    rounded = loader.load_dataset("mosei", "full", data_dir=tmp_path / "data", label_rule="round")
    assert rounded.train.labels[:2].tolist() == [3, 5] and rounded.label_rule == "round"  # half to even


def test_unknown_profile_is_an_error() -> None:
    with pytest.raises(DataError, match="unknown profile 'medium'"):
        loader.load_dataset("synth-mosi", "medium")
