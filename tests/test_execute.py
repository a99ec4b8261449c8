"""Executors: resume, failure isolation, dependencies, dead workers, claims, kill -9, Slurm via submitit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import test_execute_fakes as fakes

from bench import execute, store
from bench.config import ConfigError
from bench.execute import progress, scheduler
from bench.plan.deps import job_graph
from bench.plan.resolve import make_config
from bench.presets import dependencies, order_with_dependencies

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _fake_env(monkeypatch):
    for name in ("BENCH_FAKE_LOG", "BENCH_FAKE_DELAY", "BENCH_FAKE_FAIL_SEEDS", "BENCH_FAKE_EXIT_SEEDS",
                 "BENCH_FAKE_METHODS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(execute, "POLL_S", 0.05)
    monkeypatch.setattr(scheduler, "HELD_RETRY_S", 0.1)


def _concat(seed: int, modalities=("text", "vision")):
    return make_config("synth-mosi", "smoke", method="concat", modalities=modalities, seed=seed)


def _result_files(runs: Path) -> list[str]:
    return sorted(p.name for p in (runs / "results").iterdir())


def _hidden_files(runs: Path) -> list[Path]:
    return [p for p in runs.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]


def _trained(log: Path) -> list[str]:
    return [line.split()[0] for line in log.read_text().splitlines()] if log.exists() else []


def test_a_failing_job_is_recorded_and_the_rest_finish(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "1")
    jobs = [_concat(s) for s in range(3)]
    summary = execute.run_jobs(job_graph(jobs), tmp_path, job_fn=fakes.fake_job, progress=False)
    assert (summary.ok, summary.failed, summary.skipped, summary.exit_code) == (2, 1, 0, 1)
    status = store.stored_status(tmp_path)
    assert status == {jobs[0].run_id: "ok", jobs[1].run_id: "failed", jobs[2].run_id: "ok"}
    row = store.read_row(tmp_path, jobs[1].run_id)
    assert row["error"].startswith("RuntimeError: planned failure for seed 1")
    assert summary.failures == [(jobs[1].run_id, row["error"])]
    assert list((tmp_path / "claims").iterdir()) == []


def test_rerun_resumes_and_stored_failures_wait_for_retry(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("BENCH_FAKE_LOG", str(log))
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "2")
    jobs = [_concat(s) for s in range(3)]
    execute.run_jobs(job_graph(jobs), tmp_path / "runs", job_fn=fakes.fake_job, progress=False)
    assert len(_trained(log)) == 3
    again = execute.run_jobs(job_graph(jobs), tmp_path / "runs", job_fn=fakes.fake_job, progress=False)
    assert (again.ok, again.skipped, again.stored_failed, again.exit_code) == (0, 2, 1, 1)
    assert again.failures[0][1].startswith("(stored) RuntimeError")
    assert len(_trained(log)) == 3  # nothing retrained
    monkeypatch.delenv("BENCH_FAKE_FAIL_SEEDS")
    retry = execute.run_jobs(job_graph(jobs), tmp_path / "runs", job_fn=fakes.fake_job, progress=False,
                             retry_failed=True)
    assert (retry.ok, retry.skipped, retry.exit_code) == (1, 2, 0)
    assert _trained(log)[-1] == jobs[2].run_id and len(_trained(log)) == 4
    assert store.completed_ids(tmp_path / "runs") == {j.run_id for j in jobs}


def test_dependencies_run_first_and_their_checkpoints_are_passed(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("BENCH_FAKE_LOG", str(log))
    ensemble = make_config("synth-mosi", "smoke", method="ensemble", modalities=("text", "vision"), seed=1)
    summary = execute.run_jobs(job_graph([ensemble]), tmp_path / "runs", job_fn=fakes.fake_job, progress=False)
    needed = [d.run_id for d in dependencies(ensemble)]
    assert summary.total == 3 and summary.ok == 3  # fake_job raises unless deps are exactly these
    assert set(_trained(log)[:2]) == set(needed) and _trained(log)[2] == ensemble.run_id
    assert all(store.has_checkpoint(tmp_path / "runs", rid) for rid in needed)


def test_a_failed_dependency_fails_its_dependents(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "0")
    monkeypatch.setenv("BENCH_FAKE_METHODS", "unimodal")
    jobs = fakes.small_grid(seeds=2)
    summary = execute.run_jobs(job_graph(jobs), tmp_path, job_fn=fakes.fake_job, progress=False)
    ens0 = next(j for j in jobs if j.method == "ensemble" and j.seed == 0)
    row = store.read_row(tmp_path, ens0.run_id)
    failed_dep = {d.run_id for d in dependencies(ens0)}
    assert row["status"] == "failed" and row["error"].startswith("dependency ")
    assert row["error"].split()[1] in failed_dep and row["error"].endswith(" failed")
    # seed 0: 2 unimodal + ensemble fail; seed 1: everything ok; concat never depends on anything
    assert (summary.ok, summary.failed, summary.total) == (5, 3, 8)


def test_duplicate_jobs_train_once(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("BENCH_FAKE_LOG", str(log))
    job = _concat(0)
    summary = execute.run_jobs(job_graph([job, job, _concat(0)]), tmp_path / "runs", job_fn=fakes.fake_job,
                               progress=False)
    assert summary.total == 1 and _trained(log) == [job.run_id]


def test_a_result_for_another_config_is_a_failure(tmp_path):
    job = _concat(0)
    summary = execute.run_jobs(job_graph([job]), tmp_path, job_fn=fakes.wrong_config_job, progress=False)
    assert summary.failed == 1 and _result_files(tmp_path) == [f"{job.run_id}.parquet"]
    assert "another config" in store.read_row(tmp_path, job.run_id)["error"]


def test_ctrl_c_stops_cleanly_and_rerun_resumes(tmp_path, monkeypatch):
    calls = []

    def interrupted_at_seed_2(cfg, deps, device="cpu"):
        calls.append(cfg.seed)
        if cfg.seed == 2 and len(calls) < 4:
            raise KeyboardInterrupt
        return fakes.fake_job(cfg, deps, device)

    jobs = [_concat(s) for s in range(4)]
    with pytest.raises(KeyboardInterrupt):
        execute.run_jobs(job_graph(jobs), tmp_path, job_fn=interrupted_at_seed_2, progress=False)
    assert store.completed_ids(tmp_path) == {jobs[0].run_id, jobs[1].run_id}
    assert list((tmp_path / "claims").iterdir()) == [] and _hidden_files(tmp_path) == []
    summary = execute.run_jobs(job_graph(jobs), tmp_path, job_fn=interrupted_at_seed_2, progress=False)
    assert (summary.ok, summary.skipped, summary.exit_code) == (2, 2, 0)


def test_a_job_claimed_elsewhere_waits_for_that_result(tmp_path, monkeypatch):
    log = tmp_path / "log"
    monkeypatch.setenv("BENCH_FAKE_LOG", str(log))
    runs = tmp_path / "runs"
    held, free = _concat(0), _concat(1)
    other = store.try_claim(runs, held.run_id)  # "another invocation" (a live pid) is training it

    def finish_elsewhere():
        time.sleep(0.5)
        store.save_result(runs, fakes.fake_job(held))
        store.release_claim(other)

    worker = threading.Thread(target=finish_elsewhere)
    worker.start()
    summary = execute.run_jobs(job_graph([held, free]), runs, job_fn=fakes.fake_job, progress=False)
    worker.join()
    assert sorted(_trained(log)) == sorted([held.run_id, free.run_id])  # held: trained by the other only
    assert (summary.ok, summary.skipped, summary.exit_code) == (1, 1, 0)


@pytest.mark.parametrize("executor, options, message", [
    ("inline", {"workers": 3}, "conflicts with --workers 3"),
    ("cluster", {}, "unknown executor 'cluster'; choose from inline, local, slurm"),
    ("local", {"workers": 0}, "--workers must be >= 1"),
    ("local", {"workers": 2, "workers_per_gpu": 0}, "--workers-per-gpu must be >= 1, got 0"),
    ("local", {"workers": "two"}, "--workers must be an integer, got 'two'"),
    ("local", {"partition": "gpu"}, "--partition only applies to --executor slurm"),
    ("local", {"colour": "red"}, "unknown option 'colour' for --executor local; its options: workers, workers_per_gpu"),
])
def test_impossible_executor_settings(tmp_path, executor, options, message):
    with pytest.raises(ConfigError, match=message):
        execute.run_jobs(job_graph([_concat(0)]), tmp_path, executor=executor, options=options,
                         job_fn=fakes.fake_job, progress=False)
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_local_pool_survives_a_dying_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_FAKE_EXIT_SEEDS", "1")
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "2")
    monkeypatch.setenv("BENCH_FAKE_METHODS", "concat")
    jobs = fakes.small_grid(seeds=3)
    summary = execute.run_jobs(job_graph(jobs), tmp_path, executor="local", options={"workers": 2},
                               job_fn=fakes.fake_job, progress=False)
    by_seed = {j.seed: j for j in jobs if j.method == "concat"}
    died = store.read_row(tmp_path, by_seed[1].run_id)
    assert died["error"] == "worker process died (exit code 3) while running this job"
    assert store.read_row(tmp_path, by_seed[2].run_id)["error"].startswith("RuntimeError: planned failure")
    assert (summary.ok, summary.failed, summary.total) == (10, 2, 12)  # 3 concat, 3 ensemble, 6 unimodal
    assert len(_result_files(tmp_path)) == 12 and _hidden_files(tmp_path) == []


def test_plain_progress_prints_one_line_per_trained_job(tmp_path, capsys):
    execute.run_jobs(job_graph([_concat(0), _concat(1)]), tmp_path, job_fn=fakes.fake_job, progress=True)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[")]
    assert len(lines) == 2 and lines[0].startswith("[1/2] ok") and "acc 42.00" in lines[0]


# -- slower end-to-end checks ------------------------------------------------------------------------

def _grid_process(runs: Path, executor: str, workers: int, env: dict[str, str]) -> subprocess.Popen:
    script = ("import sys, test_execute_fakes as f\n"
              "from bench.execute import run_jobs\n"
              "from bench.plan.deps import job_graph\n"
              "w = int(sys.argv[3])\n"
              "s = run_jobs(job_graph(f.small_grid(int(sys.argv[4]))), sys.argv[1], executor=sys.argv[2],"
              " options={'workers': w} if w > 1 else {}, job_fn=f.fake_job, progress=False)\n"
              "sys.exit(s.exit_code)\n")
    full_env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), **env}
    return subprocess.Popen([sys.executable, "-c", script, str(runs), executor, str(workers), "4"],
                            env=full_env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_kill_9_mid_grid_then_rerun_completes_each_run_once(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    proc = _grid_process(runs, "local", 2, {"BENCH_FAKE_DELAY": "0.4", "BENCH_FAKE_LOG": str(tmp_path / "log1")})
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(store.completed_ids(runs)) < 3:
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done_before = store.completed_ids(runs)
    assert 3 <= len(done_before) < 16, "the kill must land mid-grid"
    log = tmp_path / "log2"
    monkeypatch.setenv("BENCH_FAKE_LOG", str(log))
    summary = execute.run_jobs(job_graph(fakes.small_grid(4)), runs, job_fn=fakes.fake_job, progress=False)
    assert summary.exit_code == 0 and summary.skipped == len(done_before) and summary.ok == 16 - len(done_before)
    assert not set(_trained(log)) & done_before  # nothing stored ok was trained again
    assert len(_result_files(runs)) == 16 and store.completed_ids(runs) == {j.run_id for j in
                                                                             order_with_dependencies(
                                                                                 fakes.small_grid(4))}
    assert _hidden_files(runs) == [] and list((runs / "claims").iterdir()) == []


@pytest.mark.slow
def test_two_concurrent_invocations_never_train_a_run_twice(tmp_path):
    runs, log = tmp_path / "runs", tmp_path / "log"
    env = {"BENCH_FAKE_DELAY": "0.15", "BENCH_FAKE_LOG": str(log)}
    procs = [_grid_process(runs, "inline", 1, env) for _ in range(2)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = _trained(log)
    assert len(trained) == 16 and len(set(trained)) == 16
    assert {line.split()[1] for line in log.read_text().splitlines()} == {str(p.pid) for p in procs}
    assert len(_result_files(runs)) == 16


@pytest.mark.slow
def test_local_workers_match_inline_with_the_real_trainer(tmp_path):
    torch = pytest.importorskip("torch")
    jobs = [_concat(0), _concat(1, ("audio", "vision")),
            make_config("synth-mosi", "smoke", method="ensemble", modalities=("text", "vision"), seed=0)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the local workers get cores // workers = 1 thread each on 2 cores
    try:
        inline = execute.run_jobs(job_graph(jobs), tmp_path / "inline", progress=False)
    finally:
        torch.set_num_threads(threads)
    local = execute.run_jobs(job_graph(jobs), tmp_path / "local", executor="local", options={"workers": 2},
                             progress=False)
    assert inline.ok == local.ok == 5
    a, _ = store.read_results(tmp_path / "inline")
    b, _ = store.read_results(tmp_path / "local")
    a, b = a.set_index("run_id").sort_index(), b.set_index("run_id").sort_index()
    assert list(a["metrics_json"]) == list(b["metrics_json"])  # every metric, bit for bit
    ta, _ = store.read_trajectories(tmp_path / "inline")
    tb, _ = store.read_trajectories(tmp_path / "local")
    assert ta.sort_values(list(ta.columns)).reset_index(drop=True).equals(
        tb.sort_values(list(tb.columns)).reset_index(drop=True))


@pytest.mark.slow
def test_slurm_path_through_submitit_local_executor(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "1")
    monkeypatch.setenv("BENCH_FAKE_METHODS", "concat")
    ensemble = make_config("synth-mosi", "smoke", method="ensemble", modalities=("text", "vision"), seed=0)
    jobs = [ensemble, _concat(1)]
    summary = execute.run_jobs(job_graph(jobs), tmp_path / "runs", executor="slurm", job_fn=fakes.fake_job,
                               progress=False, options={"cluster": "local", "folder": tmp_path / "slurm",
                                                        "poll_s": 0.2, "time": 5, "partition": "ignored-by-local"})
    assert (summary.ok, summary.failed, summary.total) == (3, 1, 4)
    assert store.read_row(tmp_path / "runs", ensemble.run_id)["status"] == "ok"  # its deps went first
    assert "planned failure" in store.read_row(tmp_path / "runs", _concat(1).run_id)["error"]
    assert list((tmp_path / "runs" / "claims").iterdir()) == []


def test_live_display_on_a_terminal_shows_counts_and_job_lines(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(progress.sys.stdout, "isatty", lambda: True)
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "1")
    summary = execute.run_jobs(job_graph([_concat(0), _concat(1)]), tmp_path, job_fn=fakes.fake_job, progress=True)
    out = capsys.readouterr().out
    assert summary.ok == 1 and summary.failed == 1
    assert "ok     " in out and "failed " in out and "planned failure" in out
    assert "done 2/2" in out and "ok 1" in out and "failed 1" in out


def test_slurm_without_slurm_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(execute.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="no Slurm here"):
        execute.run_jobs(job_graph([_concat(0)]), tmp_path, executor="slurm", job_fn=fakes.fake_job, progress=False)
