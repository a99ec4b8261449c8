"""Transient failures retried by a plain rerun (D3), rows whose config does not hash to their id left out
(D5), a dependency that lost its checkpoint retrained (D6)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import test_execute_fakes as fakes
import test_reliability_fakes as rel
from clitools import bench as _bench

from bench import execute, store
from bench.config import RunConfig
from bench.plan.deps import job_graph
from bench.plan.resolve import make_config


def _cfg(method: str = "concat", seed: int = 0) -> RunConfig:
    return make_config("synth-mosi", "smoke", method=method, seed=seed)


def _run(configs: list[RunConfig], runs: Path, job_fn=fakes.fake_job, **kw) -> execute.Summary:
    return execute.run_jobs(job_graph(configs), runs, job_fn=job_fn, progress=False, **kw)


def _transient_then_fake(cfg: RunConfig, deps=None, device: str = "cpu"):
    """Seed 1 ends as a worker death would be recorded; everything else trains."""
    if cfg.seed == 1:
        return store.failed_record(cfg, "worker process died (exit code -9)", error_kind=store.TRANSIENT)
    return fakes.fake_job(cfg, deps, device)


def _deterministic_fail(cfg: RunConfig, deps=None, device: str = "cpu"):
    if cfg.seed == 2:
        raise RuntimeError("epoch 0: non-finite loss (nan) at step 0")
    return fakes.fake_job(cfg, deps, device)


# -- D3: transient failures ---------------------------------------------------------------------------

def test_a_transient_failure_is_retrained_by_a_plain_rerun(tmp_path: Path) -> None:
    configs = [_cfg(seed=s) for s in range(3)]
    first = _run(configs, tmp_path, job_fn=_transient_then_fake)
    assert (first.ok, first.failed) == (2, 1)
    row = store.read_row(tmp_path, configs[1].run_id)
    assert (row["status"], row["error_kind"]) == ("failed", "transient")
    again = _run(configs, tmp_path)  # no --retry-failed
    assert (again.ok, again.skipped, again.stored_failed, again.exit_code) == (1, 2, 0, 0)
    assert store.read_state(tmp_path, configs[1].run_id) == ("ok", None)


def test_a_deterministic_failure_still_needs_retry_failed(tmp_path: Path) -> None:
    configs = [_cfg(seed=s) for s in range(3)]
    _run(configs, tmp_path, job_fn=_deterministic_fail)
    assert store.read_state(tmp_path, configs[2].run_id) == ("failed", None)
    again = _run(configs, tmp_path)
    assert (again.ok, again.skipped, again.stored_failed) == (0, 2, 1)
    retried = _run(configs, tmp_path, retry_failed=True)
    assert (retried.ok, retried.skipped) == (1, 2)


def test_a_dependant_of_a_transient_failure_is_retried_too(tmp_path: Path) -> None:
    ensemble = _cfg("ensemble", seed=1)
    first = _run([ensemble], tmp_path, job_fn=_transient_then_fake)
    assert first.failed == 3  # both unimodal runs died, so the ensemble's dependency failed
    assert store.read_state(tmp_path, ensemble.run_id) == ("failed", "dependency")
    again = _run([ensemble], tmp_path)
    assert (again.ok, again.failed, again.exit_code) == (3, 0, 0)


def test_a_dependant_of_a_deterministic_failure_waits_for_retry_failed(tmp_path: Path) -> None:
    ensemble = _cfg("ensemble", seed=2)
    _run([ensemble], tmp_path, job_fn=_deterministic_fail)
    again = _run([ensemble], tmp_path)
    assert (again.ok, again.failed, again.stored_failed) == (0, 0, 3)


@pytest.mark.slow
def test_a_worker_killed_by_sigkill_is_retrained_by_a_plain_rerun(tmp_path: Path, monkeypatch) -> None:
    configs = [_cfg(seed=s) for s in range(3)]
    monkeypatch.setenv("BENCH_REL_KILL_SEEDS", "1")
    first = _run(configs, tmp_path, job_fn=rel.sleepy_job, executor="local", options={"workers": 1})
    assert (first.ok, first.failed) == (2, 1)
    row = store.read_row(tmp_path, configs[1].run_id)
    assert "killed by SIGKILL" in row["error"] and row["error_kind"] == "transient"
    monkeypatch.delenv("BENCH_REL_KILL_SEEDS")
    again = _run(configs, tmp_path, job_fn=rel.sleepy_job, executor="local", options={"workers": 1})
    assert (again.ok, again.skipped, again.exit_code) == (1, 2, 0)


def test_error_kind_is_a_column_null_for_ok_rows(tmp_path: Path) -> None:
    configs = [_cfg(seed=s) for s in range(2)]
    _run(configs, tmp_path, job_fn=_transient_then_fake)
    frame = pd.read_parquet(tmp_path / "results").set_index("seed")
    assert pd.isna(frame.loc[0, "error_kind"]) and frame.loc[1, "error_kind"] == "transient"


# -- D5: a row whose stored config does not hash to its run id --------------------------------------------

def _forge(runs: Path, source: RunConfig, target: RunConfig) -> Path:
    """Copy source's result file under target's id and set its run_id column (the findings' recipe)."""
    frame = pq.read_table(store.result_path(runs, source.run_id)).to_pandas()
    frame["run_id"] = target.run_id
    path = store.result_path(runs, target.run_id)
    frame.to_parquet(path, index=False)
    return path


def test_a_copied_row_is_left_out_with_one_line(tmp_path: Path) -> None:
    ogm, concat = _cfg("ogm", 0), _cfg("concat", 1)
    _run([ogm], tmp_path)
    path = _forge(tmp_path, ogm, concat)
    results, problems = store.read_results(tmp_path)
    assert list(results["run_id"]) == [ogm.run_id]
    assert len(problems) == 1 and str(path) in problems[0] and f"hashes to run id {ogm.run_id}" in problems[0]
    assert store.read_status(tmp_path, concat.run_id) is None
    assert store.stored_status(tmp_path) == {ogm.run_id: "ok"}
    with pytest.raises(ValueError, match="hashes to run id"):
        store.read_row(tmp_path, concat.run_id)


def test_a_copied_row_is_retrained_not_skipped(tmp_path: Path) -> None:
    ogm, concat = _cfg("ogm", 0), _cfg("concat", 1)
    _run([ogm], tmp_path)
    _forge(tmp_path, ogm, concat)
    summary = _run([concat], tmp_path)
    assert (summary.ok, summary.skipped) == (1, 0)
    assert store.read_row(tmp_path, concat.run_id)["method"] == "concat"


def test_rerun_refuses_a_copied_row(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)
    ogm, concat = _cfg("ogm", 0), _cfg("concat", 1)
    _run([ogm], tmp_path)
    _forge(tmp_path, ogm, concat)
    code = _bench("rerun", concat.run_id, "--runs-dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "hashes to run id" in err


# -- D6: an ok dependency without its checkpoint ---------------------------------------------------------

def test_a_dependency_without_its_checkpoint_is_retrained(tmp_path: Path) -> None:
    ensemble = _cfg("ensemble", 0)
    assert _run([ensemble], tmp_path).ok == 3
    graph = job_graph([ensemble])
    unimodal = graph[0].config.run_id
    store.checkpoint_path(tmp_path, unimodal).unlink()
    store.result_path(tmp_path, ensemble.run_id).unlink()
    again = _run([ensemble], tmp_path)
    assert (again.ok, again.skipped, again.failed) == (2, 1, 0)  # the unimodal run again, then the ensemble
    assert store.has_checkpoint(tmp_path, unimodal)


def test_a_stored_missing_checkpoint_failure_is_repaired_by_a_plain_rerun(tmp_path: Path) -> None:
    ensemble = _cfg("ensemble", 0)
    _run([ensemble], tmp_path)
    unimodal = job_graph([ensemble])[0].config.run_id
    store.checkpoint_path(tmp_path, unimodal).unlink()
    store.result_path(tmp_path, ensemble.run_id).unlink()
    # the old behaviour's outcome, as stored by a worker that found no checkpoint
    shutil.rmtree(tmp_path / "claims", ignore_errors=True)
    record = store.failed_record(ensemble, "dependency checkpoint unavailable: FileNotFoundError",
                                 error_kind=store.DEPENDENCY)
    store.save_result(tmp_path, record)
    again = _run([ensemble], tmp_path)
    assert (again.ok, again.failed, again.exit_code) == (2, 0, 0)
    assert store.read_state(tmp_path, ensemble.run_id) == ("ok", None)


# -- D12: a worker whose parent died while it was starting trains nothing -----------------------------------

def test_a_worker_started_for_a_dead_parent_trains_nothing(tmp_path: Path, monkeypatch) -> None:
    import multiprocessing as mp

    from bench.execute.backends.local import _worker_main

    log = tmp_path / "log"
    monkeypatch.setenv("BENCH_FAKE_LOG", str(log))
    ctx = mp.get_context("spawn")
    parent_end, child_end = ctx.Pipe()
    parent_end.send((_cfg(), ()))  # a job already waiting in the pipe, as the dead parent left it
    dead_parent = ctx.Process(target=int)
    dead_parent.start()
    dead_parent.join()
    worker = ctx.Process(target=_worker_main, args=(child_end, fakes.fake_job, str(tmp_path), "cpu", 1, (),
                                                    dead_parent.pid))
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == 0 and not log.exists()
    assert not parent_end.poll()  # no result was sent back


def test_a_missing_trajectory_is_reported_not_silently_left_out(tmp_path: Path) -> None:
    configs = [_cfg(seed=s) for s in range(2)]
    _run(configs, tmp_path)
    store.trajectory_path(tmp_path, configs[1].run_id).unlink()
    traj, problems = store.read_trajectories(tmp_path, [c.run_id for c in configs])
    assert set(traj["run_id"]) == {configs[0].run_id}
    assert len(problems) == 1 and configs[1].run_id in problems[0] and "missing" in problems[0]
