"""Where a run's files live under the runs directory: folder names and paths (no I/O beyond listing)."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = "results"
TRAJECTORIES = "trajectories"
PREDICTIONS = "predictions"
CHECKPOINTS = "checkpoints"
EVALUATIONS = "evaluations"
CLAIMS = "claims"
# The folders whose files are written atomically (temp name, then rename): what remove_leftovers sweeps.
FOLDERS = (RESULTS, TRAJECTORIES, CHECKPOINTS, PREDICTIONS, EVALUATIONS, CLAIMS)

PathLike = str | os.PathLike[str]


def run_file(runs_dir: PathLike, folder: str, run_id: str, suffix: str) -> Path:
    """`<runs_dir>/<folder>/<run_id><suffix>`: where each of a run's files lives."""
    return Path(runs_dir) / folder / f"{run_id}{suffix}"


def result_path(runs_dir: PathLike, run_id: str) -> Path:
    """The result row file of a run."""
    return run_file(runs_dir, RESULTS, run_id, ".parquet")


def trajectory_path(runs_dir: PathLike, run_id: str) -> Path:
    """The trajectory file of a run."""
    return run_file(runs_dir, TRAJECTORIES, run_id, ".parquet")


def prediction_path(runs_dir: PathLike, run_id: str) -> Path:
    """The per-sample predictions file of a run."""
    return run_file(runs_dir, PREDICTIONS, run_id, ".parquet")


def evaluation_path(runs_dir: PathLike, run_id: str) -> Path:
    """The test-time evaluations file of a run."""
    return run_file(runs_dir, EVALUATIONS, run_id, ".parquet")


def checkpoint_path(runs_dir: PathLike, run_id: str) -> Path:
    """The best-checkpoint file of a run."""
    return run_file(runs_dir, CHECKPOINTS, run_id, ".pt")


def claim_path(runs_dir: PathLike, run_id: str) -> Path:
    """The claim file of a run."""
    return run_file(runs_dir, CLAIMS, run_id, ".claim")


def is_temp_name(name: str) -> bool:
    """Temp files (and anything hidden) are never results."""
    return name.startswith(".") or name.endswith(".tmp")


def parquet_files(folder: Path) -> list[Path]:
    """Parquet files of a folder, temp files excluded, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not is_temp_name(p.name))
