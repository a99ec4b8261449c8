"""A restricted unpickler: numpy arrays, numpy scalars and plain containers only.

A pickle names every class or function it needs as a global (`module.name`) and the unpickler
imports it; a hostile file can name `os.system` and have it called. `find_class` below admits a short
allow-list and refuses everything else before anything is imported, so no payload ever runs.
Plain containers (dict, list, tuple, str, bytes, numbers) need no global at all.

Memory safety: allow-listed globals alone could still crash the process (found by fuzzing): numpy
turns raw bytes into object pointers when `numpy.ndarray` is called directly with an object dtype and
a buffer, or when a dtype's state (BUILD) forges its flags, and numpy's own `dtype.__setstate__`
crashes on some malformed states. So `numpy.ndarray` is admitted only as the class argument of
`_reconstruct`, and BUILD (`__setstate__`) only on arrays and dtypes, with a state of exactly the form
numpy writes (for a dtype: the flags and sizes numpy gives that type). Overriding BUILD needs the
pure-Python unpickler; a file's bulk is a few large byte strings, so it is hardly slower (0.2 s for
a 440 MB file).

Memory: for pickle protocols 3-5 numpy's own `__setstate__` makes each array point into the bytes
object the unpickler read (no second copy), so a loaded file costs about its array bytes once.
Protocol-2 files (bytes stored as latin-1 text) cost several times that while loading.
"""

from __future__ import annotations

import io
import math
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


class _NdarrayClass:
    """Stands for `numpy.ndarray` in a pickle: valid only as the class argument of `_reconstruct`."""

    def __repr__(self) -> str:
        return "numpy.ndarray (class argument of _reconstruct only)"


_NDARRAY = _NdarrayClass()


def _reconstruct_array(reconstruct: Any) -> Any:
    """numpy's `_reconstruct(ndarray, shape, typecode)`, for plain arrays only."""

    def rebuild(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError(f"_reconstruct of {subtype!r} is not allowed (only numpy.ndarray)")
        return reconstruct(np.ndarray, shape, typecode)

    return rebuild


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """(module, name) -> object, for everything a pickle of numpy data written by numpy 1 or 2 needs."""
    reconstruct = _reconstruct_array(_numpy_core_attr("multiarray", "_reconstruct"))
    scalar = _numpy_core_attr("multiarray", "scalar")
    frombuffer = _numpy_core_attr("numeric", "_frombuffer")
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): _NDARRAY,
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


def _checked_dtype_state(dtype: np.dtype, state: Any) -> None:
    """Refuse a dtype state unless it is the one numpy writes for this dtype (any byte order).

    Checked before numpy sees it: numpy's own `dtype.__setstate__` crashes on some malformed tuples.
    """
    if dtype.names is not None or dtype.subdtype is not None:
        raise pickle.UnpicklingError(f"structured or sub-array dtype {dtype} is not allowed")
    expected = dtype.__reduce__()[2]  # (3, byteorder, subarray, names, fields, elsize, alignment, flags)
    orders = ("|",) if expected[1] == "|" else ("<", ">", "=")
    well_formed = (isinstance(state, tuple) and len(state) in (8, 9) and state[0] in (3, 4)
                   and isinstance(state[1], str) and state[1] in orders and (len(state) == 8 or state[8] is None))
    # subarray, names, fields, elsize, alignment, flags: exactly numpy's (types too: no look-alike objects)
    if not well_formed or any(type(a) is not type(b) or a != b
                              for a, b in zip(state[2:8], expected[2:8], strict=True)):
        raise pickle.UnpicklingError(f"dtype state {state!r:.120} is not the one numpy writes for {dtype}")


def _checked_array_state(state: Any) -> None:
    """Refuse an array state that is not (1, shape, dtype, is_fortran, data) as numpy writes it: data is
    a list of exactly one object per element for object arrays (numpy crashes on a shorter one), else
    bytes (whose size numpy checks)."""
    well_formed = (isinstance(state, tuple) and len(state) == 5 and state[0] == 1
                   and isinstance(state[1], tuple) and all(type(n) is int and n >= 0 for n in state[1])
                   and isinstance(state[2], np.dtype) and type(state[3]) in (bool, int))
    if well_formed:
        data = state[4]
        if state[2].hasobject:
            well_formed = isinstance(data, list) and len(data) == math.prod(state[1])
        else:
            well_formed = isinstance(data, bytes)
    if not well_formed:
        raise pickle.UnpicklingError(f"array state {state!r:.120} is not the one numpy writes")


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickler whose `find_class` only returns allow-listed numpy / builtin objects (pure Python, so
    BUILD can be checked too)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, source: str, size: int) -> None:
        super().__init__(file)
        self.source = source
        self.size = size  # bytes of the whole input: no object in it can be larger

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

    def load_build(self) -> None:
        """BUILD (`obj.__setstate__(state)`): only on numpy arrays and dtypes, dtype states checked first."""
        state, target = self.stack[-1], self.stack[-2]
        if isinstance(target, np.dtype):
            _checked_dtype_state(target, state)
        elif isinstance(target, np.ndarray):
            _checked_array_state(state)
        else:
            raise pickle.UnpicklingError(f"setting the state of a {type(target).__name__} is not allowed")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def load_bytearray8(self) -> None:
        """BYTEARRAY8, refusing a declared size beyond the input (the pure-Python unpickler zero-fills the
        declared size before reading: a damaged length would claim all memory)."""
        (size,) = struct.unpack("<Q", self.read(8))
        if size > self.size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 declares {size} bytes, more than the input ({self.size})")
        data = bytearray(size)
        if self.readinto(data) != size:
            raise pickle.UnpicklingError("pickle data was truncated")
        self.append(data)

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


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
            return RestrictedUnpickler(handle, str(path), path.stat().st_size).load()
        except DataError:
            raise
        except _DAMAGED as err:
            raise DataError(f"{path}: not a readable pickle (truncated or not a pickle): "
                            f"{type(err).__name__}: {err}") from err
        except MemoryError as err:
            raise DataError(_out_of_memory(str(path))) from err


def safe_loads(data: bytes, source: str = "<bytes>") -> Any:
    """`safe_load` for bytes already in memory."""
    if not data:
        raise DataError(f"{source}: empty input, expected a pickle")
    try:
        return RestrictedUnpickler(io.BytesIO(data), source, len(data)).load()
    except DataError:
        raise
    except _DAMAGED as err:
        raise DataError(f"{source}: not a readable pickle: {type(err).__name__}: {err}") from err
    except MemoryError as err:
        raise DataError(_out_of_memory(source)) from err


def _out_of_memory(source: str) -> str:
    # A damaged length field can declare an absurd size (the unpickler allocates it up front).
    return (f"{source}: out of memory while unpickling: the file declares an object larger than this machine "
            "can hold (corrupt, or too large to load here)")
