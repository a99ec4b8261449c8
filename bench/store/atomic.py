"""Atomic file writes: a hidden temp name in the final folder, fsync, rename over the final name.

A kill at any moment leaves the old file or the new one, never a partial one. Temp names carry the
writer's host and pid, so a later process can tell an abandoned temp file (its writer died) from a live
writer's (see bench.store.leftovers).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import socket
import time
from pathlib import Path

TEMP_MAX_AGE_S = 24 * 3600.0  # a temp file of another host is abandoned after this long
ASIDE_MAX_AGE_S = 60.0  # a claim moved aside while being broken lives for milliseconds
_TEMP_NAME = re.compile(r"\..+\.([0-9a-f]{8})\.(\d+)-[0-9a-f]{8}\.tmp")


def host() -> str:
    """This machine's name, as temp names and claims record it."""
    return socket.gethostname()


def _host_tag() -> str:
    """Short tag of this host for temp names (host names may hold dots)."""
    return hashlib.sha256(host().encode()).hexdigest()[:8]


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the parenthesised command name; a zombie has finished.
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def temp_path(path: Path) -> Path:
    """A hidden temp name next to `path` that tells which host and process is writing it."""
    return path.parent / f".{path.name}.{_host_tag()}.{os.getpid()}-{secrets.token_hex(4)}.tmp"


def write_synced(path: Path, data: bytes) -> None:
    """Create `path` (it must not exist) with `data`, flushed to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either absent/old or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write_synced(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_output(path: str | os.PathLike[str], data: bytes | str) -> Path:
    """An output file (a table, a plot, a report, an export) written atomically: a full disk or a kill leaves
    the old file or none, never a truncated one. IsADirectoryError when `path` is a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name")
    atomic_write(path, data.encode("utf-8") if isinstance(data, str) else data)
    return path


def fsync_dir(folder: Path) -> None:
    """Persist the rename itself (best effort: not every filesystem allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def abandoned_temp(path: Path) -> bool:
    """A temp file whose writer died: its process is gone (this host), or it is a day old (any host).
    A claim moved aside while being broken (`.stale`) is abandoned after a minute."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    match = _TEMP_NAME.fullmatch(path.name)
    if match and match.group(1) == _host_tag() and not pid_alive(int(match.group(2))):
        return True
    if path.name.endswith(".stale"):
        return age > ASIDE_MAX_AGE_S
    return age > TEMP_MAX_AGE_S
