"""The array cache: data converted once into .npy files that training opens as read-only memory maps.

Layout under the cache root (`$BENCH_CACHE_DIR`, else ~/.cache/bench):

    mmsa/<sha256 of the source file>/      a converted MMSA pickle
    synth/<sha256 of the generator params>/ a generated surrogate
        meta.json                          written last: a directory without it is incomplete
        train/text.npy, train/text_lengths.npy, ..., train/regression.npy, train/ids.npy, valid/..., test/...

A cache directory is written under a temporary name and renamed into place, so readers never see a
half-written one. Conversion goes split by split and array by array, each array freed once saved, so
memory stays near one copy of the source's arrays (the unpickled file) plus the array being written.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.types import DataError

CACHE_FORMAT = 1
HASH_BLOCK = 1 << 20


def cache_root() -> Path:
    """$BENCH_CACHE_DIR, else ~/.cache/bench."""
    configured = os.environ.get("BENCH_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "bench"


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def known_sha256(path: Path) -> str:
    """sha256 of `path`, remembered per (path, size, mtime) so a multi-GB file is hashed once."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = cache_root() / "hashes" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".txt")
    try:
        remembered = memo.read_text().split()
        if len(remembered) == 2 and remembered[1] == key.split("|", 1)[1]:
            return remembered[0]
    except OSError:
        pass
    digest = file_sha256(path)
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        _write_text_atomic(memo, f"{digest} {key.split('|', 1)[1]}\n")
    except OSError:
        pass  # remembering is an optimisation only
    return digest


def _write_text_atomic(path: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(temp, path)


def entry_dir(kind: str, key: str) -> Path:
    """The cache directory of one converted source ('mmsa' or 'synth', keyed by its sha256)."""
    return cache_root() / kind / key


def is_complete(directory: Path) -> bool:
    return (directory / "meta.json").is_file()


ArrayWriter = Callable[[str, str, np.ndarray], None]  # save(split, name, array)
ArrayOpener = Callable[[str, str, tuple, Any], np.ndarray]  # open_array(split, name, shape, dtype)


def write_entry(directory: Path, fill: Callable[[ArrayWriter, ArrayOpener], dict[str, Any]]) -> None:
    """Build a cache entry atomically: `fill(save, open_array)` writes the arrays and returns the meta.

    `save(split, name, array)` stores a finished array; `open_array(split, name, shape, dtype)` returns a
    writable .npy memory map to fill in place (for arrays too large to build in memory).
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name[:12]}-"))
    try:
        def save(split: str, name: str, array: np.ndarray) -> None:
            (temp / split).mkdir(exist_ok=True)
            np.save(temp / split / f"{name}.npy", array, allow_pickle=False)

        def open_array(split: str, name: str, shape: tuple, dtype: Any) -> np.ndarray:
            (temp / split).mkdir(exist_ok=True)
            return np.lib.format.open_memmap(temp / split / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

        meta = fill(save, open_array)
        meta = {"format": CACHE_FORMAT, **meta}
        (temp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        try:
            os.rename(temp, directory)
        except OSError:
            if not is_complete(directory):  # someone else's complete entry wins; anything else is an error
                raise
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def read_meta(directory: Path) -> dict[str, Any]:
    meta = json.loads((directory / "meta.json").read_text())
    if meta.get("format") != CACHE_FORMAT:
        raise DataError(f"{directory}: cache format {meta.get('format')} is not {CACHE_FORMAT}; delete it")
    return meta


def read_arrays(directory: Path, split: str) -> dict[str, np.ndarray]:
    """name -> read-only memory map of every array of one split."""
    arrays = {}
    for file in sorted((directory / split).glob("*.npy")):
        arrays[file.stem] = np.load(file, mmap_mode="r", allow_pickle=False)
    return arrays


def iter_entries(kind: str) -> Iterator[Path]:
    root = cache_root() / kind
    if root.is_dir():
        yield from (p for p in sorted(root.iterdir()) if is_complete(p))
