"""Faults inside a run or its storage: numerical failures, out of memory, failed writes, dying workers.

Each fault ends that run as `failed` with a clear reason; the rest of the grid goes on.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import test_execute_fakes as fakes
import test_reliability_fakes as rel
import torch

from bench import execute, store
from bench.config import RunConfig
from bench.methods import REGISTRY
from bench.plan.deps import job_graph
from bench.plan.resolve import make_config

torch.set_num_threads(1)

# method -> the reason in "epoch 1: <reason>"
NUMERICAL_FAULTS = {
    rel.NaNLoss.name: "non-finite loss (nan)",
    rel.InfLoss.name: "non-finite loss (inf)",
    rel.ExplodingGradient.name: "non-finite gradient (exploding)",
    rel.NaNWeights.name: "non-finite validation loss",
    rel.CudaOutOfMemory.name: "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB",
}


@pytest.fixture(autouse=True)
def _quiet_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BENCH_REL_LOG", "BENCH_REL_DELAY", "BENCH_REL_EXIT_SEEDS", "BENCH_REL_KILL_SEEDS",
                 "BENCH_FAKE_LOG", "BENCH_FAKE_DELAY", "BENCH_FAKE_FAIL_SEEDS", "BENCH_FAKE_EXIT_SEEDS",
                 "BENCH_FAKE_METHODS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(execute, "POLL_S", 0.05)


@pytest.fixture
def faulty_methods() -> Iterator[list[str]]:
    """The failing test methods, registered for one test and removed afterwards."""
    added = rel.register_faulty_methods()
    yield added
    for name in added:
        REGISTRY.pop(name, None)


def _cfg(method: str, seed: int = 0) -> RunConfig:
    return make_config("synth-mosi", "smoke", method=method, modalities=("text", "vision"), max_epochs=3, seed=seed)


def _files(runs: Path, run_id: str) -> list[Path]:
    """Every file of one run, in every store folder."""
    return [p for p in runs.rglob(f"{run_id}*") if p.is_file()]


def _leftovers(runs: Path) -> list[Path]:
    """Temp files and claims: nothing of the kind may stay after an invocation."""
    hidden = [p for p in runs.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    return hidden + sorted((runs / "claims").glob("*")) if (runs / "claims").is_dir() else hidden


# -- numerical faults and out of memory ------------------------------------------------------------------

@pytest.mark.parametrize("method", [m for m in NUMERICAL_FAULTS if m != rel.NaNLoss.name])
def test_a_numerical_fault_ends_the_run_as_failed_with_epoch_and_reason(faulty_methods, method: str) -> None:
    result = rel.tiny_train_job(_cfg(method))
    assert result.status == "failed"
    assert result.error.startswith(f"epoch 1: {NUMERICAL_FAULTS[method]}"), result.error
    assert result.state_dict is None and result.metrics == {}
    # What was logged before the fault is kept: epoch 0, and epoch 1's training when validation fails.
    last_logged = 1 if method == rel.NaNWeights.name else 0
    assert {row["epoch"] for row in result.trajectory} == set(range(last_logged + 1))


def test_faults_through_the_executor_are_recorded_and_the_grid_goes_on(faulty_methods, tmp_path: Path) -> None:
    faulty = [_cfg(method) for method in NUMERICAL_FAULTS]
    healthy = _cfg("concat")
    summary = execute.run_jobs(job_graph([*faulty, healthy]), tmp_path, job_fn=rel.tiny_train_job, progress=False)
    assert (summary.ok, summary.failed, summary.exit_code) == (1, len(faulty), 1)
    rows, problems = store.read_results(tmp_path)
    assert problems == [] and len(rows) == len(faulty) + 1
    by_method = rows.set_index("method")
    assert by_method.loc["concat", "status"] == "ok"
    for method, reason in NUMERICAL_FAULTS.items():
        assert by_method.loc[method, "status"] == "failed"
        assert by_method.loc[method, "error"].startswith(f"epoch 1: {reason}")
    assert [store.has_checkpoint(tmp_path, c.run_id) for c in (*faulty, healthy)] == [False] * len(faulty) + [True]
    assert dict(summary.failures) == {c.run_id: by_method.loc[c.method, "error"] for c in faulty}


@pytest.mark.slow
def test_numerical_faults_in_local_workers_are_recorded(faulty_methods, tmp_path: Path) -> None:
    jobs = [_cfg(rel.CudaOutOfMemory.name), _cfg("concat"), _cfg(rel.ExplodingGradient.name)]
    summary = execute.run_jobs(job_graph(jobs), tmp_path, executor="local", options={"workers": 2},
                               job_fn=rel.tiny_train_job, progress=False)
    assert (summary.ok, summary.failed) == (1, 2)
    errors = {rid: store.read_row(tmp_path, rid)["error"] for rid in (jobs[0].run_id, jobs[2].run_id)}
    assert errors[jobs[0].run_id].startswith("epoch 1: out of memory (CUDA out of memory.")
    assert errors[jobs[2].run_id].startswith("epoch 1: non-finite gradient (exploding)")
    assert store.read_status(tmp_path, jobs[1].run_id) == "ok" and _leftovers(tmp_path) == []


# -- failed writes ----------------------------------------------------------------------------------------

def _failing_writes(monkeypatch: pytest.MonkeyPatch, folder: str, run_id: str) -> list[Path]:
    """Make store writes into `folder` for `run_id` fail with ENOSPC; returns the list of refused paths."""
    refused: list[Path] = []
    real_write = store.atomic.atomic_write

    def write(path: Path, data: bytes) -> None:
        if path.parent.name == folder and path.name.startswith(run_id):
            refused.append(path)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, data)

    monkeypatch.setattr(store.atomic, "atomic_write", write)
    return refused


@pytest.mark.parametrize("folder", ["trajectories", "checkpoints", "results"])
def test_a_failed_write_stores_nothing_of_that_run_and_is_reported(tmp_path: Path, monkeypatch, folder: str) -> None:
    jobs = [make_config("synth-mosi", "smoke", method="concat", seed=s) for s in range(3)]
    victim = jobs[1].run_id
    healthy_write = store.atomic.atomic_write
    refused = _failing_writes(monkeypatch, folder, victim)
    summary = execute.run_jobs(job_graph(jobs), tmp_path, job_fn=fakes.fake_job, progress=False)
    assert len(refused) == 1 and (summary.ok, summary.failed, summary.exit_code) == (2, 1, 1)
    (failed_id, error), = summary.failures
    assert failed_id == victim and error.startswith("could not store the result, nothing stored (rerun to retry): "
                                                    "OSError: [Errno 28] No space left on device")
    # No partial result: none of the victim's files (the earlier ones were rolled back), no temp file, no claim.
    assert _files(tmp_path, victim) == [] and _leftovers(tmp_path) == []
    assert store.completed_ids(tmp_path) == {jobs[0].run_id, jobs[2].run_id}
    # The disk is fine again: a rerun trains exactly the lost run.
    monkeypatch.setattr(store.atomic, "atomic_write", healthy_write)
    log = tmp_path / "log"
    monkeypatch.setenv("BENCH_FAKE_LOG", str(log))
    again = execute.run_jobs(job_graph(jobs), tmp_path, job_fn=fakes.fake_job, progress=False)
    assert (again.ok, again.skipped, again.exit_code) == (1, 2, 0)
    assert log.read_text().split()[0] == victim and len(log.read_text().splitlines()) == 1


@pytest.mark.slow
def test_a_broken_parquet_writer_in_the_parent_fails_every_run_without_stopping_the_pool(tmp_path: Path,
                                                                                          monkeypatch) -> None:
    def broken_writer(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store.pq, "write_table", broken_writer)
    jobs = [make_config("synth-mosi", "smoke", method="concat", seed=s) for s in range(4)]
    summary = execute.run_jobs(job_graph(jobs), tmp_path, executor="local", options={"workers": 2},
                               job_fn=fakes.fake_job, progress=False)
    assert (summary.total, summary.failed, summary.exit_code) == (4, 4, 1)
    assert all("could not store the result" in error and "Input/output error" in error
               for _, error in summary.failures)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # not even a checkpoint or a temp file


# -- dying workers --------------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_worker_replaced_after_each_of_several_abrupt_deaths(tmp_path: Path, monkeypatch) -> None:
    """One worker: the grid can only finish if every dead worker is replaced (exit code and SIGKILL)."""
    log = tmp_path / "log"
    monkeypatch.setenv("BENCH_REL_LOG", str(log))
    monkeypatch.setenv("BENCH_REL_EXIT_SEEDS", "1,4")
    monkeypatch.setenv("BENCH_REL_KILL_SEEDS", "2")
    jobs = [make_config("synth-mosi", "smoke", method="concat", seed=s) for s in range(6)]
    runs = tmp_path / "runs"
    summary = execute.run_jobs(job_graph(jobs), runs, executor="local", options={"workers": 1},
                               job_fn=rel.sleepy_job, progress=False)
    assert (summary.ok, summary.failed, summary.total) == (3, 3, 6)
    errors = {cfg.seed: store.read_row(runs, cfg.run_id)["error"] for cfg in jobs}
    died = "worker process died (exit code {}) while running this job"
    assert errors[1] == errors[4] == died.format(7)
    assert errors[2] == died.format(-9) + " (killed by SIGKILL)"
    assert [pd.isna(errors[s]) for s in (0, 3, 5)] == [True] * 3
    workers = [line.split()[1] for line in log.read_text().splitlines()]
    assert len(workers) == 6 and len(set(workers)) == 4  # the first worker and its 3 replacements
    assert _leftovers(runs) == []
