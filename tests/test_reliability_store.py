"""The store under abuse: repeated kill -9 mid-grid, two `bench grid` at once, corrupt and foreign files."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import test_execute_fakes as fakes
import test_reliability_fakes as rel
from clitools import bench as _bench

from bench import execute, store
from bench.plan.deps import job_graph
from bench.presets import order_with_dependencies

TESTS_DIR = Path(__file__).resolve().parent
KILLS = 10
KILL_SEEDS = 10  # small_grid: 4 runs per seed (concat, ensemble and its two unimodal runs)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    for name in ("BENCH_REL_LOG", "BENCH_REL_DELAY", "BENCH_REL_EXIT_SEEDS", "BENCH_REL_KILL_SEEDS",
                 "BENCH_FAKE_LOG", "BENCH_FAKE_DELAY", "BENCH_FAKE_FAIL_SEEDS", "BENCH_FAKE_EXIT_SEEDS",
                 "BENCH_FAKE_METHODS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(execute, "POLL_S", 0.05)


def _starts(log: Path) -> list[tuple[str, str, str]]:
    """(run_id, worker pid, invocation pid) per logged training start."""
    return [tuple(line.split()) for line in log.read_text().splitlines()] if log.exists() else []


def _leftovers(runs: Path) -> list[Path]:
    """Temp files, hidden files and claims: none may remain once an invocation has finished cleanly."""
    return [p for p in runs.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")
            or p.parent.name == "claims"]


def _assert_store_complete(runs: Path, run_ids: set[str]) -> None:
    """Exactly one readable ok result per run, with its trajectory and checkpoint; nothing else."""
    rows, problems = store.read_results(runs)
    assert problems == [] and sorted(rows["run_id"]) == sorted(run_ids)
    assert set(rows["status"]) == {"ok"}
    assert sorted(p.stem for p in (runs / "results").iterdir()) == sorted(run_ids)
    trajectories, problems = store.read_trajectories(runs)
    assert problems == [] and set(trajectories["run_id"]) == run_ids
    assert all(store.load_checkpoint(runs, rid) for rid in run_ids)
    assert _leftovers(runs) == []


def _python(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen:
    """A Python subprocess in its own process group (so kill -9 reaches its workers too)."""
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]),
                **env}
    return subprocess.Popen([sys.executable, "-c", script, *args], env=full_env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


# -- kill -9, again and again ------------------------------------------------------------------------------

GRID_SCRIPT = """
import sys
import test_execute_fakes as fakes
import test_reliability_fakes as rel
from bench import execute
from bench.plan.deps import job_graph
execute.POLL_S = 0.05
summary = execute.run_jobs(job_graph(fakes.small_grid(int(sys.argv[2]))), sys.argv[1], executor="local",
                           options={"workers": 2}, job_fn=rel.sleepy_job, progress=False)
sys.exit(summary.exit_code)
"""


def _kill_mid_grid(runs: Path, log: Path, rng: random.Random, after_a_result: bool = False) -> tuple[int, bool]:
    """Start the grid, wait for a training start of this invocation (and, with `after_a_result`, for one more
    stored run), SIGKILL its whole process group at a random moment after it. Returns (the invocation's pid,
    whether it was still running when killed)."""
    seen, stored = len(_starts(log)), len(store.completed_ids(runs))
    proc = _python(GRID_SCRIPT, str(runs), str(KILL_SEEDS),
                   env={"BENCH_REL_LOG": str(log), "BENCH_REL_DELAY": "0.1,0.3"})
    deadline = time.monotonic() + 30
    while proc.poll() is None and len(_starts(log)) == seen and time.monotonic() < deadline:
        time.sleep(0.01)
    # On a loaded machine a kill 0-0.5 s after the first start can land before any run is stored, every
    # time; one invocation that waits for a stored run keeps "the kills land mid-grid" true without luck.
    while after_a_result and proc.poll() is None and len(store.completed_ids(runs)) == stored \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.5))
    alive = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()
    return proc.pid, alive


@pytest.mark.slow
def test_repeated_kill_9_then_a_clean_rerun_trains_every_run_once_and_leaves_no_debris(tmp_path: Path,
                                                                                        monkeypatch) -> None:
    runs, log = tmp_path / "runs", tmp_path / "starts.log"
    jobs = fakes.small_grid(KILL_SEEDS)
    all_ids = {cfg.run_id for cfg in order_with_dependencies(jobs)}
    rng = random.Random(20250707)
    kills, done_before = 0, {}  # invocation pid -> ok runs stored before it started
    while kills < KILLS:
        before = store.completed_ids(runs)
        pid, was_running = _kill_mid_grid(runs, log, rng, after_a_result=kills == 0)
        done_before[pid] = before
        assert was_running, "the grid finished before the kill: give it more work"
        kills += 1
    stored_after_kills = store.completed_ids(runs)
    assert 0 < len(stored_after_kills) < len(all_ids), "the kills must land mid-grid"
    # The final clean rerun, in this process.
    monkeypatch.setenv("BENCH_REL_LOG", str(log))
    summary = execute.run_jobs(job_graph(jobs), runs, job_fn=rel.sleepy_job, progress=False)
    done_before[os.getpid()] = stored_after_kills
    assert summary.exit_code == 0 and summary.skipped == len(stored_after_kills)
    assert summary.ok == len(all_ids) - len(stored_after_kills)
    starts = _starts(log)
    by_invocation: dict[int, list[str]] = {}
    for run_id, worker, invocation in starts:
        # Inline (the final rerun) the worker is this process; in the pool its parent is the invocation.
        by_invocation.setdefault(int(worker) if int(worker) == os.getpid() else int(invocation), []).append(run_id)
    assert set(by_invocation) <= set(done_before)
    for pid, started in by_invocation.items():
        assert len(started) == len(set(started)), "a run was trained twice in one invocation"
        assert not set(started) & done_before[pid], "a run was trained again after it had been stored ok"
    _assert_store_complete(runs, all_ids)


# -- two `bench grid` at once --------------------------------------------------------------------------------

BENCH_SCRIPT = """
import sys
import test_reliability_fakes as rel
from bench import cli, execute
from bench.execute import scheduler
execute.default_job_fn = lambda: rel.sleepy_job
execute.POLL_S = 0.05
scheduler.HELD_RETRY_S = 0.1
cli.main(sys.argv[1:])
"""


@pytest.mark.slow
def test_two_bench_grid_invocations_at_once_share_the_work_without_duplicates(tmp_path: Path) -> None:
    runs, log = tmp_path / "runs", tmp_path / "starts.log"
    args = ["grid", "table-6.10", "--profile", "smoke", "--dataset", "mosi", "--method", "concat,ensemble",
            "--modalities", "text+vision", "--seeds", "0,1,2,3,4,5", "--runs-dir", str(runs), "--executor",
            "local", "--workers", "2", "--no-progress"]
    gate = tmp_path / "go"  # jobs wait for it: opened once both invocations have claimed work
    env = {"BENCH_REL_LOG": str(log), "BENCH_REL_DELAY": "0.05,0.25", "BENCH_REL_GATE": str(gate)}
    procs = [_python(BENCH_SCRIPT, *args, env=env) for _ in range(2)]
    deadline = time.monotonic() + 60
    # No job can finish before the gate opens, so an invocation that exits before has failed: stop waiting.
    while (len({start[2] for start in _starts(log)}) < 2 and all(proc.poll() is None for proc in procs)
           and time.monotonic() < deadline):
        time.sleep(0.02)
    gate.touch()
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    starts = _starts(log)
    trained = [run_id for run_id, _, _ in starts]
    assert len(trained) == 24 and len(set(trained)) == 24  # 6 concat + 6 ensemble + 12 unimodal, each once
    assert {int(invocation) for _, _, invocation in starts} == {proc.pid for proc in procs}  # both worked
    counts = [re.search(r"24 runs: (\d+) ok, 0 failed, (\d+) already stored", out) for out in outputs]
    assert all(counts), outputs
    ok = [int(c.group(1)) for c in counts]
    assert sum(ok) == 24 and all(int(c.group(1)) + int(c.group(2)) == 24 for c in counts)
    _assert_store_complete(runs, set(trained))


# -- corrupt and foreign files ------------------------------------------------------------------------------



GRID = ["table-6.10", "--profile", "smoke", "--dataset", "mosi", "--method", "concat", "--modalities", "text+vision",
        "--seeds", "0,1"]


@pytest.fixture
def stored(tmp_path: Path, monkeypatch) -> Path:
    """A store with the two seeds of one table-6.10 cell (fake training)."""
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)
    runs = tmp_path / "runs"
    assert _bench("grid", *GRID, "--runs-dir", str(runs), "--no-progress") == 0
    return runs


def _a_valid_row(runs: Path) -> Path:
    return sorted((runs / "results").glob("*.parquet"))[0]


def _corrupt(kind: str, runs: Path) -> tuple[Path, str]:
    """Put one bad file into results/; returns it and the problem `read_results` must report."""
    results = runs / "results"
    valid = _a_valid_row(runs)
    target = results / "0123456789abcdef.parquet"
    if kind == "truncated":
        target.write_bytes(valid.read_bytes()[: valid.stat().st_size // 2])
        return target, "unreadable parquet"
    if kind == "text":
        target.write_text("run_id,status\n0123456789abcdef,ok\n")
        return target, "unreadable parquet"
    if kind == "empty":
        target.write_bytes(b"")
        return target, "unreadable parquet"
    if kind == "directory":
        target.mkdir()
        return target, "not a bench result"
    if kind == "wrong_columns":
        pd.DataFrame({"x": [1.0], "y": ["a"]}).to_parquet(target)
        return target, "missing column(s) run_id, status, config_json"
    row = pd.read_parquet(valid)
    if kind == "two_rows":
        pd.concat([row, row]).to_parquet(target)
        return target, "2 rows, expected 1"
    if kind == "renamed":
        row.to_parquet(target)
        return target, "does not match the file name"
    row.assign(run_id=target.stem, status="done").to_parquet(target)  # "unknown_status"
    return target, "unknown status 'done'"


CORRUPTIONS = ["truncated", "text", "empty", "directory", "wrong_columns", "two_rows", "renamed", "unknown_status"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_ls_and_table_report_a_bad_result_file_by_path_and_skip_it(stored: Path, capsys, kind: str) -> None:
    bad, problem = _corrupt(kind, stored)
    capsys.readouterr()
    assert _bench("ls", "--runs-dir", str(stored)) == 0
    out = capsys.readouterr().out
    assert "2 stored run(s)" in out and f"corrupt: {bad}: " in out and problem in out
    assert _bench("table", *GRID, "--runs-dir", str(stored)) == 0
    out, err = capsys.readouterr()
    assert f"warning: skipped {bad}: " in err and problem in err and "Traceback" not in err
    assert "| Late Concatenation (Baseline) | 42.50 ± 0.71 |" in out  # the good seeds (acc 42, 43); alone: no mark
    assert "1 unreadable or foreign result file(s) skipped" in out


def test_a_bad_trajectory_file_is_reported_by_plot_and_skipped(stored: Path, tmp_path: Path, capsys) -> None:
    bad = sorted((stored / "trajectories").glob("*.parquet"))[0]
    bad.write_bytes(b"PAR1 garbage")
    capsys.readouterr()
    assert _bench("plot", "ratios", "--runs-dir", str(stored), "--method", "concat", "--out",
                  str(tmp_path / "r.png")) == 0
    err = capsys.readouterr().err
    assert f"warning: skipped {bad}: unreadable parquet" in err and (tmp_path / "r.png").stat().st_size > 0


def test_a_grid_retrains_a_run_whose_result_file_is_corrupt(stored: Path, capsys) -> None:
    victim = _a_valid_row(stored)
    victim.write_bytes(victim.read_bytes()[:100])  # as if truncated by a crash of a non-atomic writer
    assert _bench("grid", *GRID, "--runs-dir", str(stored), "--no-progress") == 0
    assert "2 runs: 1 ok, 0 failed, 1 already stored" in capsys.readouterr().out
    rows, problems = store.read_results(stored)
    assert problems == [] and len(rows) == 2 and set(rows["status"]) == {"ok"}


def test_leftovers_of_killed_writers_and_dead_claimants_are_removed_at_start(stored: Path) -> None:
    """What a kill -9 can leave: a temp file mid-write, a claim of a dead process, a claim cut short."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    valid = _a_valid_row(stored)
    dead_temp = store.temp_path(valid).with_name(store.temp_path(valid).name.replace(f".{os.getpid()}-",
                                                                                  f".{dead_pid}-"))
    dead_temp.write_bytes(b"half a parquet")
    live_temp = store.temp_path(valid)  # a write of this (live) process in progress: must stay
    live_temp.write_bytes(b"being written")
    claims = stored / "claims"
    dead_claim = claims / f"{valid.stem}.claim"
    dead_claim.write_text(f'{{"pid": {dead_pid}, "host": "{store._host()}", "time": 0, "token": "t"}}')
    empty_claim = claims / "fedcba9876543210.claim"
    empty_claim.write_text("")
    old = time.time() - 120
    os.utime(empty_claim, (old, old))
    removed = store.remove_leftovers(stored)
    assert sorted(removed) == sorted([dead_temp, dead_claim, empty_claim])
    assert live_temp.exists() and not dead_temp.exists()
    live_temp.unlink()
