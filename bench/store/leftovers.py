"""Cleanup at executor start: what killed processes left behind (temp files of dead writers, stale claims)."""

from __future__ import annotations

from pathlib import Path

from bench.store.atomic import abandoned_temp
from bench.store.claims import DEFAULT_CLAIM_TTL_S, break_if_stale
from bench.store.layout import CLAIMS, FOLDERS, PathLike


def remove_leftovers(runs_dir: PathLike, claim_ttl_s: float | None = None) -> list[Path]:
    """Delete what killed processes left behind: temp files of dead writers, stale claims. Returns them.

    A live writer's temp file and a live process's claim stay."""
    runs = Path(runs_dir)
    ttl_s = DEFAULT_CLAIM_TTL_S if claim_ttl_s is None else claim_ttl_s
    removed: list[Path] = []
    for folder in FOLDERS:
        if not (runs / folder).is_dir():
            continue
        for path in sorted((runs / folder).iterdir()):
            if path.name.startswith("."):
                if path.is_file() and abandoned_temp(path):
                    path.unlink(missing_ok=True)
                    removed.append(path)
            elif folder == CLAIMS and path.suffix == ".claim" and break_if_stale(path, ttl_s):
                removed.append(path)
    return removed
