"""Temporary: the old family helpers, until the dataset specs land (removed at integration)."""

from __future__ import annotations


def dataset_family(dataset: str) -> str:
    from bench.data.surrogates import REAL_NAMES, surrogate

    entry = surrogate(dataset)
    if entry is not None:
        return entry.like
    return dataset if dataset in REAL_NAMES else "custom"


def label_family(dataset: str) -> str:
    from bench.data.labels import family_for_path

    family = dataset_family(dataset)
    return family if family != "custom" else family_for_path(dataset)
