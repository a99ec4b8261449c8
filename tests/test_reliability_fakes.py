"""Job functions and test methods for the reliability tests (importable by spawned workers and subprocesses).

Steered by environment variables, which worker processes and subprocesses inherit:
BENCH_REL_LOG (append "run_id worker_pid parent_pid" at every training start), BENCH_REL_DELAY
("min,max" seconds, a pseudo-random sleep per job), BENCH_REL_GATE (a path: every job waits, after
logging its start, until that file exists), BENCH_REL_EXIT_SEEDS / BENCH_REL_KILL_SEEDS
(comma-separated seeds whose job ends its own process with os._exit(7) / SIGKILL).
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import time
from typing import Any

import test_execute_fakes as fakes
import torch
from torch import nn

from bench.config import RunConfig
from bench.methods import REGISTRY, Method, register

# -- fake jobs ---------------------------------------------------------------------------------------


def log_start(cfg: RunConfig) -> None:
    """One line per training start, appended atomically (O_APPEND) by any process."""
    fakes.append_line("BENCH_REL_LOG", f"{cfg.run_id} {os.getpid()} {os.getppid()}")


def _delay(cfg: RunConfig) -> float:
    """A pseudo-random delay in BENCH_REL_DELAY's range, different per run and per process."""
    low, _, high = os.environ.get("BENCH_REL_DELAY", "0,0").partition(",")
    draw = int(hashlib.sha256(f"{cfg.run_id}{os.getpid()}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return float(low) + (float(high or low) - float(low)) * draw


def _wait_for_gate(timeout_s: float = 60.0) -> None:
    gate = os.environ.get("BENCH_REL_GATE")
    deadline = time.monotonic() + timeout_s
    while gate and not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


def sleepy_job(cfg: RunConfig, deps: Any = None, device: str = "cpu") -> Any:
    """fake_job (checks its dependencies' checkpoints) after a logged start and a random short sleep."""
    log_start(cfg)
    _wait_for_gate()
    time.sleep(_delay(cfg))
    if cfg.seed in fakes.seeds_from_env("BENCH_REL_EXIT_SEEDS"):
        os._exit(7)
    if cfg.seed in fakes.seeds_from_env("BENCH_REL_KILL_SEEDS"):
        os.kill(os.getpid(), signal.SIGKILL)
    return fakes.fake_job(cfg, deps, device)


# -- methods that fail numerically (registered by the tests, and by tiny_train_job in workers) ---------


class NaNLoss(Method):
    name = "test_rel_nan_loss"

    def loss(self, model: nn.Module, batch: Any, state: Any) -> Any:
        loss, logs = super().loss(model, batch, state)
        return (loss * math.nan if state.epoch == 1 else loss), logs


class InfLoss(Method):
    name = "test_rel_inf_loss"

    def loss(self, model: nn.Module, batch: Any, state: Any) -> Any:
        loss, logs = super().loss(model, batch, state)
        return (loss * math.inf if state.epoch == 1 else loss), logs


class ExplodingGradient(Method):
    """A finite loss whose gradient overflows in epoch 1 (a backward hook scales it to inf)."""

    name = "test_rel_exploding_grad"

    def loss(self, model: nn.Module, batch: Any, state: Any) -> Any:
        out = model(batch)
        if state.epoch == 1 and out.logits.requires_grad:
            out.logits.register_hook(lambda grad: grad * 1e38 * 1e38)
        return nn.functional.cross_entropy(out.logits, batch.labels), {}


class NaNWeights(Method):
    """Training itself is finite, but the weights are broken after epoch 1: validation loss is NaN."""

    name = "test_rel_nan_validation"

    def on_epoch_end(self, model: nn.Module, state: Any) -> dict[str, float]:
        if state.epoch == 1:
            with torch.no_grad():
                model.head.weight.fill_(math.nan)
        return {}


class CudaOutOfMemory(Method):
    name = "test_rel_cuda_oom"

    def loss(self, model: nn.Module, batch: Any, state: Any) -> Any:
        if state.epoch == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.15 GiB "
                                              "total capacity; 77.00 GiB already allocated)")
        return super().loss(model, batch, state)


FAULTY_METHODS: tuple[type[Method], ...] = (NaNLoss, InfLoss, ExplodingGradient, NaNWeights, CudaOutOfMemory)


def register_faulty_methods() -> list[str]:
    """Register the faulty methods that are not registered yet; their names (for popping afterwards)."""
    added = []
    for cls in FAULTY_METHODS:
        if cls.name not in REGISTRY:
            register(cls)
            added.append(cls.name)
    return added


def tiny_train_job(cfg: RunConfig, deps: Any = None, device: str = "cpu") -> Any:
    """The real trainer on the in-memory tiny dataset (tests/tiny.py); the faulty methods available."""
    from tiny import make_tiny_dataset

    from bench.train import train_run

    register_faulty_methods()  # in a spawned worker the registry starts without them
    return train_run(cfg, deps, device=device, dataset=make_tiny_dataset(n_train=32, n_valid=12, n_test=12))
