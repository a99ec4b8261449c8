"""Claims: a file lock per run (`claims/<run_id>.claim`), so that only one process trains a run.

A claim file holds its holder's pid, host, creation time and a random token. It is stale when its process
died on this host, when it has not been refreshed for `ttl_s` seconds (any host), or when it has been
unreadable for a minute; a stale claim is broken by whoever needs the run. Breaking is safe against a
concurrent breaker and against a fresh claim that replaced the stale one in between.

A claim whose run was handed to a batch scheduler names the job (`attach_job`). Where a probe for that
scheduler is registered (`register_job_probe`; the Slurm backend registers one), a claim written on another
host is stale as soon as its job has ended and the claim has gone JOB_GRACE_S without a refresh (its holder
would have refreshed it: a live holder refreshes at least every minute), not only after `ttl_s`. So a rerun
from another login node after the submitter crashed waits minutes, not hours.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.store.atomic import ASIDE_MAX_AGE_S, host, pid_alive, temp_path, write_synced
from bench.store.layout import PathLike, claim_path

DEFAULT_CLAIM_TTL_S = 2 * 3600.0
JOB_GRACE_S = 180.0  # three of the claim keeper's longest refresh intervals (bench.execute.claims)

# scheduler name -> probe(job id): True while the job exists (pending or running), False once it has ended,
# None when the probe cannot tell (no scheduler client here): then only the ttl applies.
JobProbe = Callable[[str], "bool | None"]
JOB_PROBES: dict[str, JobProbe] = {}


def register_job_probe(scheduler: str, probe: JobProbe) -> None:
    """Let claims naming a `scheduler` job ask whether that job still exists."""
    JOB_PROBES[scheduler] = probe


@dataclass(frozen=True)
class Claim:
    """A held claim on one run: only its holder trains the run."""

    run_id: str
    path: Path
    token: str


def try_claim(runs_dir: PathLike, run_id: str, ttl_s: float = DEFAULT_CLAIM_TTL_S) -> Claim | None:
    """Claim `run_id` for this process; None while another live process holds it. Stale claims are broken."""
    path = claim_path(runs_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        claim = _create_claim(path, run_id)
        if claim is not None:
            return claim
        if not break_if_stale(path, ttl_s):
            return None
    return None


def _create_claim(path: Path, run_id: str) -> Claim | None:
    """Create the claim file exclusively, complete from its first instant; None when it already exists.

    Written to a temp file, then hard-linked to the claim name (atomic, fails if the name exists): a kill
    between creating and filling the file would otherwise leave an empty claim that blocks the run.
    """
    token = secrets.token_hex(8)
    data = json.dumps({"pid": os.getpid(), "host": host(), "time": time.time(), "token": token}).encode()
    tmp = temp_path(path)
    try:
        write_synced(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        except OSError:  # a filesystem without hard links: exclusive create, then fill
            try:
                write_synced(path, data)
            except FileExistsError:
                return None
    finally:
        tmp.unlink(missing_ok=True)
    return Claim(run_id=run_id, path=path, token=token)


def read_claim(path: Path) -> dict[str, Any] | None:
    """The holder of a claim file ({pid, host, time, token}), or None when unreadable / half-written."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def claim_is_stale(info: Mapping[str, Any] | None, age_s: float, ttl_s: float) -> bool:
    """Stale: its process is dead on this host, it has not been refreshed for `ttl_s` seconds, or it has been
    unreadable for a minute (claims are written whole; a broken one would otherwise block its run)."""
    if info is None:
        return age_s > min(ttl_s, ASIDE_MAX_AGE_S)
    if info.get("host") == host() and isinstance(info.get("pid"), int):
        if not pid_alive(info["pid"]):
            return True
    elif age_s > JOB_GRACE_S and job_ended(info):
        return True
    return age_s > ttl_s


def job_ended(info: Mapping[str, Any]) -> bool:
    """Whether the scheduler job a claim names has ended (False when it names none or nobody can tell)."""
    job = info.get("job")
    if not isinstance(job, Mapping):
        return False
    probe = JOB_PROBES.get(str(job.get("scheduler")))
    return probe is not None and probe(str(job.get("id"))) is False


def break_if_stale(path: Path, ttl_s: float) -> bool:
    """Remove a stale claim; False when the claim is live. Safe against a concurrent breaker."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    info = read_claim(path)
    if not claim_is_stale(info, age, ttl_s):
        return False
    aside = path.parent / f".{path.name}.{secrets.token_hex(4)}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return True  # someone else broke it first
    moved = read_claim(aside)
    if info is not None and (moved or {}).get("token") != info.get("token"):
        # A fresh claim replaced the stale one between our read and the rename: put it back.
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    return True


def refresh_claim(claim: Claim) -> bool:
    """Touch a held claim so it does not age out; False when it is no longer ours."""
    info = read_claim(claim.path)
    if info is None or info.get("token") != claim.token:
        return False
    try:
        os.utime(claim.path)
    except FileNotFoundError:
        return False
    return True


def attach_job(claim: Claim, scheduler: str, job_id: str) -> bool:
    """Name the scheduler job that trains a held claim's run (rewritten whole, atomically); False when the
    claim is no longer ours."""
    info = read_claim(claim.path)
    if info is None or info.get("token") != claim.token:
        return False
    info["job"] = {"scheduler": scheduler, "id": str(job_id)}
    tmp = temp_path(claim.path)
    try:
        write_synced(tmp, json.dumps(info).encode())
        os.replace(tmp, claim.path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def release_claim(claim: Claim) -> None:
    """Remove the claim file if it is still ours."""
    info = read_claim(claim.path)
    if info is not None and info.get("token") == claim.token:
        claim.path.unlink(missing_ok=True)


def claim_holder(runs_dir: PathLike, run_id: str) -> str:
    """A short description of who holds the claim on `run_id` ("" when nobody does)."""
    info = read_claim(claim_path(runs_dir, run_id))
    if info is None:
        return ""
    job = info.get("job") if isinstance(info.get("job"), Mapping) else None
    suffix = f" ({job.get('scheduler')} job {job.get('id')})" if job else ""
    return f"pid {info.get('pid')} on {info.get('host')}{suffix}"
