"""What a command selects (a preset or a grid file, with its flags), and what the store holds of it.

`GridQuery` is the selection of `bench grid / table / report / ls --preset` and of the API. Reading
commands resolve it against the store first (`resolve`): a profile or seed set the user left open is
taken from the store when the store holds exactly one for the target, and a selection that finds no
stored run is an `EmptySelection` (exit code 2) that says what the store does hold and which flags
select it; one that finds only some gets a note.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bench import gridfile
from bench.config import PROFILES, ConfigError, RunConfig, canonical_modalities, modality_key
from bench.gridfile import is_grid_file, load
from bench.plugins import activate
from bench.presets import expand, preset_names

DEFAULT_PROFILE = "quick"
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
DEFAULT_DATASETS: tuple[str, ...] = ("mosi", "mosei")
# Columns whose stored values `holdings` counts (task and model where the store has such columns).
HOLDING_COLUMNS = ("profile", "task", "model", "dataset", "seed")


class EmptySelection(ConfigError):
    """No stored run matches a selection: a usage error (exit code 2) saying what the store holds."""


def as_tuple(value: str | Iterable[Any] | None) -> tuple[str, ...] | None:
    """'a,b' / ['a', 'b'] -> ('a', 'b'), duplicates dropped; None (or nothing) -> None."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(str(v).strip() for v in items if str(v).strip())) or None


def as_seeds(value: str | Iterable[Any] | None) -> tuple[int, ...] | None:
    """'0,1' / [0, 1] -> (0, 1); ConfigError for anything but integers >= 0; None -> None."""
    items = as_tuple(value)
    if items is None:
        return None
    try:
        seeds = tuple(dict.fromkeys(int(s) for s in items))
    except ValueError as err:
        raise ConfigError(f"seeds must be integers >= 0, got {value!r}") from err
    if min(seeds) < 0:
        raise ConfigError(f"seeds must be integers >= 0, got {value!r}")
    return seeds


@dataclass(frozen=True)
class GridQuery:
    """A preset name or a grid file, with the flags that override (profile, datasets, source, seeds) or
    filter (methods, optimizers, modalities, dev_set) it; None: not given."""

    target: str
    profile: str | None = None
    datasets: tuple[str, ...] | None = None
    source: str | None = None
    seeds: tuple[int, ...] | None = None
    methods: tuple[str, ...] | None = None
    optimizers: tuple[str, ...] | None = None
    modalities: tuple[str, ...] | None = None  # one combination per item: "text+vision" or "text,vision"
    dev_set: bool | None = None
    label_rule: str | None = None  # MOSEI's classes: binned (default) or round; applies where it fits
    # Every cell on this task / model (as a grid file's `task` / `model` keys); cells whose method has no
    # form for it or needs a capability the model lacks are left out with a note
    task: str | None = None
    model: str | None = None
    plugins: tuple[str, ...] = ()  # plugin files loaded before anything is read (bench.plugins.activate)

    def __post_init__(self) -> None:
        object.__setattr__(self, "plugins", tuple(str(p) for p in self.plugins or ()))
        activate(list(self.plugins))
        target = str(self.target)
        object.__setattr__(self, "target", target)
        for name in ("datasets", "methods", "optimizers"):
            object.__setattr__(self, name, as_tuple(getattr(self, name)))
        object.__setattr__(self, "seeds", as_seeds(self.seeds))
        mods = self.modalities
        if isinstance(mods, str):  # one string: "text,vision" is one combination, "a+v,t+v" two
            mods = mods.split(",") if "+" in mods else [mods]
        if mods is not None:
            mods = tuple(dict.fromkeys(modality_key(canonical_modalities(m)) for m in mods if str(m).strip()))
        object.__setattr__(self, "modalities", mods or None)
        if self.profile is not None and self.profile not in PROFILES:
            raise ConfigError(f"unknown profile {self.profile!r}; choose from {', '.join(PROFILES)}")

    def replace(self, **changes: Any) -> GridQuery:
        return dataclasses.replace(self, **changes)

    # -- the target ------------------------------------------------------------------------------
    @property
    def is_file(self) -> bool:

        return self.target not in preset_names() and is_grid_file(self.target)

    def spec(self) -> Any:
        """The grid file's GridSpec (None for a preset)."""
        if not self.is_file:
            return None
        path = Path(self.target)
        spec = _load_spec(str(path), path.stat().st_mtime_ns if path.is_file() else 0)
        activate(list(spec.plugins))  # a cached spec: its plugin files may have been edited since (reloaded)
        return spec

    @property
    def name(self) -> str:
        """The preset name, or the grid file's name: what tables and report files are called."""
        spec = self.spec()
        return spec.name if spec is not None else self.target

    # -- resolved values ---------------------------------------------------------------------------
    def resolved_profile(self) -> str:
        spec = self.spec()
        return self.profile or (spec.profile if spec is not None else None) or DEFAULT_PROFILE

    def resolved_seeds(self) -> tuple[int, ...]:
        spec = self.spec()
        return self.seeds or (spec.seeds if spec is not None else None) or DEFAULT_SEEDS

    def resolved_source(self) -> str:
        spec = self.spec()
        return self.source or (spec.source if spec is not None else "auto")

    def leaves_open(self) -> tuple[bool, bool]:
        """Whether neither flag nor file sets (profile, seeds)."""
        spec = self.spec()
        return (self.profile is None and (spec is None or spec.profile is None),
                self.seeds is None and (spec is None or spec.seeds is None))

    def expand_kwargs(self) -> dict[str, Any]:
        """bench.presets.expand keyword arguments (a preset target)."""
        overrides = {key: value for key, value in (("label_rule", self.label_rule), ("task", self.task),
                                                   ("model", self.model)) if value}
        return {"profile": self.resolved_profile(), "datasets": self.datasets or DEFAULT_DATASETS,
                "source": self.resolved_source(), "seeds": self.resolved_seeds(), "methods": self.methods,
                "optimizers": self.optimizers, "modalities": self.modalities, "dev_set": self.dev_set,
                "overrides": overrides or None}

    def cells(self) -> list[Any]:
        """The cells (one configuration over seeds each) of the target, flags applied, every config validated."""
        spec = self.spec()
        if spec is None:
            return expand_preset(self.target, **self.expand_kwargs())

        if self.datasets is not None:
            spec = spec.replace(datasets=gridfile.check_datasets("--dataset", self.datasets))
        if self.source is not None:
            spec = spec.replace(source=self.source)
        spec = gridfile.restrict(spec, self.methods, self.optimizers, self.modalities, self.dev_set)
        spec = gridfile.on_parts(spec, self.task, self.model)
        return list(gridfile.expand(spec, self.resolved_profile(), self.resolved_seeds(), self.label_rule))

    def describe(self, cells: Sequence[Any]) -> str:
        """'profile smoke; datasets synth-mosi; seeds 0,1' for these cells of the query."""
        datasets = ", ".join(dict.fromkeys(c.dataset for c in cells)) or "none"
        return (f"profile {self.resolved_profile()}; datasets {datasets}; "
                f"seeds {','.join(map(str, self.resolved_seeds()))}")

    def flags(self) -> str:
        """The command-line flags that give this selection (what was given or resolved)."""
        parts = []
        if self.profile:
            parts.append(f"--profile {self.profile}")
        if self.datasets:
            parts.append(f"--dataset {','.join(self.datasets)}")
        if self.source:
            parts.append(f"--source {self.source}")
        if self.seeds:
            parts.append(f"--seeds {','.join(map(str, self.seeds))}")
        for flag, values in (("--method", self.methods), ("--optimizer", self.optimizers),
                             ("--modalities", self.modalities), ("--task", (self.task,) if self.task else None),
                             ("--model", (self.model,) if self.model else None)):
            if values:
                parts.append(f"{flag} {','.join(values)}")
        if self.dev_set is not None:
            parts.append("--dev-set" if self.dev_set else "--no-dev-set")
        return " ".join(parts)


@functools.lru_cache(maxsize=16)
def _load_spec(path: str, mtime_ns: int) -> Any:

    return load(path)


# -- what the store holds -----------------------------------------------------------------------------

def seedless_key(cfg: RunConfig) -> str:
    """The run id the config would have with seed 0: the same for every seed of one cell."""
    return cfg.replace(seed=0).run_id


def row_keys(results: pd.DataFrame) -> pd.Series:
    """seedless_key of each stored row ("" where its config does not parse)."""
    def key(text: Any) -> str:
        try:
            return seedless_key(RunConfig.from_dict(json.loads(text)))
        except (TypeError, ValueError):  # ConfigError is a ValueError: a row from another code version
            return ""

    if not len(results) or "config_json" not in results:
        return pd.Series([""] * len(results), index=results.index, dtype=object)
    return results["config_json"].map(key)


def target_rows(query: GridQuery, results: pd.DataFrame) -> pd.DataFrame:
    """The stored rows that are runs of the query's target under any profile, seed and of its datasets."""
    if not len(results):
        return results
    keys = row_keys(results)
    found = pd.Series(False, index=results.index)
    for profile in PROFILES:
        wide = query.replace(profile=profile, seeds=(0,), datasets=None)
        try:
            wanted = {seedless_key(cfg) for cell in wide.cells() for cfg in cell.configs}
        except ConfigError:  # e.g. a window beyond this profile's epochs: no runs of it can exist
            continue
        found |= keys.isin(wanted) & (results["profile"].astype(str) == profile)
    return results[found]


def _sorted_values(values: Iterable[Any]) -> list[Any]:
    items = list(dict.fromkeys(values))
    try:
        return sorted(items)
    except TypeError:
        return sorted(items, key=str)


def holdings(rows: pd.DataFrame, columns: Sequence[str] = HOLDING_COLUMNS) -> str:
    """'profile smoke (50); dataset synth-mosi (50); seed 0 (25), 1 (25)': the values of stored rows."""
    parts = []
    for column in columns:
        if column not in rows or not len(rows):
            continue
        counts = rows[column].astype(object).where(rows[column].notna(), "none").value_counts()
        listed = ", ".join(f"{value} ({int(counts[value])})" for value in _sorted_values(counts.index))
        parts.append(f"{column} {listed}")
    return "; ".join(parts)


def _selected_ids(cells: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys(cfg.run_id for cell in cells for cfg in cell.configs))


def suggest_flags(query: GridQuery, held: pd.DataFrame, outside: pd.DataFrame, cells: Sequence[Any]) -> str:
    """Flags that also select the target's stored runs `outside` the selection (of their most-held profile);
    `held` is every stored run of the target."""
    if not len(outside):
        return ""
    counts = outside["profile"].astype(str).value_counts()
    profile = max(counts.index, key=lambda p: (counts[p], -PROFILES.index(p) if p in PROFILES else 0))
    mine = held[held["profile"].astype(str) == profile]
    parts = []
    if profile != query.resolved_profile():
        parts.append(f"--profile {profile}")
    datasets = _sorted_values(mine["dataset"].astype(str))
    if not set(datasets) <= {c.dataset for c in cells}:
        parts.append(f"--dataset {','.join(datasets)}")
    seeds = _sorted_values(int(s) for s in mine["seed"])
    if tuple(seeds) != query.resolved_seeds():
        parts.append(f"--seeds {','.join(map(str, seeds))}")
    return " ".join(parts)


@dataclass(frozen=True)
class Resolved:
    """A query with what the store decided, the note saying so ("" when nothing was decided), and the
    target's stored rows (any profile and seed)."""

    query: GridQuery
    note: str
    target_rows: pd.DataFrame


def resolve(query: GridQuery, results: pd.DataFrame) -> Resolved:
    """Take the profile and the seed set the user left open from the store, where it holds exactly one."""
    rows = target_rows(query, results)
    open_profile, open_seeds = query.leaves_open()
    chosen: list[str] = []
    if open_profile:
        profiles = _sorted_values(rows["profile"].astype(str)) if len(rows) else []
        if len(profiles) == 1:
            query = query.replace(profile=profiles[0])
            if profiles[0] != DEFAULT_PROFILE:  # the default needs no note
                chosen.append(f"--profile {profiles[0]}")
    if open_seeds and len(rows):
        mine = rows[rows["profile"].astype(str) == query.resolved_profile()]
        seed_sets = {frozenset(int(s) for s in group["seed"]) for _, group in mine.groupby(row_keys(mine))}
        if len(seed_sets) == 1:
            seeds = tuple(sorted(seed_sets.pop()))
            query = query.replace(seeds=seeds)
            if seeds != DEFAULT_SEEDS:
                chosen.append(f"--seeds {','.join(map(str, seeds))}")
    note = ""
    if chosen:
        what = " and ".join(name for name, flag in (("profile", "--profile"), ("seed set", "--seeds"))
                            if any(c.startswith(flag) for c in chosen))
        note = f"note: using {' '.join(chosen)}: the only {what} the store holds for {query.name}"
    return Resolved(query, note, rows)


def check_stored(resolved: Resolved, cells: Sequence[Any], results: pd.DataFrame, runs_dir: Path) -> str:
    """EmptySelection when no run of `cells` is stored; a note when only some are ("" when all are)."""
    query = resolved.query
    wanted = _selected_ids(cells)
    stored = set(results["run_id"]) if len(results) else set()
    found = [rid for rid in wanted if rid in stored]
    held = resolved.target_rows
    outside = held[~held["run_id"].isin(wanted)] if len(held) else held
    flags = suggest_flags(query, held, outside, cells)
    if not found:
        what = (f"the store holds {len(results)} run(s): {holdings(results)}" if len(results)
                else "the store is empty")
        if flags:
            what += f"; {len(outside)} of them are runs of {query.name}: {flags} selects them"
        elif len(results):
            what += f"; none of them is a run of {query.name}"
        raise EmptySelection(f"no stored runs of {query.name} ({query.describe(cells)}) under {runs_dir}; {what}")
    if len(found) == len(wanted):
        return ""
    note = (f"note: {len(wanted) - len(found)} of {len(wanted)} runs of {query.name} ({query.describe(cells)}) "
            f"are not stored under {runs_dir} (shown as —)")
    have = {c.dataset for c in cells if any(cfg.run_id in stored for cfg in c.configs)}
    absent = [d for d in dict.fromkeys(c.dataset for c in cells) if d not in have]
    if absent:
        note += f"; none at all for {', '.join(absent)}"
    if flags:
        return note + (f"; the store holds {len(outside)} other run(s) of {query.name} ({holdings(outside)}): "
                       f"{flags} selects them")
    where = "" if Path(runs_dir) == Path("runs") else f" --runs-dir {runs_dir}"
    return note + f"; `bench grid {query.target} {query.flags()}{where}` trains them"


def print_note(note: str) -> None:
    """One note line on stderr (nothing for "")."""
    if note:
        print(note, file=sys.stderr)


def expand_preset(preset: str, **expand_kwargs: Any) -> list[Any]:
    """The preset's cells (bench.presets.expand), with the CLI's filters and overrides (tests swap it)."""

    return list(expand(preset, **expand_kwargs))
