"""Fake job functions for the execution tests (importable by spawned workers and subprocesses).

Behaviour is steered by environment variables, which worker processes and subprocesses inherit:
BENCH_FAKE_LOG (append "run_id pid" per training start), BENCH_FAKE_DELAY (seconds per job),
BENCH_FAKE_FAIL_SEEDS / BENCH_FAKE_EXIT_SEEDS (comma-separated seeds that raise / os._exit(3)),
BENCH_FAKE_METHODS (only those methods fail or exit; default all).
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.config import RunConfig
from bench.presets import dependencies
from bench.store import RunRecord


def seeds_from_env(name: str) -> set[int]:
    """The comma-separated seeds in environment variable `name` (empty when unset)."""
    return {int(s) for s in os.environ.get(name, "").split(",") if s.strip()}


def _targeted(cfg: RunConfig) -> bool:
    methods = os.environ.get("BENCH_FAKE_METHODS")
    return not methods or cfg.method in methods.split(",")


def append_line(env_var: str, line: str) -> None:
    """Append one line to the file named by `env_var` (if set), atomically (O_APPEND) from any process."""
    path = os.environ.get(env_var)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)


def _log_start(cfg: RunConfig) -> None:
    append_line("BENCH_FAKE_LOG", f"{cfg.run_id} {os.getpid()}")


def fake_metrics(cfg: RunConfig) -> dict[str, float]:
    """Deterministic metrics that depend on the config."""
    base = 40.0 + cfg.seed + len(cfg.modalities)
    return {"test_acc": base, "test_loss": 100.0 - base, "val_acc": base - 1, "val_loss": 101.0 - base,
            "test_f1": base / 100, "best_epoch": 1.0, "epochs": 2.0,
            **{f"test_acc_{m}": base - 5 for m in cfg.modalities}}


def fake_job(cfg: RunConfig, deps: Any = None, device: str = "cpu") -> RunRecord:
    """A quick stand-in for train_run that checks it got exactly its dependencies' checkpoints."""
    _log_start(cfg)
    time.sleep(float(os.environ.get("BENCH_FAKE_DELAY", "0")))
    if _targeted(cfg) and cfg.seed in seeds_from_env("BENCH_FAKE_EXIT_SEEDS"):
        os._exit(3)
    if _targeted(cfg) and cfg.seed in seeds_from_env("BENCH_FAKE_FAIL_SEEDS"):
        raise RuntimeError(f"planned failure for seed {cfg.seed}")
    wanted = {d.run_id: {"seed": [float(d.seed)] * 2} for d in dependencies(cfg)}
    got = {k: {"seed": list(v["seed"])} for k, v in (deps or {}).items()}
    if got != wanted:
        raise AssertionError(f"deps {sorted(got)} != needed {sorted(wanted)}")
    return RunRecord(
        config=cfg, status="ok", metrics=fake_metrics(cfg),
        trajectory=[{"epoch": 0, "step": 1, "split": "train", "series": "loss", "modality": "", "value": 1.0},
                    {"epoch": 0, "step": 1, "split": "train", "series": "ratio", "modality": "text", "value": 2.0}],
        state_dict={"seed": [float(cfg.seed)] * 2}, wall_s=0.01, device=device,
        data_fingerprint="fake", torch_version="fake",
    )


def drifting_job(cfg: RunConfig, deps: Any = None, device: str = "cpu") -> RunRecord:
    """Like fake_job but with a different test accuracy every time (for `bench rerun` mismatches)."""
    result = fake_job(cfg, deps, device)
    result.metrics["test_acc"] += time.perf_counter() % 1 + 0.5
    return result


def wrong_config_job(cfg: RunConfig, deps: Any = None, device: str = "cpu") -> RunRecord:
    """Returns the result of another config: must be recorded as a failure, not stored under cfg."""
    return RunRecord(config=cfg.replace(seed=cfg.seed + 100), status="ok", metrics=fake_metrics(cfg))


def small_grid(seeds: int = 4) -> list[RunConfig]:
    """concat text+vision and ensemble text+vision (needing two unimodal runs each) over seeds."""
    from bench.plan.resolve import make_config

    jobs = []
    for seed in range(seeds):
        for method in ("concat", "ensemble"):
            jobs.append(make_config("synth-mosi", "smoke", method=method, modalities=("text", "vision"), seed=seed))
    return jobs
