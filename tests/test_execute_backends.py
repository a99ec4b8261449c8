"""Executors as backends: the registry, option checking, --exec-opt and its alias flags, and the extension
point (a backend registered here, in the test, runs a job graph through run_jobs)."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_execute_fakes as fakes
from clitools import bench

from bench import execute, store
from bench.api import Execution
from bench.config import ConfigError
from bench.execute import EXECUTORS, BackendContext, BackendOptions, Job, option, register_backend, resolve_options
from bench.execute.backends.inline import InlineOptions
from bench.execute.backends.local import LocalOptions
from bench.execute.backends.slurm import SlurmOptions, slurm_parameters
from bench.execute.job import execute_one
from bench.plan.deps import job_graph
from bench.plan.resolve import make_config
from bench.reproduce import _two_local_workers

EXECUTE_DIR = Path(execute.__file__).resolve().parent


@pytest.fixture(autouse=True)
def _fake_env(monkeypatch):
    for name in ("BENCH_FAKE_LOG", "BENCH_FAKE_DELAY", "BENCH_FAKE_FAIL_SEEDS", "BENCH_FAKE_EXIT_SEEDS",
                 "BENCH_FAKE_METHODS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(execute, "POLL_S", 0.01)
    monkeypatch.setattr(execute, "default_job_fn", lambda: fakes.fake_job)


# -- the registry ----------------------------------------------------------------------------------------

def test_the_built_in_executors_are_registered_with_their_options() -> None:
    assert {name: spec.options for name, spec in EXECUTORS.items()} == {
        "inline": InlineOptions, "local": LocalOptions, "slurm": SlurmOptions}
    with pytest.raises(ConfigError, match="unknown executor 'ray'; choose from inline, local, slurm"):
        execute.backend_spec("ray")


def test_a_name_is_registered_once_and_options_must_be_a_backend_options_dataclass() -> None:
    with pytest.raises(ValueError, match="executor name 'local' registered twice"):
        register_backend("local", LocalOptions)(lambda options, context: None)
    with pytest.raises(ValueError, match="must be a BackendOptions dataclass"):
        register_backend("plain", dict)  # type: ignore[arg-type]
    assert "plain" not in EXECUTORS


# -- options -------------------------------------------------------------------------------------------

def test_options_from_strings_are_converted_to_their_field_types() -> None:
    assert resolve_options("local", {"workers": "3", "workers_per_gpu": "2"}) == LocalOptions(3, 2)
    slurm = resolve_options("slurm", {"time": "30", "partition": "gpu", "gpus_per_job": "1", "mem_gb": "16",
                                      "setup": "module load cuda; source .venv/bin/activate", "poll_s": "0.5",
                                      "account": "none"})
    assert (slurm.time, slurm.partition, slurm.gpus_per_job, slurm.mem_gb, slurm.poll_s) == (30, "gpu", 1, 16, 0.5)
    assert slurm.account is None and slurm.array_parallelism == 256  # "none" -> None; the default otherwise
    params = slurm_parameters(slurm)
    assert (params["timeout_min"], params["slurm_partition"], params["gpus_per_node"]) == (30, "gpu", 1)
    assert params["slurm_setup"] == ["module load cuda", "source .venv/bin/activate"]
    assert params["slurm_array_parallelism"] == 256 and params["slurm_account"] is None


@pytest.mark.parametrize("executor, values, message", [
    ("local", {"workers": "2.5"}, "--workers must be an integer, got '2.5'"),
    ("local", {"workers": 2.5}, "--workers must be an integer, got 2.5"),
    ("local", {"workers_per_gpu": "0"}, "--workers-per-gpu must be >= 1, got 0"),
    ("local", {"workers_per_gpu": "none"}, "--workers-per-gpu needs a value"),
    ("slurm", {"poll_s": "soon"}, "--exec-opt poll_s must be a number, got 'soon'"),
    ("slurm", {"partition": 3}, "--partition must be a string, got 3"),
    ("local", {"nodes": "4"}, "unknown option 'nodes' for --executor local; its options: workers, workers_per_gpu"),
    ("inline", {"nodes": "4"}, "unknown option 'nodes' for --executor inline; its options: workers"),
    ("inline", {"time": "30"}, "--time only applies to --executor slurm"),
    ("inline", {"workers_per_gpu": "2"}, "--workers-per-gpu only applies to --executor local"),
    ("inline", {"workers_per_gpu": "0"}, "--workers-per-gpu must be >= 1, got 0"),  # the value first
    ("inline", {"workers": "2"}, "--executor inline runs one job at a time; it conflicts with --workers 2"),
])
def test_a_bad_option_is_one_config_error(executor: str, values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_options(executor, values)
    assert str(err.value) == message


def test_errors_name_an_option_the_way_it_was_given() -> None:
    with pytest.raises(ConfigError, match=r"^--exec-opt workers must be >= 1, got 0$"):
        resolve_options("local", {"workers": "0"}, from_exec_opt={"workers"})
    with pytest.raises(ConfigError, match=r"^--exec-opt partition only applies to --executor slurm$"):
        resolve_options("local", {"partition": "gpu"}, from_exec_opt={"partition"})


def test_an_alias_and_the_same_exec_opt_must_agree() -> None:
    with pytest.raises(ConfigError, match=r"^--workers 3 conflicts with --exec-opt workers=2$"):
        Execution.from_arguments(workers=3, exec_opts={"workers": "2"})
    with pytest.raises(ConfigError, match=r"^--time 30 conflicts with --exec-opt time=45$"):
        Execution.from_arguments(executor="slurm", slurm={"time": 30}, exec_opts={"time": "45"})
    same = Execution.from_arguments(workers=2, exec_opts={"workers": "2", "workers_per_gpu": "3"})
    assert same.resolved() == ("local", LocalOptions(workers=2, workers_per_gpu=3))


def test_api_keywords_are_aliases_of_options() -> None:
    slurm = Execution.from_arguments(executor="slurm", slurm={"gpus": 2, "partition": "gpu", "cluster": None},
                                     exec_opts={"qos": "high"})
    name, options = slurm.resolved()
    assert name == "slurm" and (options.gpus_per_job, options.partition, options.qos) == (2, "gpu", "high")
    # No executor named: local with several workers (or a GPU), else inline, which accepts --workers 1.
    assert Execution.from_arguments(workers=1).resolved()[0] in ("inline", "local")
    assert Execution.from_arguments(exec_opts={"workers": "3"}).resolved() == ("local", LocalOptions(3, 1))


def test_reproduce_defaults_to_two_local_workers_only_for_the_local_executor() -> None:
    local = {"executor": "local", "workers": None, "exec_opts": {}}
    assert _two_local_workers(local)["workers"] == 2
    assert _two_local_workers({**local, "exec_opts": {"workers": "4"}})["workers"] is None
    assert _two_local_workers({**local, "executor": "slurm"})["workers"] is None


# -- the CLI -------------------------------------------------------------------------------------------

RUN = ["run", "--method", "concat", "--modalities", "text,vision", "--profile", "smoke", "--seeds", "0"]


@pytest.mark.parametrize("args, message", [
    ([*RUN, "--workers", "3", "--exec-opt", "workers=2"], "--workers 3 conflicts with --exec-opt workers=2"),
    ([*RUN, "--exec-opt", "colour=red"], "unknown option 'colour' for --executor inline"),
    ([*RUN, "--executor", "local", "--exec-opt", "workers=many"], "--exec-opt workers must be an integer"),
    ([*RUN, "--exec-opt", "workers=many"], "--exec-opt workers must be an integer, got 'many'"),
    ([*RUN, "--exec-opt", "partition=gpu"], "--exec-opt partition only applies to --executor slurm"),
    ([*RUN, "--exec-opt", "workers"], "--exec-opt must look like key=value, got 'workers'"),
    ([*RUN, "--exec-opt", "time=1", "--exec-opt", "time=2"], "--exec-opt time given twice"),
    (["grid", "table-6.10", "--executor", "slurm", "--exec-opt", "time=0"], "--exec-opt time must be >= 1, got 0"),
    (["reproduce", "table-6.10", "--exec-opt", "workers_per_gpu=0"], "--exec-opt workers_per_gpu must be >= 1"),
])
def test_exec_opt_errors_exit_2_with_one_line(tmp_path, capsys, args, message) -> None:
    code = bench(*args, "--runs-dir", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "results").exists()


def test_run_trains_with_an_exec_opt(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "no-real-data"))
    code = bench(*RUN, "--executor", "inline", "--exec-opt", "workers=1", "--workers", "1", "--runs-dir",
                 str(tmp_path / "runs"), "--no-progress")
    assert code == 0, capsys.readouterr()
    assert list(store.stored_status(tmp_path / "runs").values()) == ["ok"]


# -- the extension point: a backend defined in this test -----------------------------------------------

@dataclass(frozen=True)
class BatchOptions(BackendOptions):
    slots: int = option(1, minimum=1, help="jobs at once")


class BatchBackend:
    """Collects submitted jobs and runs all of them at the next poll, in this process; logs every call."""

    calls: list[tuple[str, object]] = []

    def __init__(self, options: BatchOptions, context: BackendContext) -> None:
        self.options, self.context, self.held = options, context, []

    def capacity(self) -> int:
        return self.options.slots - len(self.held)

    def submit(self, job: Job) -> None:
        job.worker = "batch"
        self.held.append(job)
        self.calls.append(("submit", job.run_id))

    def poll(self, timeout: float) -> list:
        ctx, batch, self.held = self.context, self.held, []
        self.calls.append(("poll", len(batch)))
        return [(job, execute_one(job.config, job.needs, ctx.runs_dir, ctx.job_fn, "cpu", ctx.metric_columns))
                for job in batch]

    def cancel(self, job: Job | None = None) -> None:
        self.calls.append(("cancel", job))

    def close(self, abort: bool = False) -> None:
        self.calls.append(("close", abort))


@pytest.fixture
def batch_backend():
    register_backend("batch", BatchOptions, help="a test backend")(BatchBackend)
    BatchBackend.calls = []
    yield BatchBackend.calls
    EXECUTORS.pop("batch")


def test_a_backend_registered_in_a_test_runs_a_job_graph(batch_backend, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BENCH_FAKE_FAIL_SEEDS", "0")
    monkeypatch.setenv("BENCH_FAKE_METHODS", "unimodal")
    saved, real_save = [], store.save_result

    def save(runs, result):
        saved.append(result)
        real_save(runs, result)

    monkeypatch.setattr(store, "save_result", save)
    graph = job_graph(fakes.small_grid(seeds=2))  # per seed: concat, 2 unimodal, ensemble needing them
    columns = ("test_acc", "test_mae")
    summary = execute.run_jobs(graph, tmp_path, "batch", {"slots": "3"}, job_fn=fakes.fake_job, progress=False,
                               metric_columns=columns)
    # seed 0: both unimodal runs fail, so its ensemble fails without training; seed 1: all ok
    assert (summary.total, summary.ok, summary.failed) == (8, 5, 3)
    submitted = [rid for call, rid in batch_backend if call == "submit"]
    assert sorted(submitted) == sorted(job.run_id for job in graph
                                       if (job.config.seed, job.config.method) != (0, "ensemble"))
    ensemble1 = next(job for job in graph if job.config.method == "ensemble" and job.config.seed == 1)
    assert all(submitted.index(need) < submitted.index(ensemble1.run_id) for need in ensemble1.needs)
    assert max(n for call, n in batch_backend if call == "poll") == 3  # never more than `slots` at once
    assert batch_backend[-1] == ("close", False)
    dependency_failure = next(r for r in saved if (r.error or "").startswith("dependency "))
    assert dependency_failure.metric_columns == columns  # the scheduler's failed records carry the columns
    assert {r.metric_columns for r in saved if r.status == "failed"} == {columns}


def test_ctrl_c_cancels_and_aborts_the_backend(batch_backend, tmp_path) -> None:
    def interrupted(cfg, deps, device="cpu"):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        execute.run_jobs(job_graph([make_config("synth-mosi", "smoke", method="concat", seed=0)]), tmp_path,
                         "batch", job_fn=interrupted, progress=False)
    assert batch_backend[-2:] == [("cancel", None), ("close", True)]
    assert list((tmp_path / "claims").iterdir()) == []


def test_run_jobs_takes_the_job_graph(tmp_path) -> None:
    configs = fakes.small_grid(seeds=1)
    with pytest.raises(ConfigError, match="run_jobs takes the job graph, not configs"):
        execute.run_jobs(configs, tmp_path, job_fn=fakes.fake_job, progress=False)
    ensemble = next(job for job in job_graph(configs) if job.config.method == "ensemble")
    with pytest.raises(ConfigError, match=f"run {ensemble.run_id} needs {ensemble.needs[0]}, which is not before"):
        execute.run_jobs([ensemble], tmp_path, job_fn=fakes.fake_job, progress=False)


# -- boundaries ------------------------------------------------------------------------------------------

def _imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every `from X import name` in `path`, and (module, "") of every `import X`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.extend((node.module, alias.name) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((alias.name, "") for alias in node.names)
    return found


@pytest.mark.parametrize("path", sorted(EXECUTE_DIR.rglob("*.py")), ids=lambda p: p.name)
def test_execute_imports_no_planning_or_registry_and_no_private_names(path: Path) -> None:
    banned = ("bench.presets", "bench.plan", "bench.methods", "bench.models", "bench.gridfile")
    imports = _imports(path)
    assert [m for m, _ in imports if m.startswith(banned)] == []
    assert [f"{m}.{n}" for m, n in imports if m.startswith("bench.execute") and n.startswith("_")] == []
