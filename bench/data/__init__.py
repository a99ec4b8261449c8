"""Data layer: declared dataset specs, safe MMSA loading, validation, labels and splits, the synthetic surrogate."""

from bench.data.loader import data_fingerprint, load_dataset
from bench.data.registry import DATASETS, dataset_names, load_spec_file, register, spec_for
from bench.data.spec import DatasetSpec, LabelSpec
from bench.data.types import SPLITS, DataError, Dataset, SplitArrays

__all__ = ["DATASETS", "SPLITS", "DataError", "Dataset", "DatasetSpec", "LabelSpec", "SplitArrays",
           "data_fingerprint", "dataset_names", "load_dataset", "load_spec_file", "register", "spec_for"]
