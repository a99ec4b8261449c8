"""The restricted unpickler: numpy data loads, anything else is refused before it runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from bench.data.safe_pickle import safe_load, safe_loads
from bench.data.types import DataError


class _Payload:
    """A pickle whose loading would call os.system and create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": {"text": _Payload(marker)}}))
    with pytest.raises(DataError) as caught:
        safe_load(path)
    message = str(caught.value)
    assert "posix.system" in message or "os.system" in message
    assert str(path) in message
    assert not marker.exists()


@pytest.mark.parametrize("global_name", ["builtins eval", "subprocess Popen", "numpy load", "numpy.testing assert_"])
def test_other_globals_are_refused(tmp_path: Path, global_name: str) -> None:
    module, name = global_name.split()
    # Protocol-0 opcodes by hand: GLOBAL module name, then STOP.
    payload = f"c{module}\n{name}\n.".encode()
    with pytest.raises(DataError, match=f"forbidden global '{module}.{name}'"):
        safe_loads(payload, "hand-made")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_numpy_arrays_scalars_and_containers_load(protocol: int) -> None:
    record = {
        "features": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
        "ids": np.array(["a$_$1", "b$_$2"]),
        "objects": np.array(["x", "y"], dtype=object),
        "scalar": np.float32(1.5),
        "lengths": [3, 1],
        "pair": (np.int64(7), {"nested": np.zeros((0, 3), dtype=np.float32)}),
        "kinds": {1, 2},
    }
    loaded = safe_loads(pickle.dumps(record, protocol=protocol))
    np.testing.assert_array_equal(loaded["features"], record["features"])
    np.testing.assert_array_equal(loaded["fortran"], record["fortran"])
    assert loaded["ids"].tolist() == ["a$_$1", "b$_$2"]
    assert loaded["objects"].tolist() == ["x", "y"]
    assert loaded["scalar"] == np.float32(1.5) and loaded["lengths"] == [3, 1]
    assert loaded["pair"][0] == 7 and loaded["pair"][1]["nested"].shape == (0, 3)
    assert loaded["kinds"] == {1, 2}


def test_arrays_point_into_the_pickled_bytes() -> None:
    """No second copy while loading (the cache's memory bound relies on it)."""
    loaded = safe_loads(pickle.dumps({"x": np.ones((40, 50), dtype=np.float32)}, protocol=4))
    assert isinstance(loaded["x"].base, bytes)


def test_truncated_pickle_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"x": np.ones((50, 50), dtype=np.float32)})[:-300])
    with pytest.raises(DataError, match="cut.pkl.*not a readable pickle"):
        safe_load(path)


def test_non_pickle_bytes_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.pkl"
    path.write_text("this is a text file, not a pickle\n")
    with pytest.raises(DataError, match="notes.pkl"):
        safe_load(path)


def test_empty_file_directory_and_missing_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pkl"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.pkl: the file is empty"):
        safe_load(empty)
    with pytest.raises(DataError, match="is a directory"):
        safe_load(tmp_path)
    with pytest.raises(DataError, match="missing.pkl: no such file"):
        safe_load(tmp_path / "missing.pkl")
