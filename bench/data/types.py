"""The data contract every later stage relies on: arrays per split, per modality."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.data.splits import share_index

SPLITS = ("train", "dev", "valid", "test")


class DataError(ValueError):
    """Bad or unreadable data: the message names the file, split, key, expected vs found."""


@dataclass(frozen=True)
class SplitArrays:
    """One split. Arrays may be read-only memory maps of the cache."""

    features: dict[str, np.ndarray]  # modality -> (N, T_m, D_m) float32, zero-padded
    lengths: dict[str, np.ndarray]  # modality -> (N,) int64 true lengths, 1 <= len <= T_m
    labels: np.ndarray  # (N,) int64 class index in [0, num_classes)
    regression: np.ndarray | None  # (N,) float32 score in the spec's range ([-3, 3] MOSI), None if absent
    ids: np.ndarray  # (N,) str sample ids
    # modality -> (N,) float32 per-modality score (CH-SIMS regression_labels_T/_A/_V); empty for MOSI
    modality_scores: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: np.ndarray) -> SplitArrays:
        """Rows `index` of every array (a copy)."""
        return SplitArrays(
            features={m: np.asarray(x[index]) for m, x in self.features.items()},
            lengths={m: np.asarray(v[index]) for m, v in self.lengths.items()},
            labels=np.asarray(self.labels[index]),
            regression=None if self.regression is None else np.asarray(self.regression[index]),
            ids=np.asarray(self.ids[index]),
            modality_scores={m: np.asarray(v[index]) for m, v in self.modality_scores.items()},
        )


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: train / valid / test plus the fixed development split carved from train."""

    name: str  # "synth-mosi", "mosi", or the file stem of a dataset given by path
    num_classes: int
    modalities: tuple[str, ...]  # the modalities this data has, canonical order
    train: SplitArrays  # the full training split (dev rows included)
    valid: SplitArrays
    test: SplitArrays
    dev_index: np.ndarray  # (n_dev,) int64 rows of `train` that form the development split
    fingerprint: str  # sha256 of the source file, or of the generator's parameters
    synthetic: bool
    source: str  # path of the file, or "generator:<params>"
    notes: tuple[str, ...] = ()  # what loading changed, e.g. "zeroed 12 -inf values in audio"
    # The rule that made the class labels from the scores ("sign", "binned", "round"); "given" when
    # the labels are the file's own classification_labels.
    label_rule: str = ""
    spec: Any = None  # the bench.data.spec.DatasetSpec it was loaded by (None: a hand-made Dataset)

    def with_dev_share(self, share: float) -> Dataset:
        """The same data whose development split is a stratified `share` of train (bench.data.splits)."""
        return dataclasses.replace(self, dev_index=share_index(self.train.labels, share))

    @property
    def feature_dims(self) -> dict[str, int]:
        return {m: int(x.shape[2]) for m, x in self.train.features.items()}

    @property
    def seq_lens(self) -> dict[str, int]:
        return {m: int(x.shape[1]) for m, x in self.train.features.items()}

    def split(self, name: str, carve_dev: bool = False) -> SplitArrays:
        """'train' (without the dev rows when carve_dev), 'dev', 'valid' or 'test'."""
        if name == "valid":
            return self.valid
        if name == "test":
            return self.test
        if name == "dev":
            return self.train.subset(self.dev_index)
        if name == "train":
            if not carve_dev:
                return self.train
            keep = np.setdiff1d(np.arange(self.train.size), self.dev_index)
            return self.train.subset(keep)
        raise DataError(f"unknown split {name!r}; choose from {', '.join(SPLITS)}")
