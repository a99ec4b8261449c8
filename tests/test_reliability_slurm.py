"""The Slurm backend's fault paths without a cluster: submitit's executor replaced by a fake that records
arrays, refusals, states and cancels. (A real single-node Slurm cluster in CI is not part of these tests.)"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import submitit
import test_execute_fakes as fakes
from submitit.core.utils import FailedJobError, UncompletedJobError

from bench import execute, store
from bench.config import ConfigError, RunConfig
from bench.execute.backends import slurm
from bench.plan.deps import job_graph
from bench.plan.resolve import make_config


class FakeHandle:
    def __init__(self, fn: Any, args: tuple, job_id: str, owner: FakeExecutor) -> None:
        self.fn, self.args, self.job_id, self.owner = fn, args, job_id, owner
        self.cancelled = False

    @property
    def state(self) -> str:
        return self.owner.states.get(self.args[0].seed, "COMPLETED")

    def done(self) -> bool:
        if self.owner.sigterm_on_poll:
            self.owner.sigterm_on_poll = False
            os.kill(os.getpid(), signal.SIGTERM)
        return True

    def result(self) -> Any:
        if self.state != "COMPLETED":
            raise UncompletedJobError(f"Job {self.job_id} (task: 0) with path ... has not produced any output "
                                      f"(state: {self.state})")
        return self.fn(*self.args)

    def cancel(self, check: bool = True) -> None:
        self.cancelled = True


class FakeExecutor:
    """submitit.AutoExecutor's surface that the backend uses."""

    last: FakeExecutor | None = None
    refuse: str | None = None
    states: dict[int, str] = {}
    sigterm_on_poll = False

    def __init__(self, folder: Any, cluster: Any = None) -> None:
        self.params: dict[str, Any] = {}
        self.arrays: list[list[FakeHandle]] = []
        self.handles: list[FakeHandle] = []
        self.current: list[FakeHandle] | None = None
        FakeExecutor.last = self

    def update_parameters(self, **params: Any) -> None:
        self.params.update(params)

    @contextlib.contextmanager
    def batch(self):
        self.current = []
        yield
        if self.refuse:  # what submitit does with a refused sbatch: print its stderr, raise it
            print(self.refuse, file=sys.stderr)
            raise FailedJobError(self.refuse)
        self.arrays.append(self.current)
        self.handles.extend(self.current)

    def submit(self, fn: Any, *args: Any) -> FakeHandle:
        handle = FakeHandle(fn, args, f"{100 + len(self.arrays)}_{len(self.current)}", self)
        self.current.append(handle)
        return handle


@pytest.fixture(autouse=True)
def fake_submitit(monkeypatch: pytest.MonkeyPatch) -> type[FakeExecutor]:
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.setattr(FakeExecutor, "refuse", None)
    monkeypatch.setattr(FakeExecutor, "states", {})
    monkeypatch.setattr(FakeExecutor, "sigterm_on_poll", False)
    return FakeExecutor


def _configs(n: int) -> list[RunConfig]:
    return [make_config("synth-mosi", "smoke", method="concat", seed=s) for s in range(n)]


def _run(configs: list[RunConfig], runs: Path, **options: Any) -> execute.Summary:
    opts = {"cluster": "debug", "poll_s": 0.01, **options}
    return execute.run_jobs(job_graph(configs), runs, executor="slurm", options=opts, job_fn=fakes.fake_job,
                            progress=False)


def _claims(runs: Path) -> list[Path]:
    return [p for p in (runs / "claims").glob("*")] if (runs / "claims").exists() else []


def test_arrays_are_split_to_the_max_array_size(tmp_path: Path) -> None:
    summary = _run(_configs(5), tmp_path, max_array_size=2)
    assert summary.ok == 5
    assert [len(a) for a in FakeExecutor.last.arrays] == [2, 2, 1]


def test_max_array_size_is_read_from_scontrol(monkeypatch) -> None:
    out = "AuthType                = auth/munge\nMaxArraySize            = 501\nMaxJobCount = 10000\n"
    monkeypatch.setattr(slurm.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, out, ""))
    assert slurm.max_array_size() == 501

    def missing(*a, **k):
        raise FileNotFoundError("scontrol")

    monkeypatch.setattr(slurm.subprocess, "run", missing)
    assert slurm.max_array_size() == slurm.DEFAULT_MAX_ARRAY_SIZE == 1001


def test_each_result_records_its_slurm_job_id(tmp_path: Path) -> None:
    configs = _configs(2)
    _run(configs, tmp_path)
    ids = {store.read_row(tmp_path, c.run_id)["slurm_job_id"] for c in configs}
    assert ids == {"100_0", "100_1"}


@pytest.mark.parametrize("state", ["CANCELLED by 0", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY"])
def test_a_job_ended_by_slurm_is_retrained_by_a_plain_rerun(state: str, tmp_path: Path) -> None:
    configs = _configs(2)
    FakeExecutor.states = {1: state}
    first = _run(configs, tmp_path)
    assert (first.ok, first.failed) == (1, 1)
    row = store.read_row(tmp_path, configs[1].run_id)
    assert row["error_kind"] == "transient" and state in row["error"] and row["slurm_job_id"] == "100_1"
    FakeExecutor.states = {}
    again = _run(configs, tmp_path)
    assert (again.ok, again.skipped, again.exit_code) == (1, 1, 0)


def test_a_failed_job_is_not_transient_and_names_the_node_requirements(tmp_path: Path) -> None:
    configs = _configs(1)
    FakeExecutor.states = {0: "FAILED"}
    _run(configs, tmp_path)
    row = store.read_row(tmp_path, configs[0].run_id)
    assert store.read_state(tmp_path, configs[0].run_id) == ("failed", None)
    assert "exist on the compute node" in row["error"]


@pytest.mark.parametrize("message, error, code", [
    ("sbatch: error: invalid partition specified: gpu", ConfigError, 2),
    ("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)",
     execute.ExecutorError, 1),
])
def test_a_refused_sbatch_is_one_line(message: str, error: type, code: int, tmp_path: Path, capsys) -> None:
    from bench import cli

    FakeExecutor.refuse = message
    with pytest.raises(error) as raised:
        _run(_configs(3), tmp_path)
    assert str(raised.value) == f"sbatch refused 3 job(s): {message}"
    assert capsys.readouterr().err == ""  # submitit's own print of sbatch's stderr is not shown
    assert cli.os_error_code(raised.value) == code if isinstance(raised.value, OSError) else code == 2
    assert _claims(tmp_path) == [] and not (tmp_path / "results").exists()


def test_sigterm_cancels_the_submitted_array_and_releases_the_claims(tmp_path: Path) -> None:
    FakeExecutor.sigterm_on_poll = True
    with pytest.raises(execute.Terminated) as raised:
        _run(_configs(3), tmp_path)
    assert raised.value.signum == signal.SIGTERM
    handles = FakeExecutor.last.handles
    assert len(handles) == 3 and all(h.cancelled for h in handles)
    assert _claims(tmp_path) == [] and not (tmp_path / "results").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is restored


def test_sigterm_exits_143(capsys) -> None:
    from bench.cli_runs import _interruptible

    with pytest.raises(SystemExit) as done, _interruptible():
        raise execute.Terminated(signal.SIGTERM)
    assert done.value.code == 143 and "interrupted" in capsys.readouterr().err


def test_torch_threads_follow_the_cpus_granted(monkeypatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    try:
        assert slurm.threads_from_allocation() == 1 and torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert slurm.threads_from_allocation() is None


def test_a_node_without_the_runs_directory_fails_in_one_line(tmp_path: Path) -> None:
    cfg = _configs(1)[0]
    result = slurm._slurm_entry(cfg, (), str(tmp_path / "not-shared"), fakes.fake_job, ())
    assert result.status == "failed" and "does not see the runs directory" in result.error
    assert "\n" not in result.error


def test_a_short_time_limit_gets_a_short_signal_delay() -> None:
    opts = execute.resolve_options("slurm", {"time": "1"})
    assert slurm.slurm_parameters(opts)["slurm_signal_delay_s"] == 6
    assert slurm.slurm_parameters(execute.resolve_options("slurm", {"time": "60"}))["slurm_signal_delay_s"] == 90
