"""Stratified row selection: the development split and the profile subsets of real data.

The development split is carved from train with a fixed split seed (SPLIT_SEED, independent of the
run seed), so every run of every method sees the same dev rows. Its size:

    n_dev = min(base, round(0.1 * N_train)),  base = the spec's dev_size (MOSI 100, MOSEI 200, CH-SIMS 100)

i.e. the thesis's 100 / 200 samples on full-size data, and never more than 10 % of a small (smoke /
quick) training split. Classes are allocated proportionally by largest remainder; every class with
at least 2 samples gets at least one dev row when n_dev allows it.
"""

from __future__ import annotations

import numpy as np

SPLIT_SEED = 20250101
DEV_MAX_FRACTION = 0.1


def dev_size(n_train: int, base: int) -> int:
    """Rows of train that form the development split (see module docstring); `base` is the spec's dev_size."""
    return int(min(base, round(DEV_MAX_FRACTION * n_train)))


def allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split `total` draws over classes with `counts` samples: proportional, largest remainder.

    Every class with >= 2 samples gets >= 1 draw when `total` is at least the number of such classes;
    the draw is taken from the class that is most over its proportional quota.
    """
    counts = np.asarray(counts, dtype=np.int64)  # (K,)
    n = int(counts.sum())
    total = int(min(max(total, 0), n))
    if total == 0:
        return np.zeros_like(counts)
    quota = total * counts / n  # (K,) float, the exact proportional share
    alloc = np.floor(quota).astype(np.int64)
    remainder = quota - alloc
    # Ties in the remainder go to the lower class index (stable sort), so the result is deterministic.
    order = np.argsort(-remainder, kind="stable")
    alloc[order[: total - int(alloc.sum())]] += 1
    eligible = np.flatnonzero(counts >= 2)
    if total >= len(eligible):
        for k in eligible:
            if alloc[k] > 0:
                continue
            surplus = np.where(alloc > 1, alloc - quota, -np.inf)
            donor = int(np.argmax(surplus))
            if not np.isfinite(surplus[donor]):
                break
            alloc[donor] -= 1
            alloc[k] = 1
    return alloc


def stratified_sample(labels: np.ndarray, size: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """(size,) int64 sorted row indices: a stratified random sample of `labels`, deterministic in seed."""
    labels = np.asarray(labels, dtype=np.int64)  # (N,)
    if size >= labels.shape[0]:
        return np.arange(labels.shape[0], dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    alloc = allocate(counts, size)
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for cls, take in zip(classes, alloc, strict=True):
        rows = np.flatnonzero(labels == cls)
        # One permutation per class, drawn in class order, so the choice depends only on labels + seed.
        chosen.append(rows[rng.permutation(rows.shape[0])[:take]])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def dev_index(train_labels: np.ndarray, base: int) -> np.ndarray:
    """(n_dev,) int64 sorted rows of train that form the fixed development split (`base`: the spec's dev_size)."""
    return stratified_sample(train_labels, dev_size(int(np.asarray(train_labels).shape[0]), base))


def share_index(train_labels: np.ndarray, share: float) -> np.ndarray:
    """(floor(share * N_train),) int64 sorted rows of train: a stratified sample of that share of the rows
    (the fixed split seed), for a method that holds out its own share rather than the dataset's dev split."""
    n_train = int(np.asarray(train_labels).shape[0])
    return stratified_sample(train_labels, int(share * n_train + 1e-9))
