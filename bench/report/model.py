"""The table model: a preset's cells joined to the store by run id, with statistics attached.

Everything a renderer prints is decided here (values, ranks, significance, thesis deltas, notes), so
the Markdown, LaTeX, CSV and HTML outputs cannot disagree.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from bench.config import ConfigError
from bench.data.registry import spec_for
from bench.data.types import DataError
from bench.report import labels, reference, stats
from bench.report.metricsets import Metric, TableSpec, cell_metric_set, cell_table_spec, cell_task, table_spec
from bench.report.published import PublishedRow, published_rows

# Per table: rank the best three within each modality block, or across the whole column.
# Table 6.10 shades across every row of a column, as the thesis does; elsewhere a modality block is
# the comparable unit (text+vision always beats audio+vision, so a column-wide rank says nothing).
# The MSA regression table ranks the whole column too, as the MSA papers mark their best results
# (its single-modality blocks hold one row each).
RANK_SCOPE: dict[str, str] = {"6.10": "column", "msa-regression": "column", "msa-seeds": "column",
                              "ood": "column"}
# The published sources a table shows beside ours (None: every source of its datasets). `ood` shows
# none: no published figure is out of distribution.
PUBLISHED_SOURCES: dict[str, tuple[str, ...]] = {"msa-seeds": ("feada", "sati"), "ood": ()}
DEFAULT_RANK_SCOPE = "block"

# The classification task's metrics (the thesis's); every task's come from bench.report.metricsets.
METRICS: tuple[Metric, ...] = table_spec("classification").metrics
# Profiles whose runs may stand beside the thesis's (full-size data, up to 100 epochs) and published
# figures. full: the same protocol. quick: a subset of the data (the dataset spec's profile sizes) and at
# most 12 epochs, so a delta indicates a direction, never a replication; the caption says so. smoke (2
# epochs on a few dozen samples) is never comparable: its columns are left out with one note.
REFERENCE_PROFILES = ("quick", "full")


@dataclass(frozen=True)
class StatsOptions:
    """How a table tests: `test` (stats.TESTS: exact / t / welch) and `correction` (stats.CORRECTIONS)."""

    test: str = "exact"
    correction: str = "holm"

    def __post_init__(self) -> None:
        if self.test not in stats.TESTS:
            raise ConfigError(f"unknown test {self.test!r}; choose from {', '.join(stats.TESTS)}")
        if self.correction not in stats.CORRECTIONS:
            raise ConfigError(f"unknown correction {self.correction!r}; choose from {', '.join(stats.CORRECTIONS)}")


@dataclass
class MetricCell:
    """One number of the table: a metric of one cell over its seeds."""

    summary: stats.Summary
    rank: int = 0  # 1 best .. ; 0 unranked (missing)
    thesis_mean: float = math.nan
    thesis_std: float = math.nan
    p_value: float = math.nan  # against the baseline, uncorrected
    ci_low: float = math.nan  # 95 % t-interval of `difference` (stats.Comparison)
    ci_high: float = math.nan
    verdict: str = ""  # better / tie / worse / n/a (from the corrected p); "" for the baseline or no baseline
    untested: str = ""  # why a cell with runs has no test against its baseline (stats.untestable)
    test: str = ""  # the test against the baseline: exact / t / welch ("" untested)
    n_pairs: int = 0  # seeds paired with the baseline's (0: unpaired)
    difference: float = math.nan  # ours - baseline (paired: the mean per-seed difference)
    p_adjusted: float = math.nan  # p_value corrected over the table's family of tests
    interval_note: str = ""  # stats.TOO_FEW_SEEDS where no interval is given
    next_test: str = ""  # the test against the next-ranked cell (top three only)
    next_p: float = math.nan
    next_p_adjusted: float = math.nan
    shown_rank: int = 0  # the best / second / third mark drawn: rank, where it differs from the next
    tied: bool = False  # a top-three rank not significantly apart from the next (or shared)

    @property
    def delta(self) -> float:
        """Ours minus the thesis (NaN where either is missing)."""
        return self.summary.mean - self.thesis_mean

    @property
    def mark(self) -> str:
        """† / ‡ from the corrected p-value."""
        return stats.significance_mark(self.p_adjusted)


@dataclass
class CellResult:
    """A preset cell joined to its stored runs."""

    cell: Any  # bench.presets.Cell (duck-typed: table, dataset, family, modalities, method, ...)
    run_ids: tuple[str, ...]
    values: dict[str, list[float]]  # metric key -> values of the ok runs, in seed order
    n_expected: int
    n_failed: int
    fingerprints: tuple[str, ...]
    synthetic: bool
    code_versions: tuple[str, ...] = ()  # the git commit of each ok run ("unknown" where none was recorded)
    seeds: tuple[int, ...] = ()  # the seed of each ok run, aligned with `values`
    metrics: dict[str, MetricCell] = field(default_factory=dict)
    baseline: CellResult | None = None
    thesis_note: str = ""
    thesis_table: str = ""  # the thesis table the figure comes from ("" when none)
    note: str = ""  # printed beside the cell's values (e.g. the setting a tuned table chose)

    @property
    def n(self) -> int:
        return len(next(iter(self.values.values()), []))

    @property
    def missing(self) -> bool:
        return self.n == 0


@dataclass
class Row:
    """A table row: one (modality block, method, configuration, optimizer), a cell per dataset."""

    block: str
    method: str
    config_label: str
    optimizer: str
    cells: dict[str, CellResult]  # dataset -> cell (absent: the preset has no such cell)


@dataclass
class Tally:
    """Significance verdicts against the baseline, per metric."""

    counts: dict[str, dict[str, int]]  # metric -> verdict -> count
    by_method: dict[str, dict[str, dict[str, int]]]  # method -> metric -> verdict -> count


@dataclass
class TableModel:
    """One thesis table as built from the store."""

    preset: str
    table: str
    datasets: list[str]
    rows: list[Row]
    rank_scope: str
    seeds_expected: int
    fingerprints: dict[str, tuple[str, ...]]  # dataset -> data fingerprints of its ok runs
    synthetic: dict[str, bool]  # dataset -> surrogate?
    tally: Tally
    thesis_notes: list[str]
    notes: list[str]  # skipped files, baselines taken from outside the preset, ...
    spec: TableSpec = field(default_factory=lambda: table_spec("classification"))  # the task's metrics
    published: list[PublishedRow] = field(default_factory=list)  # reference rows: never ranked or tested
    published_exist: bool = False  # published rows exist for the table's datasets (shown only beside comparable runs)
    options: StatsOptions = field(default_factory=StatsOptions)
    tests: dict[str, int] = field(default_factory=dict)  # "baseline" / "rank" -> tests in the family
    seeds: tuple[int, ...] = ()  # every seed the table's cells request, sorted
    profiles: tuple[str, ...] = ()  # the profiles of the table's runs
    test_sizes: dict[str, int] = field(default_factory=dict)  # dataset -> test split size (0 unknown)
    main_test: str = ""  # the test most baseline comparisons used (the caption's; others name theirs)

    @property
    def reference_comparable(self) -> bool:
        """Whether thesis and published figures may stand beside these runs (REFERENCE_PROFILES)."""
        return bool(self.profiles) and all(p in REFERENCE_PROFILES for p in self.profiles)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return self.spec.metrics

    @property
    def any_synthetic(self) -> bool:
        return any(self.synthetic.values())

    def cells(self) -> Iterable[CellResult]:
        for row in self.rows:
            yield from row.cells.values()


# -- joining --------------------------------------------------------------------------------------

def join_cell(cell: Any, results: pd.DataFrame, metrics: Sequence[Metric] | None = None) -> CellResult:
    """The ok values, failure count and data provenance of one cell's runs (metrics: the cell's task's)."""
    metrics = cell_table_spec(cell).metrics if metrics is None else metrics
    run_ids = tuple(cfg.run_id for cfg in cell.configs)
    rows = results[results["run_id"].isin(run_ids)] if len(results) else results
    rows = rows.drop_duplicates("run_id", keep="last") if len(rows) else rows
    _check_provenance(cell, rows)
    ok = rows[rows["status"] == "ok"] if len(rows) else rows
    order = {rid: i for i, rid in enumerate(run_ids)}
    ok = ok.assign(_order=ok["run_id"].map(order)).sort_values("_order") if len(ok) else ok
    values = {m.key: [float(v) for v in _numbers(ok, m.column)] if len(ok) else [] for m in metrics}
    prints = ok["data_fingerprint"].dropna() if "data_fingerprint" in ok else []
    fingerprints = tuple(sorted({str(f) for f in prints if str(f)}))
    synthetic = labels.is_synthetic_name(cell.dataset) or (
        "synthetic" in ok and any(bool(v) for v in ok["synthetic"].dropna())
    )
    n_failed = int((rows["status"] != "ok").sum()) if len(rows) else 0
    commits = ok["git_commit"].fillna("unknown") if "git_commit" in ok else ["unknown"] * len(ok)
    seed_of = {cfg.run_id: int(cfg.seed) for cfg in cell.configs}
    seeds = tuple(seed_of[rid] for rid in ok["run_id"]) if len(ok) else ()
    return CellResult(cell=cell, run_ids=run_ids, values=values, n_expected=len(run_ids),
                      n_failed=n_failed, fingerprints=fingerprints, synthetic=synthetic,
                      code_versions=tuple(str(c) or "unknown" for c in commits), seeds=seeds)


def _numbers(rows: pd.DataFrame, column: str) -> pd.Series:
    """A metric column as floats (NaN where a row has none)."""
    if column not in rows:
        return pd.Series([math.nan] * len(rows), dtype=float)
    return pd.to_numeric(rows[column], errors="coerce")


def _check_provenance(cell: Any, rows: pd.DataFrame) -> None:
    """Real and surrogate results must never share a cell: every run is of the cell's dataset."""
    if not len(rows):
        return
    datasets = set(rows["dataset"].astype(str)) if "dataset" in rows else {cell.dataset}
    if datasets != {cell.dataset}:
        raise DataError(
            f"cell {cell.method}/{cell.modalities}/{cell.dataset} matched runs of dataset(s) "
            f"{sorted(datasets)}: the store is inconsistent (run ids hash the dataset)"
        )
    flags = {bool(v) for v in rows["synthetic"].dropna()} if "synthetic" in rows else set()
    if len(flags) > 1:
        raise DataError(f"cell {cell.method}/{cell.modalities}/{cell.dataset} mixes real and synthetic runs")
    if flags and flags != {labels.is_synthetic_name(cell.dataset)}:
        # A real dataset name with synthetic data (or the reverse) would mislabel the table.
        raise DataError(f"runs of dataset {cell.dataset!r} are marked synthetic={flags.pop()}")


# -- statistics -----------------------------------------------------------------------------------

def attach_statistics(result: CellResult) -> None:
    """Mean / std / n per metric, and the thesis's figure for the same cell (classification cells only:
    the thesis's figures are of that protocol)."""
    cell = result.cell
    spec = cell_table_spec(cell)
    found = reference.thesis_lookup(cell.table, cell.family, cell.modalities, cell.method,
                                    cell.config_label, cell.optimizer) if spec.thesis else None
    thesis, result.thesis_table = found if found is not None else (None, "")
    for metric in spec.metrics:
        summary = stats.summarise(result.values[metric.key])
        metric_cell = MetricCell(summary=summary)
        if thesis is not None:
            metric_cell.thesis_mean = thesis.mean(metric.key)
            metric_cell.thesis_std = thesis.std(metric.key)
        result.metrics[metric.key] = metric_cell
    result.thesis_note = thesis.note if thesis is not None else ""


def find_baseline(cell: Any, pool: Sequence[CellResult]) -> CellResult | None:
    """The Late Concatenation cell of the same block, dataset and optimizer; same config when present."""
    baseline_method = labels.baseline_method()
    candidates = [
        r for r in pool
        if r.cell.method == baseline_method and r.cell.dataset == cell.dataset
        and r.cell.modalities == cell.modalities and r.cell.optimizer == cell.optimizer
        and cell_task(r.cell) == cell_task(cell)
    ]
    # a grid file's model / task sweep: the baseline on the same model and options, where the pool has it
    same_parts = [r for r in candidates if _parts(r.cell) == _parts(cell)]
    candidates = same_parts or candidates
    for config in dict.fromkeys((cell.config_label, _base_label(cell), "standard")):
        for candidate in candidates:
            if config in (candidate.cell.config_label, _base_label(candidate.cell)):
                return candidate
    return None


def _parts(cell: Any) -> tuple[Any, ...]:
    """The model, its parameters and the task's options of a cell's runs (one grid-file part setting)."""
    cfg = cell.configs[0]
    return cfg.model, cfg.model_params, cfg.task_params


def _base_label(cell: Any) -> str:
    """The configuration a grid file's sweep setting is on top of ("standard"); a preset cell's own label."""
    return str(getattr(cell, "base_label", cell.config_label))


def pair_key(result: CellResult) -> tuple[Any, ...] | None:
    """What two cells' runs of one seed must share to be paired: dataset, modalities, task, model, batch size,
    profile, label rule and data version (then the seed fixes the split, the batch order and, on one model,
    the initial weights). None when a cell's runs disagree among themselves."""
    keys = {(c.dataset, c.modalities, c.task, c.model, c.batch_size, c.profile, c.label_rule, c.data_version)
            for c in result.cell.configs}
    return keys.pop() if len(keys) == 1 else None


def paired_values(a: CellResult, b: CellResult, metric: str) -> list[tuple[float, float]] | None:
    """(a, b) values of each seed both cells ran, where their runs are paired (pair_key equal and the store
    shows the same data: equal data fingerprints); None where they are not paired."""
    key = pair_key(a)
    if key is None or key != pair_key(b) or (a.fingerprints and b.fingerprints and a.fingerprints != b.fingerprints):
        return None
    theirs = dict(zip(b.seeds, b.values[metric], strict=True))
    return [(x, theirs[s]) for s, x in zip(a.seeds, a.values[metric], strict=True)
            if s in theirs and math.isfinite(x) and math.isfinite(theirs[s])]


def compare_cells(a: CellResult, b: CellResult, metric: str, options: StatsOptions) -> stats.Comparison:
    """a against b on one metric: paired where their runs are, else Welch (options.test)."""
    return stats.compare(a.values[metric], b.values[metric], paired_values(a, b, metric), options.test)


def attach_significance(result: CellResult, baseline: CellResult | None,
                        options: StatsOptions | None = None) -> None:
    """Test, uncorrected p-value, difference and its interval of each metric against the baseline cell; the
    verdict from the uncorrected p (`correct` replaces it with the corrected one for a table)."""
    options = options or StatsOptions()
    result.baseline = baseline
    if baseline is None or baseline is result or result.cell.method == labels.baseline_method():
        return
    for metric in cell_table_spec(result.cell).metrics:
        metric_cell = result.metrics[metric.key]
        found = compare_cells(result, baseline, metric.key, options)
        metric_cell.p_value, metric_cell.p_adjusted, metric_cell.test = found.p_value, found.p_value, found.test
        metric_cell.untested = found.untested if result.values[metric.key] else ""
        metric_cell.ci_low, metric_cell.ci_high = found.ci_low, found.ci_high
        metric_cell.difference, metric_cell.n_pairs = found.difference, found.n_pairs
        metric_cell.interval_note = found.interval_note if result.values[metric.key] else ""
        metric_cell.verdict = stats.verdict(found.p_value, found.difference, metric.higher_is_better)


MARKED_RANKS = 3  # best / second / third


def attach_ranks(rows: Sequence[Row], datasets: Sequence[str], scope: str,
                 metrics: Sequence[Metric] = METRICS, options: StatsOptions | None = None) -> None:
    """Dense ranks per dataset column and metric (as printed), within a block or across the column; each of
    the top three (when alone on its rank) is tested against the next-ranked cell (`next_p`), so a mark is
    drawn only where the two differ (`correct` decides with the table's corrected p-values)."""
    options = options or StatsOptions()
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.block if scope == "block" else "", []).append(row)
    for group in groups.values():
        for dataset in datasets:
            present = [row.cells[dataset] for row in group if dataset in row.cells]
            for metric in metrics:
                means = [c.metrics[metric.key].summary.mean for c in present]
                ranks = stats.dense_ranks(means, metric.higher_is_better, metric.decimals)
                for result, rank in zip(present, ranks, strict=True):
                    result.metrics[metric.key].rank = rank
                _test_adjacent_ranks(present, ranks, metric.key, options)


def _test_adjacent_ranks(present: Sequence[CellResult], ranks: Sequence[int], key: str,
                         options: StatsOptions) -> None:
    """Test each top-three cell that holds its rank alone against the first cell of the next rank; cells
    sharing a rank are tied by definition."""
    for rank in range(1, MARKED_RANKS + 1):
        holders = [c for c, r in zip(present, ranks, strict=True) if r == rank]
        following = [c for c, r in zip(present, ranks, strict=True) if r == rank + 1]
        if len(holders) > 1:
            for result in holders:
                result.metrics[key].tied = True
        elif holders and following:
            found = compare_cells(holders[0], following[0], key, options)
            cell = holders[0].metrics[key]
            cell.next_test, cell.next_p, cell.next_p_adjusted = found.test, found.p_value, found.p_value
            cell.tied = True  # until the corrected p says otherwise


def correct(members: Sequence[CellResult], metrics_of: Any, correction: str) -> dict[str, int]:
    """Correct every p-value of one table as one family (tests against the baseline and between adjacent
    ranks), then set verdicts, shown ranks and ties from the corrected p; the family's sizes by kind.

    metrics_of: CellResult -> its metrics (Metric objects, for the direction of 'better')."""
    slots: list[tuple[MetricCell, str, Metric]] = []
    for result in members:
        for metric in metrics_of(result):
            cell = result.metrics[metric.key]
            if not math.isnan(cell.p_value):
                slots.append((cell, "baseline", metric))
            if not math.isnan(cell.next_p):
                slots.append((cell, "rank", metric))
    adjusted = stats.adjust([c.p_value if kind == "baseline" else c.next_p for c, kind, _ in slots], correction)
    for (cell, kind, _), p in zip(slots, adjusted, strict=True):
        if kind == "baseline":
            cell.p_adjusted = p
        else:
            cell.next_p_adjusted = p
    for result in members:
        for metric in metrics_of(result):
            cell = result.metrics[metric.key]
            if cell.verdict:
                cell.verdict = stats.verdict(cell.p_adjusted, cell.difference, metric.higher_is_better)
            separated = not math.isnan(cell.next_p_adjusted) and cell.next_p_adjusted < stats.ALPHA
            cell.shown_rank = cell.rank if separated and 0 < cell.rank <= MARKED_RANKS else 0
            cell.tied = cell.tied and not separated
    kinds = Counter(kind for _, kind, _ in slots)
    return {"baseline": kinds.get("baseline", 0), "rank": kinds.get("rank", 0)}


def tally(rows: Sequence[Row], metrics: Sequence[Metric] = METRICS) -> Tally:
    """Count better / tie / worse / n/a verdicts per metric, overall and per method."""
    verdicts = ("better", "tie", "worse", "n/a")
    counts = {m.key: dict.fromkeys(verdicts, 0) for m in metrics}
    by_method: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        for result in row.cells.values():
            for metric in metrics:
                verdict = result.metrics[metric.key].verdict
                if not verdict:
                    continue
                counts[metric.key][verdict] += 1
                per = by_method.setdefault(row.method, {m.key: dict.fromkeys(verdicts, 0) for m in metrics})
                per[metric.key][verdict] += 1
    return Tally(counts=counts, by_method=by_method)


# -- assembly -------------------------------------------------------------------------------------

def build_models(preset: str, cells: Sequence[Any], results: pd.DataFrame,
                 baseline_cells: Sequence[Any] = (), notes: Sequence[str] = (),
                 options: StatsOptions | None = None) -> list[TableModel]:
    """One TableModel per thesis table among `cells` (a preset like 'all' spans several); `options`: the
    test and the multiplicity correction (default: exact paired test where paired, Holm-Bonferroni)."""
    options = options or StatsOptions()
    joined = [join_cell(cell, results) for cell in cells]
    extra = [join_cell(cell, results) for cell in _outside(baseline_cells, cells)]
    for result in [*joined, *extra]:
        attach_statistics(result)
    models = []
    for table in _tables_in_order(cells):
        members = [r for r in joined if reference.normalise_table(r.cell.table) == table]
        models.append(_build_one(preset, table, members, [*joined, *extra], list(notes), options))
    return models


def _build_one(preset: str, table: str, members: list[CellResult], pool: list[CellResult],
               notes: list[str], options: StatsOptions) -> TableModel:
    spec = _table_spec(table, members)
    outside: set[str] = set()
    baseline_method = labels.baseline_method()
    for result in members:
        # The table's own baseline row first; else one from another table of the preset or the grid.
        baseline = find_baseline(result.cell, members) or find_baseline(result.cell, pool)
        attach_significance(result, baseline, options)
        if baseline is not None and baseline not in members and result.cell.method != baseline_method:
            b = baseline.cell
            outside.add(f"{b.modalities} {b.dataset} {b.config_label}/{b.optimizer}")
    datasets = _datasets_in_order(members)
    rows = _rows(table, members)
    scope = RANK_SCOPE.get(table, DEFAULT_RANK_SCOPE)
    attach_ranks(rows, datasets, scope, spec.metrics, options)
    tests = correct(members, lambda r: spec.metrics, options.correction)
    fingerprints = {d: _fingerprints(members, d) for d in datasets}
    profiles = tuple(sorted({cfg.profile for r in members for cfg in r.cell.configs}))
    comparable = bool(profiles) and all(p in REFERENCE_PROFILES for p in profiles)
    thesis_notes = sorted({f"{labels.method_name(r.cell.method)} (table {r.thesis_table}): {r.thesis_note}"
                           for r in members if r.thesis_note})
    return TableModel(
        preset=preset, table=table, datasets=datasets, rows=rows, rank_scope=scope,
        seeds_expected=max((r.n_expected for r in members), default=0),
        fingerprints=fingerprints,
        synthetic={d: any(r.synthetic for r in members if r.cell.dataset == d) for d in datasets},
        tally=tally(rows, spec.metrics), thesis_notes=thesis_notes,
        notes=[*notes, *_table_notes(table, members, outside, fingerprints, spec), *method_notes(members)],
        spec=spec,
        published=_published(table, members, spec.metrics) if spec.published and comparable else [],
        published_exist=bool(spec.published and _published(table, members, spec.metrics)),
        options=options, tests=tests,
        seeds=tuple(sorted({int(cfg.seed) for r in members for cfg in r.cell.configs})),
        profiles=profiles, test_sizes={d: test_split_size(d, profiles) for d in datasets},
        main_test=_main_test(members),
    )


def _main_test(members: Sequence[CellResult]) -> str:
    """The test most of the table's baseline comparisons used ("" when none was made)."""
    counts = Counter(m.test for r in members for m in r.metrics.values() if m.test)
    return counts.most_common(1)[0][0] if counts else ""


def test_split_size(dataset: str, profiles: Sequence[str]) -> int:
    """The test split's size of a dataset under the table's profile, from the dataset spec's profile sizes
    (what the planner subsets to); 0 where unknown (no spec, or several profiles)."""

    if len(profiles) != 1:
        return 0
    try:
        return int(spec_for(dataset).profile_sizes[profiles[0]][2])
    except (DataError, ConfigError, KeyError, IndexError):
        return 0


def _published(table: str, members: Sequence[CellResult], metrics: Sequence[Metric] = ()) -> list[PublishedRow]:
    """The published reference rows a table shows: its datasets', from the sources it names (all by default),
    that report at least one of the table's metrics."""
    rows = published_rows(r.cell.family for r in members)
    rows = [row for row in rows if not metrics or any(not math.isnan(row.value(m.key)) for m in metrics)]
    sources = PUBLISHED_SOURCES.get(table)
    return rows if sources is None else [row for row in rows if row.source in sources]


def method_notes(members: Sequence[CellResult]) -> list[str]:
    """One note per method in the table that is reconstructed from a paper's text or approximates what the
    harness cannot do (`Method.provenance`, `Method.approximations`)."""
    from bench.methods import REGISTRY

    notes = []
    for method in dict.fromkeys(sorted((r.cell.method for r in members), key=labels.method_rank)):
        cls = REGISTRY.get(method)
        if cls is None or not (cls.provenance or cls.approximations):
            continue
        said = [f"{cls.provenance}" if cls.provenance else "", *cls.approximations]
        notes.append(f"{cls.display_name}: " + "; ".join(part for part in said if part) + ".")
    return notes


def _table_spec(table: str, members: Sequence[CellResult]) -> TableSpec:
    """The metric set of a table: its cells' task (one table shows one task)."""
    tasks = sorted({cell_task(r.cell) for r in members})
    if len(tasks) > 1:
        raise DataError(f"table {table} mixes tasks {', '.join(tasks)}: one table shows one task's metrics")
    sets = sorted({cell_metric_set(r.cell) for r in members})
    if len(sets) > 1:
        raise DataError(f"table {table} mixes metric sets {', '.join(sets)}: one table shows one set's metrics")
    return table_spec(tasks[0] if tasks else "classification", sets[0] if sets else "mmsa")


def _table_notes(table: str, members: Sequence[CellResult], outside_baselines: set[str],
                 fingerprints: dict[str, tuple[str, ...]], spec: TableSpec | None = None) -> list[str]:
    """Caption notes: baselines from outside the table, mixed data versions, borrowed thesis figures."""
    spec = spec or table_spec("classification")
    notes = []
    if outside_baselines:
        notes.append("Baseline cells not shown in this table (taken from elsewhere in the grid): "
                     + "; ".join(sorted(outside_baselines)) + ".")
    mixed = [f"{d} ({len(p)} data fingerprints)" for d, p in fingerprints.items() if len(p) > 1]
    if mixed:
        notes.append("WARNING: runs of different data versions are combined: " + ", ".join(mixed) + ".")
    untested = _untested_note(members, spec.metrics, spec.untested_per_cell)
    if untested:
        notes.append(untested)
    versions = _code_versions_note(members)
    if versions:
        notes.append(versions)
    borrowed = _borrowed_thesis(table, members)
    if borrowed:
        notes.append(borrowed)
    return notes


def _untested_note(members: Sequence[CellResult], metrics: Sequence[Metric] = METRICS,
                   per_cell: bool = False) -> str:
    """A note naming the cells with runs that have no significance test, and why (per_cell: a cell none of
    whose metrics is tested, for one reason, is named once)."""
    by_reason: dict[str, list[str]] = {}
    for result in members:
        c = result.cell
        name = f"{labels.method_name(c.method)} {c.modalities} {c.dataset} {c.config_label}/{c.optimizer}"
        reasons = [result.metrics[metric.key].untested for metric in metrics]
        if per_cell and len(set(reasons)) == 1 and reasons[0]:
            by_reason.setdefault(reasons[0], []).append(f"{name} (every metric)")
            continue
        for metric, reason in zip(metrics, reasons, strict=True):
            if reason:
                by_reason.setdefault(reason, []).append(f"{name} {metric.name}")
    if not by_reason:
        return ""
    parts = [f"{reason}: {', '.join(cells)}" for reason, cells in by_reason.items()]
    return "Not tested against the baseline (no † / ‡, counted not testable) — " + "; ".join(parts) + "."


def _code_versions_note(members: Sequence[CellResult]) -> str:
    """A note when the table's runs were trained by more than one code version (git commit)."""
    counts = Counter(commit for result in members for commit in result.code_versions)
    if len(counts) < 2:
        return ""
    listed = ", ".join(f"{commit[:12]} ({n} runs)" for commit, n in counts.most_common())
    return (f"Runs trained by {len(counts)} code versions are combined (git commits: {listed}); a change to "
            "the training code between them can change numbers. A fresh --runs-dir trains every run with one.")


def _borrowed_thesis(table: str, members: Sequence[CellResult]) -> str:
    """A note naming the cells whose thesis figure comes from another table."""
    found: dict[str, set[str]] = {}
    for result in members:
        if result.thesis_table and result.thesis_table != table:
            found.setdefault(result.thesis_table, set()).add(labels.method_name(result.cell.method))
    if not found:
        return ""
    parts = [f"table {t} ({', '.join(sorted(m))})" for t, m in sorted(found.items())]
    return ("Thesis figures for rows this table does not print are taken from the same configuration in "
            + "; ".join(parts) + ".")


def _outside(candidates: Sequence[Any], cells: Sequence[Any]) -> list[Any]:
    """Baseline candidates that are not already among the preset's cells (by run ids)."""
    known = {tuple(cfg.run_id for cfg in c.configs) for c in cells}
    seen: set[tuple[str, ...]] = set()
    out = []
    baseline_method = labels.baseline_method()
    for cell in candidates:
        ids = tuple(cfg.run_id for cfg in cell.configs)
        if cell.method == baseline_method and ids not in known and ids not in seen:
            seen.add(ids)
            out.append(cell)
    return out


def _tables_in_order(cells: Sequence[Any]) -> list[str]:
    tables = {reference.normalise_table(c.table) for c in cells}
    return sorted(tables, key=lambda t: tuple(int(p) if p.isdigit() else 0 for p in t.split(".")))


def _datasets_in_order(members: Sequence[CellResult]) -> list[str]:
    """In the registry's order of their root specs (MOSI before MOSEI, as the thesis prints them), then
    in preset order."""
    seen: dict[str, None] = {}
    for result in members:
        seen.setdefault(result.cell.dataset, None)
    return sorted(seen, key=lambda d: (labels.dataset_rank(d), list(seen).index(d)))


def _rows(table: str, members: Sequence[CellResult]) -> list[Row]:
    """Rows keyed by (block, method, config, optimizer), sorted as the thesis prints them."""
    rows: dict[tuple[str, str, str, str], Row] = {}
    for result in members:
        c = result.cell
        key = (c.modalities, c.method, c.config_label, c.optimizer)
        row = rows.setdefault(key, Row(block=c.modalities, method=c.method, config_label=c.config_label,
                                       optimizer=c.optimizer, cells={}))
        if c.dataset in row.cells:
            raise DataError(f"preset lists cell {key} for {c.dataset} twice")
        row.cells[c.dataset] = result
    preset_order = list(rows)
    thesis_order = reference.table_order(table)
    blocks = _first_seen([k[0] for k in thesis_order], labels.BLOCK_ORDER, [k[0] for k in preset_order])
    groups = _first_seen([(k[2], k[3]) for k in thesis_order], [(k[2], k[3]) for k in preset_order])
    # 6.10 (and the 'all' grid) list methods per block; the other tables group rows by configuration.
    methods_first = table in ("6.10", "all")

    def sort_key(key: tuple[str, str, str, str]) -> tuple[Any, ...]:
        block = blocks.index(key[0])
        method = labels.method_rank(key[1])
        group = groups.index((key[2], key[3]))
        inner = (method, group) if methods_first else (group, method)
        return (block, *inner, preset_order.index(key))

    return [rows[key] for key in sorted(rows, key=sort_key)]


def _first_seen(*sequences: Sequence[Any]) -> list[Any]:
    """The distinct items of the sequences, in order of first appearance."""
    return list(dict.fromkeys(item for sequence in sequences for item in sequence))


def _fingerprints(members: Sequence[CellResult], dataset: str) -> tuple[str, ...]:
    found: set[str] = set()
    for result in members:
        if result.cell.dataset == dataset:
            found.update(result.fingerprints)
    return tuple(sorted(found))
