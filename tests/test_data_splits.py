"""The development split: stratified, stable, disjoint from the rest of train."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.splits import allocate, dev_index, dev_size, stratified_sample


def _labels(counts: list[int], seed: int = 3) -> np.ndarray:
    labels = np.repeat(np.arange(len(counts)), counts)
    return np.random.default_rng(seed).permutation(labels)


def test_dev_sizes_follow_the_rule() -> None:
    assert dev_size(1284, 100) == 100  # MOSI's dev_size
    assert dev_size(16326, 200) == 200  # MOSEI's
    assert dev_size(500, 100) == 50  # small train: 10 %
    assert dev_size(48, 100) == 5
    assert dev_size(800, 100) == 80


def test_dev_split_is_stratified_within_one_sample() -> None:
    labels = _labels([552, 53, 679])  # MOSI-like train
    rows = dev_index(labels, 100)
    assert rows.shape == (100,)
    got = np.bincount(labels[rows], minlength=3)
    expected = 100 * np.bincount(labels) / labels.shape[0]
    assert np.all(np.abs(got - expected) < 1.0), (got, expected)


def test_mosei_dev_split_has_200_rows_and_every_class() -> None:
    labels = _labels([200, 900, 2200, 5300, 4000, 2600, 1326])
    rows = dev_index(labels, 200)
    got = np.bincount(labels[rows], minlength=7)
    assert rows.shape == (200,) and got.sum() == 200 and (got >= 1).all()
    assert np.all(np.abs(got - 200 * np.bincount(labels) / labels.shape[0]) < 1.0)


def test_dev_split_is_stable_and_disjoint_from_train() -> None:
    labels = _labels([40, 5, 55])
    first, second = dev_index(labels, 100), dev_index(labels.copy(), 100)
    np.random.seed(123)  # global numpy state must not matter
    third = dev_index(labels, 100)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first, third)
    assert np.unique(first).shape == first.shape
    rest = np.setdiff1d(np.arange(labels.shape[0]), first)
    assert rest.shape[0] + first.shape[0] == labels.shape[0]
    assert np.intersect1d(rest, first).size == 0


def test_small_classes_get_at_least_one_row_when_possible() -> None:
    # Proportional: 4.5, 0.1, 0.4 -> largest remainder [5, 0, 0]; the two small classes take one each
    # from the class most over its quota.
    assert allocate(np.array([90, 2, 8]), 5).tolist() == [3, 1, 1]
    assert allocate(np.array([90, 2, 8]), 2).tolist() == [2, 0, 0]  # fewer rows than classes: proportional
    assert allocate(np.array([1, 99]), 10).tolist() == [0, 10]  # a single sample is never forced in


@pytest.mark.parametrize("size", [0, 7, 100])
def test_stratified_sample_sizes(size: int) -> None:
    labels = _labels([30, 3, 37])
    rows = stratified_sample(labels, size)
    assert rows.shape == (min(size, 70),) and np.all(np.diff(rows) > 0)
