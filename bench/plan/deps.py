"""The job graph: every config plus the runs it depends on (a method's `needs`), dependencies first.

The executors receive the graph as `PlannedJob`s (a config and the run ids it waits for), so they never
ask a method what it needs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bench.config import ConfigError, RunConfig


@dataclass(frozen=True)
class PlannedJob:
    """One run to train and the run ids that must be stored ok before it starts."""

    config: RunConfig
    needs: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        return self.config.run_id


def dependencies(cfg: RunConfig) -> list[RunConfig]:
    """The runs `cfg` needs first (the method's `needs`)."""
    from bench.methods import get_method
    from bench.methods.base import needed_runs

    return needed_runs(get_method(cfg.method), cfg)


def order_with_dependencies(configs: Iterable[RunConfig]) -> list[RunConfig]:
    """Configs plus everything they need, deduplicated by run id, each after its dependencies.

    Runs that others depend on come first, so a pool starts them early.
    """
    return [job.config for job in job_graph(configs)]


def job_graph(configs: Iterable[RunConfig]) -> list[PlannedJob]:
    """`order_with_dependencies` with each job's dependency ids."""
    found: dict[str, RunConfig] = {}
    level: dict[str, int] = {}
    needs: dict[str, tuple[str, ...]] = {}
    needed: set[str] = set()

    def visit(cfg: RunConfig, path: frozenset[str]) -> int:
        rid = cfg.run_id
        if rid in level:
            return level[rid]
        if rid in path:
            raise ConfigError(f"run {rid} ({cfg.method}) depends on itself")
        deps = dependencies(cfg)
        needs[rid] = tuple(dict.fromkeys(d.run_id for d in deps))
        needed.update(needs[rid])
        depth = 1 + max((visit(d, path | {rid}) for d in deps), default=-1)
        found[rid], level[rid] = cfg, depth
        return depth

    for cfg in configs:
        visit(cfg, frozenset())
    order = {rid: i for i, rid in enumerate(found)}
    ranked = sorted(found, key=lambda rid: (level[rid], rid not in needed, order[rid]))
    return [PlannedJob(found[rid], needs[rid]) for rid in ranked]
