"""Data layer: safe MMSA loading, validation, labels and splits, the synthetic surrogate."""

from bench.data.loader import data_fingerprint, load_dataset
from bench.data.types import SPLITS, DataError, Dataset, SplitArrays

__all__ = ["SPLITS", "DataError", "Dataset", "SplitArrays", "data_fingerprint", "load_dataset"]
