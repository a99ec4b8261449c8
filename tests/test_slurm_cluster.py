"""`--executor slurm` on a real Slurm cluster (the single node that `.ci/slurm.sh start` brings up in CI).

Skipped, with the reason, where no Slurm node answers idle. Through the CLI, in subprocesses (as a user runs
it; the jobs inherit PYTHONPATH from sbatch's exported environment): a grid with dependencies (two unimodal
runs, then the ensemble that needs them) gives every run ok and the same test metrics as `--executor inline`;
a plain rerun submits nothing; a job cancelled with scancel while it runs is stored as a transient failure
and a plain rerun retrains it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import store

ROOT = Path(__file__).resolve().parent.parent
GRID = ["grid", "table-6.10", "--profile", "smoke", "--dataset", "mosi", "--source", "synth", "--seeds", "0",
        "--no-progress"]
ENSEMBLE = ["--method", "ensemble", "--modalities", "audio+vision"]  # 3 runs: audio, vision, then the ensemble
SINGLE = ["--method", "concat", "--modalities", "audio+vision"]  # 1 run, no dependency
SLURM = ["--executor", "slurm", "--exec-opt", "poll_s=0.5", "--exec-opt", "time=5"]
COMMAND_TIMEOUT_S = 240  # one bench command; the whole test takes about a minute on 2 cores


def _node_state() -> str:
    """The Slurm node states `sinfo` reports ("" when no Slurm controller answers)."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return ""
    try:
        done = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


NODE_STATE = _node_state()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif("idle" not in NODE_STATE.split(),
                       reason=f"no idle Slurm node (sinfo: {NODE_STATE or 'no answer'}); "
                              "CI starts one with .ci/slurm.sh start"),
]


def bench(runs_dir: Path, *args: str, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """`bench ARGS --runs-dir RUNS_DIR` in a subprocess; its output is printed for the CI log."""
    done = subprocess.run(_command(runs_dir, *args), capture_output=True, text=True, timeout=timeout,
                          env=_env(), cwd=ROOT)
    print(done.stdout, done.stderr)
    return done


def _command(runs_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", "from bench.cli import main; main()", *args, "--runs-dir", str(runs_dir)]


def _env() -> dict[str, str]:
    # the jobs run `python -m submitit...` on the node: they must import this checkout's bench too
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def slurm_job_count() -> int:
    """Jobs (array tasks counted one by one) that Slurm's accounting knows of."""
    done = subprocess.run(["sacct", "-n", "-X", "-a", "-P", "-o", "JobID", "-S", "now-1days"],
                          capture_output=True, text=True, timeout=30, check=True)
    return len(done.stdout.split())


def metrics_by_run(runs_dir: Path) -> pd.DataFrame:
    """Every stored row's status and test_ metric columns, indexed by run id."""
    results, _ = store.read_results(runs_dir)
    columns = [c for c in results.columns if c.startswith("test_")]
    assert "test_acc" in columns and results["test_acc"].notna().all()
    return results.set_index("run_id")[["status", *columns]].sort_index()


def wait_for_job_count(count: int, limit_s: float = 30) -> int:
    """slurm_job_count() once it reaches COUNT (slurmctld reports to slurmdbd asynchronously), or after LIMIT_S."""
    end = time.monotonic() + limit_s
    while (seen := slurm_job_count()) < count and time.monotonic() < end:
        time.sleep(0.5)
    return seen


def wait_until_running(job_ids_before: set[str], limit_s: float = 60) -> str:
    """The id of a job named `bench` that was not there before and is now RUNNING (bounded wait)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        done = subprocess.run(["squeue", "-h", "-n", "bench", "-t", "RUNNING", "-o", "%i"], capture_output=True,
                              text=True, timeout=15)
        running = [job for job in done.stdout.split() if job not in job_ids_before]
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError(f"no new bench job RUNNING within {limit_s}s")


def queued_jobs() -> set[str]:
    done = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=15)
    return set(done.stdout.split())


def test_grid_with_dependencies_rerun_and_cancel_on_a_real_cluster(tmp_path: Path) -> None:
    inline, cluster = tmp_path / "inline", tmp_path / "slurm"
    assert bench(inline, *GRID, *ENSEMBLE, "--executor", "inline").returncode == 0
    expected = metrics_by_run(inline)
    assert len(expected) == 3 and set(expected["status"]) == {"ok"}

    # a) through Slurm, in two waves (the unimodal runs, then the ensemble): the same numbers, bit for bit
    before = slurm_job_count()
    done = bench(cluster, *GRID, *ENSEMBLE, *SLURM)
    assert done.returncode == 0, done.stderr
    assert "3 runs: 3 ok, 0 failed" in done.stdout
    assert wait_for_job_count(before + 3) == before + 3
    pd.testing.assert_frame_equal(metrics_by_run(cluster), expected, check_exact=True)  # NaN equals NaN here
    results, _ = store.read_results(cluster)
    jobs = dict(zip(results["method"] + " " + results["modalities"].astype(str), results["slurm_job_id"], strict=True))
    # each row records the job that trained it: the two unimodal runs as one array, the ensemble after it
    first_wave = {job for name, job in jobs.items() if name.startswith("unimodal")}
    (array,) = {job.split("_")[0] for job in first_wave}
    assert first_wave == {f"{array}_0", f"{array}_1"}
    (ensemble,) = [job for name, job in jobs.items() if name.startswith("ensemble")]
    assert int(ensemble) > int(array)

    # b) a plain rerun submits nothing: no new job in Slurm's accounting nor in submitit's folder
    before, folders = slurm_job_count(), sorted(os.listdir(cluster / "slurm"))
    done = bench(cluster, *GRID, *ENSEMBLE, *SLURM)
    assert done.returncode == 0 and "3 already stored" in done.stdout, done.stdout
    assert (slurm_job_count(), sorted(os.listdir(cluster / "slurm"))) == (before, folders)

    # c) a job cancelled while it runs (held RUNNING by a setup line that sleeps) is a transient failure ...
    existing = queued_jobs()
    grid = subprocess.Popen(_command(cluster, *GRID, *SINGLE, *SLURM, "--exec-opt", "setup=sleep 120"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(), cwd=ROOT)
    try:
        job = wait_until_running(existing)
        subprocess.run(["scancel", job], check=True, timeout=15)
        out, _ = grid.communicate(timeout=COMMAND_TIMEOUT_S)
    finally:
        if grid.poll() is None:
            grid.kill()
    print(out)
    assert "1 runs: 0 ok, 1 failed" in out or "1 run: 0 ok, 1 failed" in out, out
    results, _ = store.read_results(cluster)
    cancelled = results[results["status"] != "ok"]
    assert len(cancelled) == 1
    row = cancelled.iloc[0]
    assert row["error_kind"] == store.TRANSIENT and "CANCELLED" in row["error"], row["error"]
    assert row["slurm_job_id"] == job

    # ... that a plain rerun (no --retry-failed) trains again, this time to the end
    done = bench(cluster, *GRID, *SINGLE, *SLURM)
    assert done.returncode == 0 and "0 already stored" in done.stdout, done.stdout
    assert store.read_row(cluster, row["run_id"])["status"] == "ok"
