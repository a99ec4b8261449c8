"""Data layer: safe MMSA loading, validation, labels and splits, the synthetic surrogate."""

from bench.data.loader import load_dataset
from bench.data.types import SPLITS, DataError, Dataset, SplitArrays

__all__ = ["SPLITS", "DataError", "Dataset", "SplitArrays", "load_dataset"]
