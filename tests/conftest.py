"""Shared test fixtures: an isolated array cache, tiny MMSA-schema records and the tiny dataset."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny import declare, make_tiny_dataset

# Tiny per-modality (padded steps, feature size); deliberately not the real MMSA sizes.
TINY_SHAPES = {"text": (5, 8), "audio": (7, 3), "vision": (6, 4)}


@pytest.fixture(scope="module")
def tiny():
    """The tiny in-memory dataset of tests/tiny.py (train 64 / valid 24 / test 24)."""
    return make_tiny_dataset()


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test session writes its array cache (BENCH_CACHE_DIR) to a temporary folder, not ~/.cache."""
    previous = os.environ.get("BENCH_CACHE_DIR")
    root = tmp_path_factory.mktemp("bench-cache")
    os.environ["BENCH_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("BENCH_CACHE_DIR", None)
    else:
        os.environ["BENCH_CACHE_DIR"] = previous


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No real data, and the executors train with the fake job of test_execute_fakes (instant, seeded)."""
    import test_execute_fakes as fakes

    from bench import execute

    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)


def tiny_split(n: int, seed: int, with_lengths: bool = True) -> dict[str, Any]:
    """One MMSA-schema split of n samples with zero padding after each true length."""
    rng = np.random.default_rng(seed)
    split: dict[str, Any] = {
        "id": np.array([f"v{seed}_{i // 2}$_${i % 2}" for i in range(n)]),
        "raw_text": np.array([f"utterance {i}" for i in range(n)], dtype=object),
        "regression_labels": rng.choice(np.arange(-9, 10) / 3, size=n).astype(np.float32),
    }
    for modality, (steps, dim) in TINY_SHAPES.items():
        lengths = rng.integers(1, steps + 1, size=n)
        x = rng.normal(size=(n, steps, dim)).astype(np.float32) + 0.5  # (n, T, D), no all-zero rows
        x[np.arange(steps)[None, :] >= lengths[:, None]] = 0.0
        split[modality] = x
        if with_lengths and modality != "text":
            split[f"{modality}_lengths"] = lengths.astype(np.int64)
        split[f"_true_{modality}_lengths"] = lengths  # for assertions; removed before writing
    return split


@pytest.fixture
def tiny_record() -> Callable[..., dict[str, Any]]:
    """Factory: a valid MMSA-schema dict (train 12 / valid 6 / test 6 samples) tests may then break."""

    def make(sizes: tuple[int, int, int] = (12, 6, 6), with_lengths: bool = True) -> dict[str, Any]:
        return {name: tiny_split(n, seed, with_lengths)
                for seed, (name, n) in enumerate(zip(("train", "valid", "test"), sizes, strict=True))}

    return make


@pytest.fixture
def write_record(tmp_path: Path) -> Callable[..., Path]:
    """Factory: pickle a record (without the _true_* helper keys) to tmp_path / name, declared by a spec
    file beside it (`spec`: its keys, default like = "mosi"; declared=False: none)."""

    def write(record: Any, name: str = "data.pkl", protocol: int = 4, spec: dict[str, Any] | None = None,
              declared: bool = True) -> Path:
        clean = record
        if isinstance(record, dict):
            clean = {split: {k: v for k, v in part.items() if not str(k).startswith("_true_")}
                     if isinstance(part, dict) else part for split, part in record.items()}
        path = tmp_path / name
        path.write_bytes(pickle.dumps(clean, protocol=protocol))
        if declared:  # a file given by path must be declared: a spec beside it (default like = "mosi")
            declare(path, **(spec or {}))
        return path

    return write
