"""Class labels from sentiment scores, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.labels import (
    binary_labels,
    classes_by_rule,
    given_classes,
    mosei_binned_classes,
    mosei_rounded_classes,
    mosi_classes,
)
from bench.data.registry import spec_for
from bench.data.types import DataError


def test_mosi_three_classes_by_sign() -> None:
    scores = np.array([-3.0, -0.2, -1e-6, 0.0, 1e-6, 0.4, 3.0], dtype=np.float32)
    assert mosi_classes(scores).tolist() == [0, 0, 0, 1, 2, 2, 2]


# Every value of the 1/3 grid from -3 to 3 plus the half points, with its class written out by hand
# under [133]'s bins (y < -2 | [-2, -1) | [-1, 0) | 0 | (0, 1] | (1, 2] | > 2) and under rounding.
GRID_CLASSES = [
    # score,   binned, round
    (-3.0,     0, 0), (-8 / 3, 0, 0), (-2.5, 0, 1), (-7 / 3, 0, 1),
    (-2.0,     1, 1), (-5 / 3, 1, 1), (-1.5, 1, 1), (-4 / 3, 1, 2),
    (-1.0,     2, 2), (-2 / 3, 2, 2), (-0.5, 2, 3), (-1 / 3, 2, 3),
    (0.0,      3, 3),
    (1 / 3,    4, 3), (0.5,    4, 3), (2 / 3,  4, 4), (1.0,    4, 4),
    (4 / 3,    5, 4), (1.5,    5, 5), (5 / 3,  5, 5), (2.0,    5, 5),
    (7 / 3,    6, 5), (2.5,    6, 5), (8 / 3,  6, 6), (3.0,    6, 6),
]


@pytest.mark.parametrize(("score", "binned", "rounded"), GRID_CLASSES)
def test_mosei_seven_classes_on_the_third_grid(score: float, binned: int, rounded: int) -> None:
    as_stored = np.array([score], dtype=np.float32)  # MMSA files hold float32 scores
    assert mosei_binned_classes(as_stored).tolist() == [binned]
    assert mosei_rounded_classes(as_stored).tolist() == [rounded]
    assert classes_by_rule(as_stored, "binned").tolist() == [binned]
    assert classes_by_rule(as_stored, "round").tolist() == [rounded]


def test_binned_rule_is_the_mosei_default_and_keeps_only_exact_zero_neutral() -> None:
    scores = np.array([-1e-6, 0.0, 1e-6], dtype=np.float32)
    assert spec_for("mosei").labels.default_rule == "binned" and spec_for("mosi").labels.default_rule == "sign"
    assert classes_by_rule(scores, "binned").tolist() == [2, 3, 4]
    assert classes_by_rule(scores, "round").tolist() == [3, 3, 3]


def test_mosei_rules_beyond_the_range() -> None:
    assert mosei_rounded_classes(np.array([-3.4, 3.6])).tolist() == [0, 6]
    assert mosei_binned_classes(np.array([-3.4, 3.6])).tolist() == [0, 6]


def test_a_rule_another_dataset_declares_is_refused() -> None:
    with pytest.raises(DataError, match="label rule 'round' does not apply to 3-class MOSI"):
        spec_for("mosi").check_rule("round")
    with pytest.raises(DataError, match="label rule 'sign' does not apply to 3-class SIMS-style labels; choose "
                                        "from sims3, sims5"):
        spec_for("sims").check_rule("sign")
    with pytest.raises(DataError, match="unknown label rule 'nearest'"):
        classes_by_rule(np.array([0.5]), "nearest")


def test_binary_labels_with_and_without_zero() -> None:
    scores = np.array([-1.0, 0.0, 2.0])
    assert binary_labels(scores).tolist() == [0, 1, 1]
    assert binary_labels(scores, include_zero=False).tolist() == [0, 0, 1]


def test_sims_rules_are_mmsas_acc3_and_acc5_bins_closed_on_the_right() -> None:
    scores = np.array([-1.0, -0.7, -0.6, -0.1, 0.0, 0.1, 0.2, 0.7, 0.8, 1.0])
    assert classes_by_rule(scores, "sims3").tolist() == [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    assert classes_by_rule(scores, "sims5").tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_given_classification_labels() -> None:
    labels, k = given_classes(np.array([0.0, 2.0, 1.0]), None, "f: split 'train'")
    assert labels.tolist() == [0, 2, 1] and labels.dtype == np.int64 and k == 3
    assert given_classes(np.array([0, 1]), 4, "f")[1] == 4
    with pytest.raises(DataError, match="whole numbers"):
        given_classes(np.array([0.5, 1.0]), None, "f")
    with pytest.raises(DataError, match=r"must lie in \[0, 1\], found min 0, max 2"):
        given_classes(np.array([0, 2]), 2, "f")
