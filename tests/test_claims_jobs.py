"""A claim names the scheduler job that trains its run; once that job has ended, a claim written on another
host is broken after JOB_GRACE_S without a refresh, not after the two-hour ttl (issue 24: a rerun from another
login node after the submitter crashed)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from bench import store
from bench.execute.backends.slurm import slurm_job_alive
from bench.store import claims


def _claim_from_another_host(runs: Path, run_id: str, job: str | None, age_s: float) -> Path:
    """A claim file as a submitter on another host would have left it, last refreshed `age_s` ago."""
    claim = store.try_claim(runs, run_id)
    assert claim is not None
    if job is not None:
        assert store.attach_job(claim, "fake", job)
    info = json.loads(claim.path.read_text())
    info["host"] = "login-node-2"  # its pid cannot be checked from here
    claim.path.write_text(json.dumps(info))
    past = time.time() - age_s
    os.utime(claim.path, (past, past))
    return claim.path


@pytest.fixture
def fake_scheduler(monkeypatch):
    states: dict[str, bool | None] = {}
    monkeypatch.setitem(claims.JOB_PROBES, "fake", lambda job_id: states.get(job_id))
    return states


def test_attach_job_names_the_job_and_keeps_the_claim_ours(tmp_path: Path) -> None:
    claim = store.try_claim(tmp_path, "r1")
    assert store.attach_job(claim, "slurm", "4242_3")
    assert store.read_claim(claim.path)["job"] == {"scheduler": "slurm", "id": "4242_3"}
    assert store.refresh_claim(claim)  # the token survived the rewrite
    assert store.claim_holder(tmp_path, "r1").endswith("(slurm job 4242_3)")
    store.release_claim(claim)
    assert not claim.path.exists()


def test_a_claim_whose_job_ended_is_broken_after_the_grace(tmp_path: Path, fake_scheduler) -> None:
    fake_scheduler["7"] = False  # the job has ended
    _claim_from_another_host(tmp_path, "r1", "7", age_s=claims.JOB_GRACE_S + 5)
    assert store.try_claim(tmp_path, "r1") is not None  # broken at once, not after two hours


@pytest.mark.parametrize(("alive", "age_s"), [
    (True, claims.JOB_GRACE_S + 5),     # the job still runs: its holder may come back for it
    (None, claims.JOB_GRACE_S + 5),     # nobody can tell: the ttl applies
    (False, claims.JOB_GRACE_S - 30),   # ended, but refreshed lately: the holder is alive and will store it
])
def test_a_claim_is_kept_while_its_job_may_matter(tmp_path: Path, fake_scheduler, alive, age_s) -> None:
    fake_scheduler["7"] = alive
    _claim_from_another_host(tmp_path, "r1", "7", age_s=age_s)
    assert store.try_claim(tmp_path, "r1") is None


def test_a_claim_without_a_job_waits_for_the_ttl(tmp_path: Path, fake_scheduler) -> None:
    _claim_from_another_host(tmp_path, "r1", None, age_s=claims.JOB_GRACE_S + 5)
    assert store.try_claim(tmp_path, "r1") is None
    assert store.try_claim(tmp_path, "r1", ttl_s=claims.JOB_GRACE_S) is not None


def _fake_squeue(tmp_path: Path, monkeypatch, script: str) -> None:
    binary = tmp_path / "bin" / "squeue"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n" + script)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{binary.parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("script", "alive"), [
    ('echo RUNNING\n', True),
    ('echo PENDING\n', True),
    ('echo CANCELLED\n', False),           # listed for MinJobAge seconds after it ended
    ('exit 0\n', False),                    # gone from the controller's list
    ('echo "slurm_load_jobs error: Invalid job id specified" >&2; exit 1\n', False),
    ('echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1\n', None),
])
def test_the_slurm_probe_reads_squeue(tmp_path: Path, monkeypatch, script: str, alive: bool | None) -> None:
    _fake_squeue(tmp_path, monkeypatch, script)
    assert slurm_job_alive("123_4") is alive


def test_the_slurm_probe_cannot_tell_without_squeue(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    assert slurm_job_alive("1") is None


# -- a job that ended without an accounting record ------------------------------------------------------


class _Handle:
    """A submitit job handle whose job never reports done (no accounting to ask)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def done(self) -> bool:
        return False


def _backend_with(job_ids: dict[str, str], tmp_path: Path):
    """A SlurmBackend holding submitted jobs, built without submitit (only the polling state)."""
    from bench.execute.backend import BackendContext, Job
    from bench.execute.backends import slurm
    from bench.plan.resolve import make_config

    backend = object.__new__(slurm.SlurmBackend)
    backend.context = BackendContext(runs_dir=tmp_path, job_fn=None, metric_columns=("test_acc",))
    backend.queued, backend.probe_jobs, backend.gone_since, backend.last_probe = [], True, {}, -1e9
    backend.submitted = {Job(config=make_config("synth-mosi", "smoke", seed=int(seed))): _Handle(job_id)
                         for seed, job_id in job_ids.items()}
    return backend


def test_a_job_gone_from_squeue_without_a_result_is_a_transient_failure(tmp_path: Path, monkeypatch) -> None:
    from bench.execute.backends import slurm

    alive = {"11": True, "12": False}
    monkeypatch.setattr(slurm, "slurm_job_alive", lambda job_id: alive[job_id])
    backend = _backend_with({"0": "11", "1": "12"}, tmp_path)
    assert backend._gone_without_result(now=0.0) == []  # gone once: not yet confirmed
    assert backend._gone_without_result(now=slurm.PROBE_EVERY_S / 2) == []  # not asked again so soon
    (job, result), = backend._gone_without_result(now=slurm.GONE_CONFIRM_S + 1)
    assert job.config.seed == 1 and result.status == "failed" and result.error_kind == store.TRANSIENT
    assert "slurm job 12 ended without a result" in result.error and result.slurm_job_id == "12"
    assert [h.job_id for h in backend.submitted.values()] == ["11"]  # the running job is kept


def test_a_job_that_comes_back_to_squeue_is_not_failed(tmp_path: Path, monkeypatch) -> None:
    from bench.execute.backends import slurm

    answers = iter([False, True, True])
    monkeypatch.setattr(slurm, "slurm_job_alive", lambda job_id: next(answers))
    backend = _backend_with({"0": "21"}, tmp_path)
    for now in (0.0, slurm.PROBE_EVERY_S, slurm.GONE_CONFIRM_S + slurm.PROBE_EVERY_S):
        assert backend._gone_without_result(now=now) == []
    assert len(backend.submitted) == 1
