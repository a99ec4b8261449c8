"""A restricted unpickler: numpy arrays, numpy scalars and plain containers only.

A pickle names every class or function it needs as a global (`module.name`) and the unpickler
imports it; a hostile file can name `os.system` and have it called. `find_class` below admits a short
allow-list and refuses everything else before anything is imported, so no payload ever runs.
Plain containers (dict, list, tuple, str, bytes, numbers) need no global at all.

Memory: for pickle protocols 3-5 numpy's own `__setstate__` makes each array point into the bytes
object the unpickler read (no second copy), so a loaded file costs about its array bytes once.
Protocol-2 files (bytes stored as latin-1 text) cost several times that while loading.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.types import DataError


def _numpy_core_attr(module_tail: str, name: str) -> Any:
    """`numpy._core.<tail>.<name>` (numpy 2) or `numpy.core.<tail>.<name>` (numpy 1)."""
    import importlib

    for prefix in ("numpy._core", "numpy.core"):
        try:
            module = importlib.import_module(f"{prefix}.{module_tail}")
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    raise RuntimeError(f"numpy has no {module_tail}.{name}")  # pragma: no cover - numpy layout changed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Protocol-2 pickles store bytes as `_codecs.encode(text, 'latin1')`; nothing else is allowed."""
    if encoding.replace("-", "").replace("_", "").lower() != "latin1" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object, for everything a pickle of numpy data written by numpy 1 or 2 needs."""
    reconstruct = _numpy_core_attr("multiarray", "_reconstruct")
    scalar = _numpy_core_attr("multiarray", "scalar")
    frombuffer = _numpy_core_attr("numeric", "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
    }
    for prefix in ("numpy._core", "numpy.core"):
        allowed[(f"{prefix}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{prefix}.multiarray", "scalar")] = scalar
        allowed[(f"{prefix}.numeric", "_frombuffer")] = frombuffer
    # Containers that older protocols build through a global call.
    plain = (set, frozenset, bytes, bytearray, complex, slice, range, bool, int, float, str, list, tuple, dict)
    for obj in plain:
        name = obj.__name__
        allowed[("builtins", name)] = obj
        allowed[("__builtin__", name)] = obj  # protocol-2 pickles written by Python 2
    allowed[("collections", "OrderedDict")] = dict  # an ordered dict loads as a plain (ordered) dict
    return allowed


_ALLOWED: dict[tuple[str, str], Any] | None = None


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose `find_class` only returns allow-listed numpy / builtin objects."""

    def __init__(self, file: Any, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        global _ALLOWED
        if _ALLOWED is None:
            _ALLOWED = _allowed_globals()
        found = _ALLOWED.get((module, name))
        if found is None:
            raise DataError(
                f"{self.source}: refused to load: the pickle asks for the forbidden global '{module}.{name}' "
                "(only numpy arrays, numpy scalars and plain containers are allowed)"
            )
        return found


# Everything the pickle machinery raises on damaged or non-pickle input.
_DAMAGED = (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, struct.error, OverflowError, UnicodeDecodeError)


def check_readable_file(path: Path) -> None:
    """DataError unless `path` is an existing, non-empty regular file."""
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected an MMSA pickle file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty, expected an MMSA pickle")


def safe_load(path: Path | str) -> Any:
    """Unpickle `path` through RestrictedUnpickler; DataError naming the file on any problem."""
    path = Path(path)
    check_readable_file(path)
    with open(path, "rb") as handle:
        try:
            return RestrictedUnpickler(handle, str(path)).load()
        except DataError:
            raise
        except _DAMAGED as err:
            raise DataError(f"{path}: not a readable pickle (truncated or not a pickle): "
                            f"{type(err).__name__}: {err}") from err


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """`safe_load` for bytes already in memory."""
    if not data:
        raise DataError(f"{source}: empty input, expected a pickle")
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except DataError:
        raise
    except _DAMAGED as err:
        raise DataError(f"{source}: not a readable pickle: {type(err).__name__}: {err}") from err
