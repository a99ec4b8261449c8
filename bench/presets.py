"""Named presets: the thesis tables as cells of RunConfigs, with the thesis's hyper-parameters.

A preset expands into `Cell`s, one per table row and dataset; a cell holds one RunConfig per seed.
The hyper-parameters come from the thesis (6.2.5, table 6.2, appendix A) and docs/methods.md. The
shared recipe is here: Adam lr 5e-4 everywhere in the standard setting; SGD (momentum 0.9) lr 1e-2 on
MOSI, 5e-3 on MOSEI. What a method sets beyond it (parameters, modulation window, dev-set ratio_every,
an SGD rate, scheduler or full-profile epochs of its own, tuned learning rates such as table 6.2's)
its own file declares (`Method.thesis`, `Method.thesis_params`, `Method.thesis_lr`; bench/methods/).

Parameters that pick a reading of a method (OGM `form`, `include_biases`, AGM `clip_c`, PMR
`entropy_mu`) are left at the method's defaults, which are the documented choices.

Where the thesis prints a baseline (`Method.is_baseline`: Late Concatenation) beside a configuration
that only changes how a method computes its ratios (dev_set, ema_prototypes, modulate_first_5_epochs,
the lr_8e-5 rows of 6.5a), its figures are those of the standard baseline, so those baseline cells
reuse the standard configs (same run ids): the baseline never carves a dev split.

Table 6.10 takes each method's best configuration: its PMR text+vision rows equal the EMA rows of
table 6.8, its PMR audio+vision rows equal the *standard* (no EMA) rows of table 6.8, and the cells
here follow those figures.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import (
    MODALITIES,
    OPTIMIZERS,
    PROFILE_SETTINGS,
    ConfigError,
    RunConfig,
    canonical_modalities,
    modality_key,
)
from bench.data.registry import dataset_names, is_synthetic
from bench.plan.datasets import dataset_spec, label_rules, recipe_key
from bench.plan.deps import dependencies, order_with_dependencies  # noqa: F401  (re-exported)
from bench.plan.resolve import (  # noqa: F401  (re-exported: the shared recipe and the labels)
    ADAM_LR,
    CONFIG_LABELS,
    LONG_RUN_EPOCHS,
    ON_MODEL,
    SGD_MOMENTUM,
    data_version,
    declared,
    optimizer_lr,
    plan,
)
from bench.plan.rows import AV, AVT, TV, Row
from bench.presets_data import MFEAT_DATASETS, SIMS_DATASETS, mfeat_rows, sims_rows
from bench.presets_msa import msa_regression_rows, ood_rows, seed_system_rows

TABLE_10_METHODS = ("ensemble", "unipre", "concat", "ogm", "ogm_ge", "acc", "agm", "pmr", "reconboost")
TABLE_10_TRIMODAL = ("ensemble", "unipre", "concat", "reconboost")
# Table 6.10 takes each method's best configuration: rows (method, modalities) that differ from the
# standard one. PMR text+vision: the EMA rows of table 6.8 (see the module docstring).
TABLE_10_BEST_FIELDS: dict[tuple[str, tuple[str, ...]], tuple[tuple[str, Any], ...]] = {
    ("pmr", TV): (("method_params", (("ema", 0.1),)),),
}

SOURCES = ("auto", "synth", "real")


@dataclass(frozen=True)
class Cell:
    """One row of a thesis table for one dataset: one configuration over seeds."""

    table: str  # "6.10"
    dataset: str  # the dataset name used in RunConfig ("synth-mosi", "mosi", ...)
    family: str  # "mosi" | "mosei"
    modalities: str  # thesis key "audio+vision" / "text+vision" / "audio+vision+text" / "text"
    method: str  # registry name
    config_label: str  # thesis_tables.csv `config`: "standard", "step_every_4", "dev_set", ...
    optimizer: str
    configs: tuple[RunConfig, ...]  # one per seed

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(cfg.run_id for cfg in self.configs)


_Row = Row  # the rows of every preset (bench.plan.rows)


# -- data sources -----------------------------------------------------------------------------------

def real_data_path(name: str) -> Path | None:
    """Where the real file of the registered dataset `name` would be ($BENCH_DATA_DIR), or None when unset."""
    root = os.environ.get("BENCH_DATA_DIR")
    files = dataset_spec(name).files if name in dataset_names() else {}
    if not root or not files:
        return None
    return Path(root) / (files.get("unaligned") or next(iter(files.values())))


def real_data_available(name: str) -> bool:
    """Whether the real file of dataset `name` is present."""
    path = real_data_path(name)
    return path is not None and path.is_file()


def surrogate_of(name: str) -> str | None:
    """The registered surrogate that imitates the real dataset `name` (synth-<name>), if any."""
    candidate = f"synth-{name}"
    return candidate if candidate in dataset_names() and dataset_spec(candidate).like == name else None


def resolve_dataset(name: str, source: str = "auto") -> str:
    """The RunConfig dataset for a name: "mosi" -> "mosi" or "synth-mosi" by `source`; others unchanged."""
    if source not in SOURCES:
        raise ConfigError(f"unknown data source {source!r}; choose from {', '.join(SOURCES)}")
    surrogate = surrogate_of(name)
    if surrogate is None:
        return name
    if source == "synth" or (source == "auto" and not real_data_available(name)):
        return surrogate
    return name


def resolve_test_dataset(target: str, dataset: str) -> str:
    """A preset row's out-of-domain test set: a family name ("mosei") is the real file when the run trains
    on real data, else the surrogate's domain-shifted twin with the training set's feature sizes
    ("synth-mosei-shift": MOSEI-like, MOSI's sizes); any other name stays as it is."""
    if target not in ("mosi", "mosei"):
        return target
    return f"synth-{target}-shift" if is_synthetic_dataset(dataset) else target


def is_synthetic_dataset(dataset: str) -> bool:
    """Whether a RunConfig dataset name is generated data (its spec says so)."""
    return is_synthetic(dataset)


# -- hyper-parameters: the planning chain (bench.plan.resolve) ---------------------------------------

def thesis_config(dataset: str, method: str, modalities: Iterable[str] | str, *, profile: str = "quick",
                  optimizer: str = "adam", config_label: str = "standard", seed: int = 0,
                  **overrides: Any) -> RunConfig:
    """The RunConfig of one thesis cell and seed; `overrides` (RunConfig fields) go on top (bench.plan.resolve)."""
    return plan(dataset, method, modalities, profile=profile, optimizer=optimizer, config_label=config_label,
                seed=seed, **overrides).config


def method_params(method: str, modalities: Sequence[str]) -> dict[str, Any]:
    """The thesis's hyper-parameters of `method` (standard configuration; its `Method.thesis_params`)."""
    return declared(method).thesis_params(tuple(modalities))


# -- the tables -------------------------------------------------------------------------------------

def _rows_6_2() -> list[_Row]:
    return _grid("6.2", ("unimodal",), (("text",), ("audio",), ("vision",)),
                 [("standard", "adam"), ("step_every_4", "adam")])


def _grid(table: str, methods: Sequence[str], modalities: Sequence[tuple[str, ...]],
          configs: Sequence[tuple[str, str]], families: tuple[str, ...] = ("mosi", "mosei")) -> list[_Row]:
    """Rows for every (modalities, configuration, method); configs are (label, optimizer) pairs."""
    return [_Row(table, mods, method, label, opt, families)
            for mods in modalities for label, opt in configs for method in methods]


def _rows_6_3() -> list[_Row]:
    configs = [("standard", "adam"), ("step_every_4", "adam"), ("standard", "sgd"), ("dev_set", "adam")]
    return _grid("6.3", ("concat", "ogm", "ogm_ge"), (AV, TV), configs)


def _rows_6_4() -> list[_Row]:
    return _grid("6.4", ("concat", "ogm", "acc"), (AV, TV), [("standard", "adam"), ("standard", "sgd")])


def _rows_6_5() -> list[_Row]:
    rows = _grid("6.5", ("concat", "ogm", "ogm_ge"), (TV,), [("lr_8e-5_long_patience", "adam")], ("mosi",))
    rows += _grid("6.5", ("concat", "ogm", "ogm_ge"), (AV, TV), [("100_epochs_no_early_stop_dev_set", "adam")],
                  ("mosi",))
    return rows


def _rows_6_6() -> list[_Row]:
    rows = _grid("6.6", ("concat", "ogm", "ogm_ge"), (AV, TV), [("modulate_first_5_epochs", "adam")], ("mosei",))
    rows += _grid("6.6", ("ogm", "ogm_ge"), (AV, TV), [("modulate_all_epochs", "adam")], ("mosei",))
    return rows


def _rows_6_7() -> list[_Row]:
    configs = [("standard", "adam"), ("standard", "sgd"), ("dev_set", "adam")]
    return _grid("6.7", ("concat", "agm"), (AV, TV), configs)


def _rows_6_8() -> list[_Row]:
    configs = [("standard", "adam"), ("ema_prototypes", "adam"), ("standard", "sgd"), ("dev_set", "adam")]
    return _grid("6.8", ("concat", "pmr"), (AV, TV), configs)


def _rows_6_9() -> list[_Row]:
    return _grid("6.9", ("concat", "reconboost"), (AV, TV, AVT), [("standard", "adam"), ("standard", "sgd")])


def _rows_6_10() -> list[_Row]:
    rows = []
    for mods, methods in ((AV, TABLE_10_METHODS), (TV, TABLE_10_METHODS), (AVT, TABLE_10_TRIMODAL)):
        for method in methods:
            fields = TABLE_10_BEST_FIELDS.get((method, mods), ())
            rows.append(_Row("6.10", mods, method, "standard", "adam", ("mosi", "mosei"), fields))
    return rows


# Issue 16's balancing methods, added to every modality block of table 6.10 in the `table-modern` preset.
MODERN_METHODS = ("mmpareto", "opm", "opm_ge", "cggm", "gblend", "inforeg", "dnr", "mla")
# Methods whose official optimizer changes what the method is under the thesis's Adam, each with a row of
# its own in `table-modern` beside the Adam row: (method, configuration label, optimizer, RunConfig fields).
# MMPareto: Adam's per-coordinate normalisation nearly cancels the gamma = 1.5 magnitude step (update ratio
# 0.999 against 1.499 under SGD); GeWu-Lab/MMPareto_ICML2024 code/MMPareto.py trains with SGD lr 2e-3,
# momentum 0.9 (the recipe's SGD momentum), weight decay 1e-4, and a StepLR it never steps (constant lr).
OFFICIAL_RECIPE_ROWS = (
    ("mmpareto", "official_recipe", "sgd", (("lr", 2e-3), ("weight_decay", 1e-4), ("scheduler", "none"))),
)


def _rows_modern() -> list[_Row]:
    """Table 6.10's cells (Adam, its modality blocks and best configurations) with the modern methods in
    every block, and each OFFICIAL_RECIPE_ROWS method again under its official optimizer, labelled: one
    table for "which balancing method helps on MSA, and by more than seed noise"."""
    rows = []
    for mods, methods in ((AV, TABLE_10_METHODS), (TV, TABLE_10_METHODS), (AVT, TABLE_10_TRIMODAL)):
        for method in (*methods, *MODERN_METHODS):
            fields = TABLE_10_BEST_FIELDS.get((method, mods), ())
            rows.append(_Row("modern", mods, method, "standard", "adam", ("mosi", "mosei"), fields))
        for method, label, optimizer, fields in OFFICIAL_RECIPE_ROWS:
            rows.append(_Row("modern", mods, method, label, optimizer, ("mosi", "mosei"), fields))
    return rows


# GeWu-Lab/BalanceBenchmark's 17 trainers (balancemm/trainer/), UMT and UME counted apart: issue 29's
# `balancebench` preset puts every one of them on table 6.10's cells beside the thesis's baseline.
BALANCEBENCH_METHODS = ("ogm", "agm", "pmr", "reconboost", "mmpareto", "opm", "gblend", "dnr", "mla", "mmcosine",
                        "umt", "ume", "greedy", "cml", "lfm", "smv", "amco", "mbsd")
# The 2025 balancing methods with public code (issue 30): `modern-2025` puts them on table 6.10's cells and
# (those with a regression form) on the MSA regression protocol.
METHODS_2025 = ("arl_recal", "arl_asym", "dgl", "g2d", "aug", "remix", "bss")


def _six_ten_blocks(table: str, methods: Sequence[str]) -> list[_Row]:
    """Table 6.10's modality blocks (Adam, MOSI and MOSEI), the baseline and each method that takes the
    block's modality count, at its standard configuration."""
    from bench.methods import REGISTRY

    rows = []
    for mods in (AV, TV, AVT):
        for method in ("concat", *methods):
            cls = REGISTRY[method]
            if cls.min_modalities <= len(mods) <= cls.max_modalities and "classification" in cls.tasks:
                rows.append(_Row(table, mods, method, "standard", "adam", ("mosi", "mosei")))
    return rows


def _rows_balancebench() -> list[_Row]:
    """Every method of BalanceBenchmark on table 6.10's cells (issue 29)."""
    return _six_ten_blocks("balancebench", BALANCEBENCH_METHODS)


def _rows_modern_2025() -> list[_Row]:
    """The 2025 methods on table 6.10's cells, and those with a regression form (and MMPareto in KAN-MCP's
    regression form) on the MSA regression protocol's three-modality cell beside concat (issue 30)."""
    from bench.methods import REGISTRY

    rows = _six_ten_blocks("modern-2025", METHODS_2025)
    # MMPareto's regression default is KAN-MCP's (ACM MM 2025), the first published regression form of it
    regression = [m for m in ("concat", "mmpareto", *METHODS_2025) if "regression" in REGISTRY[m].tasks]
    rows += [_Row("modern-2025 regression", AVT, m, "standard", "adam", ("mosi", "mosei"), (("task", "regression"),))
             for m in regression]
    return rows


def _rows_all() -> list[_Row]:
    """Every registered method x every modality combination it accepts x adam/sgd x dev set off/on."""
    from bench.methods import REGISTRY, method_sort_key

    combos = [("text",), ("audio",), ("vision",), AV, TV, ("text", "audio"), AVT]
    rows = []
    for name in sorted(REGISTRY, key=method_sort_key):
        method = REGISTRY[name]
        labels = ("standard", "dev_set") if method.has_dev_set_variant else ("standard",)
        # a method without a classification form (e.g. regression only) runs its first task
        task = () if "classification" in method.tasks else (("task", method.tasks[0]),)
        for mods in combos:
            if method.min_modalities <= len(mods) <= method.max_modalities:
                rows += [_Row("all", mods, name, label, opt, fields=task) for opt in OPTIMIZERS for label in labels]
    return rows


def _rows_msa() -> list[_Row]:
    return msa_regression_rows()


def _rows_msa_seeds() -> list[_Row]:
    return seed_system_rows()


def _rows_ood() -> list[_Row]:
    return ood_rows()


PRESETS = {
    "table-6.2": _rows_6_2,
    "table-6.3": _rows_6_3,
    "table-6.4": _rows_6_4,
    "table-6.5": _rows_6_5,
    "table-6.6": _rows_6_6,
    "table-6.7": _rows_6_7,
    "table-6.8": _rows_6_8,
    "table-6.9": _rows_6_9,
    "table-6.10": _rows_6_10,
    "table-modern": _rows_modern,
    "balancebench": _rows_balancebench,
    "modern-2025": _rows_modern_2025,
    "all": _rows_all,
    "msa-regression": _rows_msa,
    "msa-seeds": _rows_msa_seeds,
    "ood": _rows_ood,
    "sims": sims_rows,
    "real-mfeat": mfeat_rows,
}
# The datasets a preset expands over when none is given (default: MOSI and MOSEI, the thesis's columns).
DEFAULT_DATASETS: tuple[str, ...] = ("mosi", "mosei")
PRESET_DATASETS: dict[str, tuple[str, ...]] = {"sims": SIMS_DATASETS, "real-mfeat": MFEAT_DATASETS}


def preset_datasets(preset: str) -> tuple[str, ...]:
    """The datasets `preset` expands over by default."""
    return PRESET_DATASETS.get(preset, DEFAULT_DATASETS)


def preset_names() -> list[str]:
    """The names `expand` accepts."""
    return list(PRESETS)


# -- expansion --------------------------------------------------------------------------------------

def _as_set(values: Iterable[str] | str | None) -> set[str] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    return {str(v).strip() for v in values}


def _modality_keys(values: Iterable[str] | str | None) -> set[str] | None:
    """Filter values as thesis keys: a string is one combination ("text,vision" or "text+vision"),
    a sequence holds one combination per item."""
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    return {modality_key(canonical_modalities(v, MODALITIES)) for v in items}


def _check_choice(kind: str, wanted: set[str] | None, known: Iterable[str]) -> None:
    known = set(known)
    bad = sorted(wanted - known) if wanted else []
    if bad:
        raise ConfigError(f"unknown {kind} {bad[0]!r}; choose from {', '.join(sorted(known))}")


def _seeds(seeds: Sequence[int] | str) -> tuple[int, ...]:
    if isinstance(seeds, str):
        seeds = [s for s in seeds.split(",") if s.strip()]
    try:
        values = tuple(dict.fromkeys(int(s) for s in seeds))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"seeds must be integers, got {seeds!r}") from err
    if not values or any(s < 0 for s in values):
        raise ConfigError(f"seeds must be one or more integers >= 0, got {seeds!r}")
    return values


def _datasets(datasets: Sequence[str] | str, source: str) -> list[tuple[str, str]]:
    """(dataset name for RunConfig, family) for each requested dataset."""
    names = [d.strip() for d in datasets.split(",")] if isinstance(datasets, str) else list(datasets)
    out = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            family = recipe_key(name)
        except ConfigError as err:
            raise ConfigError(f"unknown dataset {name!r} for a preset: {err}") from err
        if family not in preset_families():  # the families some preset has rows for (table columns)
            raise ConfigError(f"dataset {name!r} has no rows in the presets (they cover "
                              f"{', '.join(preset_families())} and their surrogates); train it with a grid "
                              "file or bench run")
        out.append((resolve_dataset(name, source), family))
    if not out:
        raise ConfigError("no dataset given")
    return out


def preset_families() -> tuple[str, ...]:
    """Every dataset family (recipe name) a preset's rows name: mosi, mosei, sims, mfeat."""
    return ("mosi", "mosei", *dict.fromkeys(f for d in PRESET_DATASETS.values() for f in map(recipe_key, d)))


def label_rule_fields(rule: str | None, dataset: str) -> dict[str, str]:
    """{"label_rule": rule} where the dataset has that rule, else {}: a MOSEI rule leaves MOSI (sign) as it is."""
    return {"label_rule": rule} if rule and rule in label_rules(dataset) else {}


def check_label_rule(rule: str | None, datasets: Sequence[str]) -> None:
    """A label rule must apply to at least one of the grid's datasets (it applies to those it fits)."""
    if rule and not any(rule in label_rules(d) for d in datasets):
        raise ConfigError(f"label rule {rule!r} applies to none of {', '.join(dict.fromkeys(datasets))}; choose from "
                          f"{', '.join(sorted({r for d in datasets for r in label_rules(d)}))}")


def _row_cells(row: _Row, dataset: str, family: str, profile: str, seeds: tuple[int, ...],
               overrides: Mapping[str, Any]) -> Cell:
    """The cell of one table row for one dataset: its config for each seed."""
    fields = dict(row.fields)
    params = dict(fields.pop("method_params", ()))
    if fields.get("test_dataset"):
        fields["test_dataset"] = resolve_test_dataset(fields["test_dataset"], dataset)
    extra = dict(overrides)
    params.update(dict(extra.pop("method_params", None) or {}))
    extra.update(label_rule_fields(extra.pop("label_rule", None), dataset))
    configs = tuple(
        thesis_config(dataset, row.method, row.modalities, profile=profile, optimizer=row.optimizer,
                      config_label=row.config_label, seed=seed, method_params=params, **{**fields, **extra})
        for seed in seeds
    )
    return Cell(table=row.table, dataset=dataset, family=family, modalities=modality_key(row.modalities),
                method=row.method, config_label=row.config_label, optimizer=row.optimizer, configs=configs)


def _validate(cells: Sequence[Cell]) -> None:
    """Every config through the method registry's checks (unknown params, modality counts...)."""
    from bench.methods import validate_config

    for cell in cells:
        for cfg in cell.configs:
            try:
                validate_config(cfg)
            except ConfigError as err:
                raise ConfigError(f"table {cell.table} {cell.method} {cell.modalities} {cell.config_label}/"
                                  f"{cell.optimizer} on {cell.dataset}: {err}") from err


def expand(preset: str, profile: str = "quick", datasets: Sequence[str] = ("mosi", "mosei"),
           source: str = "auto", seeds: Sequence[int] = (0, 1, 2, 3, 4), methods: Iterable[str] | None = None,
           optimizers: Iterable[str] | None = None, modalities: Iterable[str] | None = None,
           dev_set: bool | None = None, overrides: Mapping[str, Any] | None = None) -> list[Cell]:
    """The cells of `preset` for these datasets / profile / seeds, filtered, each config validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    if profile not in PROFILE_SETTINGS:
        raise ConfigError(f"unknown profile {profile!r}; choose from {', '.join(PROFILE_SETTINGS)}")
    rows = _on_parts(preset, PRESETS[preset](), overrides or {})
    want_methods, want_opts = _as_set(methods), _as_set(optimizers)
    want_mods = _modality_keys(modalities)
    _check_choice("method", want_methods, {r.method for r in rows})
    _check_choice("optimizer", want_opts, OPTIMIZERS)
    seed_list = _seeds(seeds)
    chosen = _datasets(datasets, source)
    check_label_rule((overrides or {}).get("label_rule"), [dataset for dataset, _ in chosen])
    cells = []
    for dataset, family in chosen:
        for row in rows:
            if family not in row.families or (want_methods and row.method not in want_methods):
                continue
            if (want_opts and row.optimizer not in want_opts) or (
                    want_mods and modality_key(row.modalities) not in want_mods):
                continue
            if dev_set is not None and ("dev_set" in row.config_label) != dev_set:
                continue
            cells.append(_row_cells(row, dataset, family, profile, seed_list, overrides or {}))
    if not cells:
        raise ConfigError(f"preset {preset!r} has no cells for these filters")
    _validate(cells)
    return cells


def compatible_methods(methods: Sequence[str], task: str | None, model: str | None) -> tuple[tuple[str, ...],
                                                                                           list[str]]:
    """The methods with a form for `task` whose needed capabilities `model` offers (None: any), and a reason
    for each other one."""
    from bench.methods import get_method
    from bench.models import model_class

    offered = model_class(model).capabilities if model else None
    kept, notes = [], []
    for name in methods:
        method = get_method(name)
        if task and task not in method.tasks:
            notes.append(f"{name} (no {task} form)")
        elif offered is not None and not method.requires <= offered:
            notes.append(f"{name} (needs {', '.join(sorted(method.requires - offered))})")
        else:
            kept.append(name)
    return tuple(kept), notes


def _on_parts(preset: str, rows: list[_Row], overrides: Mapping[str, Any]) -> list[_Row]:
    """The rows whose method runs on the overrides' task / model (every row when neither is given); a note on
    stderr names the rows left out, and none left is a ConfigError."""
    task, model = overrides.get("task"), overrides.get("model")
    if not task and not model:
        return rows
    methods = tuple(dict.fromkeys(row.method for row in rows))
    kept, notes = compatible_methods(methods, task, model)
    on = " and ".join(f"{kind} {name}" for kind, name in (("task", task), ("model", model)) if name)
    if not kept:
        raise ConfigError(f"preset {preset}: no method of it runs on {on}: {'; '.join(notes)}")
    if notes:
        print(f"note: preset {preset} on {on}: left out {'; '.join(notes)}", file=sys.stderr)
    return [row for row in rows if row.method in kept]


# -- dependencies (bench.plan.deps) ------------------------------------------------------------------

def jobs_with_dependencies(cells: Iterable[Cell]) -> list[RunConfig]:
    """Every config of `cells` plus the runs they depend on, deduplicated by run id, dependencies first."""
    return order_with_dependencies(cfg for cell in cells for cfg in cell.configs)
