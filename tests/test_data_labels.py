"""Class labels from sentiment scores, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.labels import (
    binary_labels,
    classes_for_family,
    family_for_path,
    given_classes,
    mosei_classes,
    mosi_classes,
)
from bench.data.types import DataError


def test_mosi_three_classes_by_sign() -> None:
    scores = np.array([-3.0, -0.2, -1e-6, 0.0, 1e-6, 0.4, 3.0], dtype=np.float32)
    assert mosi_classes(scores).tolist() == [0, 0, 0, 1, 2, 2, 2]


@pytest.mark.parametrize(
    ("score", "label"),
    [(-3.0, 0), (-2.5, 1), (-1.5, 1), (-0.5, 3), (-1 / 3, 3), (0.0, 3), (1 / 3, 3), (0.5, 3), (0.6, 4),
     (1.5, 5), (2.5, 5), (2 + 2 / 3, 6), (3.0, 6)],
)
def test_mosei_seven_classes_round_half_to_even(score: float, label: int) -> None:
    assert mosei_classes(np.array([score], dtype=np.float32)).tolist() == [label]


def test_mosei_clips_before_rounding() -> None:
    assert mosei_classes(np.array([-3.4, 3.6])).tolist() == [0, 6]


def test_binary_labels_with_and_without_zero() -> None:
    scores = np.array([-1.0, 0.0, 2.0])
    assert binary_labels(scores).tolist() == [0, 1, 1]
    assert binary_labels(scores, include_zero=False).tolist() == [0, 0, 1]


def test_family_rule_for_paths() -> None:
    assert family_for_path("/data/CMU-MOSEI/Processed/unaligned_50.pkl") == "mosei"
    assert family_for_path("/data/MOSI/aligned_50.pkl") == "mosi"
    assert family_for_path("custom.pkl") == "mosi"
    assert classes_for_family(np.array([-0.5, 2.5]), "mosei").tolist() == [3, 5]
    assert classes_for_family(np.array([-0.5, 2.5]), "custom").tolist() == [0, 2]


def test_given_classification_labels() -> None:
    labels, k = given_classes(np.array([0.0, 2.0, 1.0]), None, "f: split 'train'")
    assert labels.tolist() == [0, 2, 1] and labels.dtype == np.int64 and k == 3
    assert given_classes(np.array([0, 1]), 4, "f")[1] == 4
    with pytest.raises(DataError, match="whole numbers"):
        given_classes(np.array([0.5, 1.0]), None, "f")
    with pytest.raises(DataError, match=r"must lie in \[0, 1\], found min 0, max 2"):
        given_classes(np.array([0, 2]), 2, "f")
