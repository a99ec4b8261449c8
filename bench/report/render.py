"""Render table models as Markdown, LaTeX (booktabs), tidy CSV and standalone HTML."""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bench.config import ConfigError
from bench.report import labels, stats
from bench.report.model import METRICS, CellResult, MetricCell, Row, TableModel, paired_values
from bench.report.published import ENCODER_NOTE, PublishedRow

FORMATS = ("md", "latex", "csv", "html")
MISSING = "—"  # no successful run for a cell the preset asks for
NOT_AVAILABLE = "n/a"
SYNTHETIC_NOTICE = "SYNTHETIC SURROGATE — not MOSI/MOSEI results"
FINGERPRINT_CHARS = 12
TABLE_TOPICS: dict[str, str] = {
    "6.2": "Unimodal models under two optimization frequencies",
    "6.3": "OGM and OGM-GE under different training configurations",
    "6.4": "ACC (accelerating the weak modality) beside OGM and the baseline",
    "6.5": "OGM and OGM-GE with prolonged training (CMU-MOSI)",
    "6.6": "OGM and OGM-GE with a prolonged modulation window (CMU-MOSEI)",
    "6.7": "AGM under different training configurations",
    "6.8": "PMR under different training configurations",
    "6.9": "ReconBoost against late concatenation, Adam and SGD",
    "6.10": "Methods and baselines across modality combinations",
    "all": "Every registered method, modality combination, optimizer and dev-set setting",
    "msa-regression": "Regression (the MMSA protocol): methods and baselines across modality combinations",
    "msa-seeds": "The seed papers' systems (FeaDA, SATI) and their ablations beside concat, regression",
    "ood": "Out of distribution: trained on one dataset, tested on the other as well, regression",
}
# HTML shading of best / second / third, dark to light as the thesis's colour code.
SHADES = {1: "#8c8c8c", 2: "#bdbdbd", 3: "#e3e3e3"}


@dataclass(frozen=True)
class View:
    """What a rendering shows beyond the values: the thesis's columns, each cell's difference to the baseline
    with its interval (effects; HTML and CSV always carry it), each seed's value (per_seed)."""

    vs_thesis: bool = False
    effects: bool = False
    per_seed: bool = False


def as_view(view: View | bool) -> View:
    """A View from a View or the old vs_thesis flag."""
    return view if isinstance(view, View) else View(vs_thesis=bool(view))


@dataclass(frozen=True)
class Column:
    """A value column: one metric of one dataset, ours or the thesis's or the delta."""

    dataset: str
    metric: str  # "acc" / "loss" / "mae" ...
    kind: str  # "ours" / "thesis" / "delta"
    label: str = ""  # the metric's column label (default: the classification metric's)
    decimals: int = 2

    def header(self) -> str:
        label = self.label or next(m.label for m in METRICS if m.key == self.metric)
        return {"ours": label, "thesis": f"Thesis {label.split(' (')[0].lower()}",
                "delta": f"Δ {label.split(' (')[0].lower()}"}[self.kind]


@dataclass(frozen=True)
class Text:
    """A rendered cell: the core text, its rank style, significance mark, trailing note, tooltip."""

    value: str
    rank: int = 0
    mark: str = ""
    suffix: str = ""
    tooltip: str = ""
    effect: str = ""  # the difference to the baseline with its interval ("" none)
    per_seed: str = ""  # each seed's value, in the table's seed order ("" not asked)


# -- shared content -------------------------------------------------------------------------------

def columns(model: TableModel, vs_thesis: bool | View) -> list[Column]:
    """Value columns in order: per dataset, per metric of the task, ours (then thesis and delta, where the
    thesis's figures apply to the task)."""
    kinds = ("ours", "thesis", "delta") if _vs_thesis(model, vs_thesis) else ("ours",)
    return [Column(d, m.key, k, m.label, m.decimals) for d in model.datasets for m in model.metrics for k in kinds]


def _vs_thesis(model: TableModel, vs_thesis: bool | View) -> bool:
    """Thesis columns only for a task the thesis's figures are of (classification), beside runs of a
    comparable profile (bench.report.model.REFERENCE_PROFILES)."""
    return as_view(vs_thesis).vs_thesis and model.spec.thesis and model.reference_comparable


def show_config(model: TableModel) -> bool:
    """Whether rows need a configuration column (more than one configuration / optimizer)."""
    return len({(r.config_label, r.optimizer) for r in model.rows}) > 1


def cell_text(result: CellResult | None, column: Column, model: TableModel | None = None,
              view: View | None = None) -> Text:
    """The text of one value column for one row (model and view: the per-seed values and the test label)."""
    if result is None:
        return Text("")  # the preset has no such cell: nothing was asked, nothing is missing
    metric = result.metrics[column.metric]
    if column.kind == "thesis":
        return Text(_mean_std(metric.thesis_mean, metric.thesis_std))
    if column.kind == "delta":
        return Text(NOT_AVAILABLE if math.isnan(metric.delta) else f"{metric.delta:+.2f}")
    return _ours_text(result, metric, column.decimals, model, view or View())


TIED = "≈"  # a top-three mean not significantly apart from the next-ranked one


def _ours_text(result: CellResult, metric: MetricCell, decimals: int = 2, model: TableModel | None = None,
               view: View = View()) -> Text:
    notes = []
    if 0 < result.n < result.n_expected:
        notes.append(f"n={result.n}/{result.n_expected}")
    if result.n_failed:
        notes.append(f"{result.n_failed} failed")
    main_test = main_test_of(model) if model is not None else ""
    if metric.test and metric.test != main_test:
        notes.append(stats.TEST_NAMES[metric.test])  # the caption names the table's usual test
    if result.note and metric is next(iter(result.metrics.values()), None):  # once per cell, beside its first
        notes.append(result.note)
    suffix = f" ({', '.join(notes)})" if notes else ""
    if result.missing:
        return Text(MISSING, suffix=suffix)
    summary = metric.summary
    seeds = per_seed_text(result, metric, model.seeds if model is not None else result.seeds, decimals) \
        if view.per_seed else ""
    return Text(_mean_std(summary.mean, summary.std, decimals), rank=metric.shown_rank,
                mark=(TIED if metric.tied else "") + metric.mark, suffix=suffix,
                tooltip=_tooltip(result, metric, decimals, model), effect=effect_text(metric, decimals),
                per_seed=seeds)


def effect_text(metric: MetricCell, decimals: int = 2) -> str:
    """'vs base +1.20 [+0.40, +2.00]': the difference to the baseline and its 95 % interval ('' when untested)."""
    if math.isnan(metric.difference) or not metric.verdict:
        return ""
    if metric.interval_note:
        return f"vs base {metric.difference:+.{decimals}f} ({metric.interval_note})"
    return (f"vs base {metric.difference:+.{decimals}f} [{metric.ci_low:+.{decimals}f}, "
            f"{metric.ci_high:+.{decimals}f}]")


def per_seed_text(result: CellResult, metric: MetricCell, seeds: Sequence[int], decimals: int = 2) -> str:
    """'[50.00, 51.00, —, 53.00, 54.00]': each requested seed's value in `seeds` order, — where it has none."""
    key = next(k for k, m in result.metrics.items() if m is metric)
    by_seed = dict(zip(result.seeds, result.values[key], strict=True))
    shown = [f"{by_seed[s]:.{decimals}f}" if s in by_seed and math.isfinite(by_seed[s]) else MISSING
             for s in seeds if s in by_seed or any(cfg.seed == s for cfg in result.cell.configs)]
    return "[" + ", ".join(shown) + "]"


def _tooltip(result: CellResult, metric: MetricCell, decimals: int, model: TableModel | None) -> str:
    """The HTML tooltip: the test against the baseline, both p-values, the interval; the seeds."""
    parts = []
    if metric.test:
        paired = f", {metric.n_pairs} pairs" if metric.n_pairs else ""
        correction = stats.CORRECTION_NAMES[model.options.correction] if model is not None else "corrected"
        interval = (metric.interval_note if metric.interval_note else
                    f"95% t-interval [{metric.ci_low:+.{decimals}f}, {metric.ci_high:+.{decimals}f}]")
        parts.append(f"vs baseline ({stats.TEST_NAMES[metric.test]}{paired}): difference "
                     f"{metric.difference:+.{decimals}f}, {interval}; p={metric.p_value:.3g}, "
                     f"{correction} p={metric.p_adjusted:.3g}")
    if metric.next_test:
        parts.append(f"vs the next-ranked cell ({stats.TEST_NAMES[metric.next_test]}): p={metric.next_p:.3g}, "
                     f"corrected p={metric.next_p_adjusted:.3g}")
    if result.seeds:
        parts.append("seeds " + ", ".join(str(s) for s in result.seeds))
    return "; ".join(parts)


def main_test_of(model: TableModel) -> str:
    """The test most of the table's baseline comparisons used ("" when none was made)."""
    return model.main_test


def _mean_std(mean: float, std: float, decimals: int = 2) -> str:
    if math.isnan(mean):
        return NOT_AVAILABLE
    return f"{mean:.{decimals}f} ± {NOT_AVAILABLE if math.isnan(std) else f'{std:.{decimals}f}'}"


def title(model: TableModel) -> str:
    """Table title; surrogate data says so, with its fingerprints."""
    topic = TABLE_TOPICS.get(model.table, "Results")
    name = f"Table {model.table}" if model.table[:1].isdigit() else f"Grid '{model.table}'"
    text = f"{name} ({model.preset}): {topic}"
    synthetic = [d for d in model.datasets if model.synthetic[d]]
    if synthetic:
        text = f"{SYNTHETIC_NOTICE} — {text} [data: {_fingerprint_list(model, synthetic)}]"
    return text


def caption(model: TableModel, vs_thesis: bool | View) -> list[str]:
    """Caption sentences: data provenance, test split, cell format, ranking, significance, power, summary,
    notes."""
    view = as_view(vs_thesis)
    lines = [_provenance(model), test_split_line(model), _cell_format(model), _ranking(model),
             _significance(model), power_line(model), summary_line(model)]
    by_method = _by_method(model)
    if by_method:
        lines.append(by_method)
    if view.effects:
        lines.append("vs base: the cell's difference to its baseline (paired: the mean per-seed difference) with "
                     f"its 95 % t-interval, or ({stats.TOO_FEW_SEEDS}) below {stats.MIN_SEEDS_INTERVAL} seeds.")
    if view.per_seed:
        lines.append(f"Per seed: the values in brackets are the seeds {', '.join(str(s) for s in model.seeds)} in "
                     f"that order; {MISSING}: that seed has no successful run.")
    if _vs_thesis(model, view):
        lines.append("Thesis: the figure the thesis prints for the same cell (real data, 5 seeds); "
                     f"Δ = ours − thesis; {NOT_AVAILABLE}: the thesis has no such cell.")
        if "quick" in model.profiles:
            lines.append("The thesis trained on the full-size data for up to 100 epochs; quick runs train on a "
                         "subset (the dataset spec's profile sizes) for at most 12 epochs and test on a smaller "
                         "test split: a thesis delta shows a direction, not a replication.")
    reference = reference_note(model, view)
    if reference:
        lines.append(reference)
    lines += [f"Thesis note — {note}" for note in model.thesis_notes]
    lines += model.notes
    return lines


def _provenance(model: TableModel) -> str:
    synthetic = [d for d in model.datasets if model.synthetic[d]]
    real = [d for d in model.datasets if not model.synthetic[d]]
    parts = []
    if synthetic:
        parts.append(f"{SYNTHETIC_NOTICE}: columns {', '.join(synthetic)} come from the generated surrogate "
                     f"(data fingerprints: {_fingerprint_list(model, synthetic)}).")
    if real:
        sources = "; ".join(f"{d}: {labels.dataset_name(d)}" for d in real)
        parts.append(f"Real data: {', '.join(real)} (data fingerprints: {_fingerprint_list(model, real)}; "
                     f"source: {sources}).")
    return " ".join(parts)


def _fingerprint_list(model: TableModel, datasets: Sequence[str]) -> str:
    items = []
    for dataset in datasets:
        prints = model.fingerprints.get(dataset, ())
        shown = ", ".join(p[:FINGERPRINT_CHARS] for p in prints) if prints else "no runs yet"
        items.append(f"{dataset} {shown}")
    return "; ".join(items)


def _cell_format(model: TableModel) -> str:
    spec = model.spec
    return (f"Cells: mean ± {STD_CONVENTION}, {spec.decimals_text}; "
            f"{model.seeds_expected} seeds requested; (n=k/{model.seeds_expected}) marks a cell with "
            f"fewer successful seeds, 'k failed' counts failed runs (never averaged in); "
            f"{MISSING}: missing, no successful run; {NOT_AVAILABLE}: undefined (std of one seed). "
            f"{spec.units_text}").rstrip()


def test_split_line(model: TableModel) -> str:
    """The test split's size per dataset, and the step one sample moves a percentage by."""
    sizes = [(d, n) for d, n in model.test_sizes.items() if n]
    if not sizes:
        return ""
    profile = f" ({model.profiles[0]} profile)" if len(model.profiles) == 1 else ""
    parts = [f"{d} {n} samples (one sample = {100.0 / n:.2f} points of a percentage)" for d, n in sizes]
    return f"Test split{profile}: " + "; ".join(parts) + "."


def reference_note(model: TableModel, view: View) -> str:
    """One note where thesis or published figures are left out because the runs are not comparable."""
    if model.reference_comparable:
        return ""
    left = (["thesis figures and deltas"] if view.vs_thesis and model.spec.thesis else []) + \
        (["published figures"] if model.published_exist else [])
    if not left:
        return ""
    return (f"The {' and the '.join(left)} are left out: these are {'/'.join(model.profiles) or 'no'} runs, "
            "not comparable with full-size training (smoke: 2 epochs on a few dozen samples; comparable "
            "profiles: quick, with a caveat, and full).")


def _ranking(model: TableModel) -> str:
    thesis = ", as the thesis shades table 6.10" if model.table == "6.10" else ""
    scope = (f"across all rows of each column{thesis}"
             if model.rank_scope == "column" else "within each modality block of each column")
    return ("Bold / underline / italic (HTML: dark / medium / light shading) mark the best / second / "
            f"third mean per column ({model.spec.directions_text}), ranked {scope}, only where it differs "
            f"significantly (corrected p < {stats.ALPHA:g}) from the next-ranked mean; {TIED}: a top-three "
            "mean tied with the next (not significantly apart, or the same value).")


def _significance(model: TableModel) -> str:
    tested = any(m.verdict for r in model.cells() for m in r.metrics.values())
    if not tested:
        return ("Significance: no Late Concatenation (concat) baseline cell matches these rows, so none "
                "is tested.")
    main = main_test_of(model)
    return (f"† p < {stats.ALPHA:g}, ‡ p < {stats.STRONG_ALPHA:g} ({family_text(model)}): two-sided "
            f"{_test_sentence(main)} against Late Concatenation (concat) of the same modality block, dataset "
            "and optimizer, in the same configuration where one exists (else its standard configuration); "
            "a cell tested otherwise names its test. Paired: both cells ran the seed on the same data, model, "
            "batch size and profile (same split, batch order and initial weights); else Welch's t-test "
            f"(unequal variances). {_exact_limit(model, main)}The CSV and the HTML add the difference to the "
            "baseline with its 95 % t-interval (paired: of the mean per-seed difference; else "
            f"Welch-Satterthwaite; {stats.TOO_FEW_SEEDS} below {stats.MIN_SEEDS_INTERVAL} seeds) and both the "
            "uncorrected and the corrected p.")


def family_text(model: TableModel) -> str:
    """'Holm-Bonferroni correction over the table's 12 tests (9 against the baseline, 3 between ranks)'."""
    total = sum(model.tests.values())
    name = stats.CORRECTION_NAMES[model.options.correction]
    if model.options.correction == "none":
        return f"no correction for multiplicity ({total} tests)"
    return (f"{name} correction over the table's {total} tests ({model.tests.get('baseline', 0)} against the "
            f"baseline, {model.tests.get('rank', 0)} between adjacent ranks)")


def _test_sentence(test: str) -> str:
    return {"exact": "exact sign-flip permutation test of the mean per-seed difference (paired runs; it "
                     "assumes only differences symmetric about 0, where a t-test assumes them normal)",
            "t": "paired t-test of the per-seed differences (assumes normal differences)",
            "welch": "Welch's t-test over seeds"}.get(test, "test over seeds")


def _exact_limit(model: TableModel, main: str) -> str:
    """What the exact test's granularity means for this table's seed count."""
    if main != "exact":
        return ""
    pairs = max((m.n_pairs for r in model.cells() for m in r.metrics.values() if m.test == "exact"), default=0)
    smallest = stats.smallest_exact_p(pairs)
    if smallest < stats.ALPHA:
        return (f"With {pairs} pairs the exact test's smallest p is {smallest:.3g} (2 / 2^{pairs}). ")
    return (f"With {pairs} pairs the exact test's smallest p is {smallest:.3g} (2 / 2^{pairs}), so no difference "
            f"can reach p < {stats.ALPHA:g} however large: {pairs} seeds cannot show significance without "
            "assuming normal differences (--test t does; more seeds do not need to). ")


def power_line(model: TableModel) -> str:
    """The smallest difference the table's seeds detect with 80 % power, per metric, at the typical std."""
    n = len(model.seeds)
    if not any(m.test for r in model.cells() for m in r.metrics.values()):
        return ""
    main = main_test_of(model)
    paired = main in ("exact", "t")
    parts = []
    for metric in model.metrics:
        std, kind = typical_std(model, metric.key, paired)
        if math.isnan(std) or std == 0:  # no spread seen: nothing to size a difference by
            continue
        found = stats.detectable_difference(n, std, paired)
        if math.isnan(found):
            continue
        total = sum(model.tests.values())
        strict = math.nan
        if model.options.correction != "none" and total > 1:
            strict = stats.detectable_difference(n, std, paired, alpha=stats.ALPHA / total)
        after = "" if math.isnan(strict) else (
            f"; {strict:.{metric.decimals}f} at the correction's first step, α = {stats.ALPHA:g}/{total}")
        parts.append(f"{metric.name} {found:.{metric.decimals}f} ({kind} {std:.{metric.decimals}f}{after})")
    if not parts:
        return ""
    test = "paired t-test" if paired else "Welch/two-sample t-test"
    caveat = (" The exact test has less power than this paired t figure (none at all where its smallest p "
              "exceeds the level).") if main == "exact" else ""
    return (f"Power: with {n} seeds a two-sided {test} at α = {stats.ALPHA:g} detects with "
            f"{stats.POWER:.0%} probability a true difference of at least " + "; ".join(parts) + "."
            + caveat + f" Cells with fewer than {stats.MIN_SEEDS_INTERVAL} seeds give no interval "
            f"({stats.TOO_FEW_SEEDS}).")


def typical_std(model: TableModel, key: str, paired: bool) -> tuple[float, str]:
    """The median std of the table's cells for a metric, or (paired) of the per-seed differences to the
    baseline where those exist; with what it is."""
    if paired:
        spreads = []
        for result in model.cells():
            cell = result.metrics.get(key)
            if cell is None or not cell.n_pairs or result.baseline is None:
                continue
            pairs = model_pairs(result, key)
            if len(pairs) >= 2:
                spreads.append(float(np.std([x - y for x, y in pairs], ddof=1)))
        if spreads:
            return float(np.median(spreads)), "median std of the per-seed differences"
    stds = [r.metrics[key].summary.std for r in model.cells()
            if key in r.metrics and not math.isnan(r.metrics[key].summary.std)]
    return (float(np.median(stds)), "median cell std") if stds else (math.nan, "")


def model_pairs(result: CellResult, key: str) -> list[tuple[float, float]]:
    """The (ours, baseline) values of each shared seed of a paired cell."""
    if result.baseline is None:
        return []
    return paired_values(result, result.baseline, key) or []


def summary_line(model: TableModel) -> str:
    """How many cells beat the baseline significantly, tie with it, or lose, per metric (corrected p)."""
    parts = []
    for metric in model.metrics:
        c = model.tally.counts[metric.key]
        parts.append(f"{metric.name} {c['better']} better, {c['tie']} not "
                     f"significant, {c['worse']} worse, {c['n/a']} not testable")
    corrected = "corrected " if model.options.correction != "none" else ""
    return (f"Summary against the baseline ({corrected}p < {stats.ALPHA:g}, {family_text(model)}): "
            + "; ".join(parts) + ".")


def _by_method(model: TableModel) -> str:
    items = []
    for method in sorted(model.tally.by_method, key=labels.method_rank):
        per = model.tally.by_method[method]
        counts = " ".join(f"{metric.key} {per[metric.key]['better']}/{per[metric.key]['tie']}/"
                          f"{per[metric.key]['worse']}" for metric in model.metrics)
        items.append(f"{labels.method_name(method)} {counts}")
    return "By method (better/not significant/worse): " + "; ".join(items) + "." if items else ""


def body(model: TableModel, vs_thesis: bool | View) -> list[tuple[str, list[tuple[Row, str, list[Text]]]]]:
    """Blocks of rows: (block name, [(row, configuration label or '', value texts)])."""
    view = as_view(vs_thesis)
    cols = columns(model, view)
    blocks: list[tuple[str, list[tuple[Row, str, list[Text]]]]] = []
    previous_group: tuple[str, str, str] | None = None
    for row in model.rows:
        if not blocks or blocks[-1][0] != labels.block_name(row.block):
            blocks.append((labels.block_name(row.block), []))
        group = (row.block, row.config_label, row.optimizer)
        config = labels.config_name(row.config_label, row.optimizer) if group != previous_group else ""
        previous_group = group
        texts = [cell_text(row.cells.get(c.dataset), c, model, view) for c in cols]
        blocks[-1][1].append((row, config, texts))
    return blocks


# -- published reference rows (an unranked block under a table) -----------------------------------

NOT_REPORTED = "n/r"  # a published row's metric its source does not give
PUBLISHED_MODALITIES = "audio+vision+text"  # every published system uses all three


def published_title(model: TableModel) -> str:
    """The heading of the published block: real data, what differs (the fine-tuned encoder, the protocol),
    unranked."""
    names = " / ".join(dict.fromkeys(labels.dataset_name(r.dataset) for r in model.published))
    contexts = "; ".join(dict.fromkeys(r.context for r in model.published))
    return (f"Published results on the real {names} ({contexts}), by source — reference rows, "
            "never ranked or tested against the runs above")


def published_caption(model: TableModel) -> list[str]:
    """The published block's caption: where the rows come from and why they are not compared."""
    contexts = {r.context for r in model.published}
    if ENCODER_NOTE in contexts:
        lines = [f"Each row is one figure as its source prints it (Source: the paper or benchmark and its table; "
                 f"no spread is given; {NOT_REPORTED}: the source does not report that metric), transcribed in "
                 "bench/reference/msa_published.csv. Every one of these systems fine-tunes its text encoder "
                 "(BERT / RoBERTa) on the real data, where the runs above train on frozen features: the rows are "
                 "context, not competitors, so they are never shaded, ranked, marked best or tested."]
    else:
        lines = []
    if contexts - {ENCODER_NOTE}:
        lines.append("Rows marked with their protocol (Note) are figures as their sources print them, transcribed in "
                     "bench/reference/mfeat_published.csv: each source's own split, model and number of runs, not "
                     "this harness's fixed split, so they are context, never shaded, ranked, marked best or tested.")
    if model.any_synthetic:
        lines.append(f"{SYNTHETIC_NOTICE}: the runs above are on the generated surrogate, and no number of theirs "
                     "can be read against these real-data figures.")
    return lines


def published_head(model: TableModel) -> list[str]:
    return ["Source", "Data", "Method", *(m.label for m in model.metrics), "Note"]


def published_cells(model: TableModel, row: PublishedRow) -> list[str]:
    """The text of one published row: source, dataset, method, each metric as printed (no rank), note."""
    values = []
    for metric in model.metrics:
        value = row.value(metric.key)
        values.append(NOT_REPORTED if math.isnan(value) else f"{value:.{metric.decimals}f}")
    return [row.source_label, labels.dataset_name(row.dataset), row.method_label, *values, row.note]


# -- Markdown -------------------------------------------------------------------------------------

def to_markdown(models: Sequence[TableModel], vs_thesis: bool = False, effects: bool = False,
                per_seed: bool = False) -> str:
    """GitHub Markdown: bold / <u>underline</u> / italic for the best three (effects: each cell's difference
    to the baseline with its interval; per_seed: each seed's value)."""
    view = View(vs_thesis, effects, per_seed)
    return "\n\n".join(_markdown_one(m, view) for m in models) + "\n"


def _markdown_one(model: TableModel, vs_thesis: bool | View) -> str:
    view = as_view(vs_thesis)
    cols = columns(model, view)
    with_config = show_config(model)
    head = (["Configuration"] if with_config else []) + ["Method"]
    head += [f"{labels.dataset_short(c.dataset)} {c.header()}" for c in cols]
    lines = [f"### {title(model)}", "", _md_row(head), _md_row(["---"] * len(head))]
    for block, rows in body(model, view):
        lines.append(_md_row([f"**{block}**"] + [""] * (len(head) - 1)))
        for row, config, texts in rows:
            lead = ([config] if with_config else []) + [labels.method_name(row.method)]
            lines.append(_md_row(lead + [_md_text(t, view) for t in texts]))
    lines.append("")
    lines += [f"{line}  " for line in caption(model, view) if line]
    if model.published:
        lines += ["", f"#### {published_title(model)}", "", _md_row(published_head(model)),
                  _md_row(["---"] * len(published_head(model)))]
        lines += [_md_row(published_cells(model, row)) for row in model.published]
        lines.append("")
        lines += [f"{line}  " for line in published_caption(model)]
    return "\n".join(lines).rstrip()


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _md_text(text: Text, view: View = View()) -> str:
    styles = {1: "**{}**", 2: "<u>{}</u>", 3: "*{}*"}
    value = styles[text.rank].format(text.value) if text.rank else text.value
    return f"{value}{text.mark}{text.suffix}{_extras(text, view)}"


def _extras(text: Text, view: View) -> str:
    """The per-seed values and (effects) the difference to the baseline, after a cell's text."""
    extra = f" {text.per_seed}" if text.per_seed else ""
    return extra + (f" {text.effect}" if view.effects and text.effect else "")


# -- LaTeX ----------------------------------------------------------------------------------------

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_UNICODE = {"±": r"$\pm$", "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}",
                 "Δ": r"$\Delta$", "—": "---", "−": "--", "×": r"$\times$", "<": r"$<$", ">": r"$>$",
                 "…": r"\ldots{}", "≈": r"$\approx$", "α": r"$\alpha$", "τ": r"$\tau$"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the symbols this module prints to LaTeX commands."""
    out = []
    for char in text:
        out.append(LATEX_SPECIAL.get(char) or LATEX_UNICODE.get(char) or char)
    return "".join(out)


def to_latex(models: Sequence[TableModel], vs_thesis: bool = False, effects: bool = False,
             per_seed: bool = False) -> str:
    """booktabs tables (\\usepackage{booktabs}); bold / underline / italic for the best three."""
    view = View(vs_thesis, effects, per_seed)
    return "\n\n".join(_latex_one(m, view) for m in models) + "\n"


def _latex_one(model: TableModel, vs_thesis: bool | View) -> str:
    view = as_view(vs_thesis)
    cols = columns(model, view)
    lead = (["Configuration"] if show_config(model) else []) + ["Method"]
    per_dataset = len(cols) // max(len(model.datasets), 1)
    n_cols = len(lead) + len(cols)
    caption_text = latex_escape(title(model) + ". " + " ".join(s for s in caption(model, view) if s))
    lines = [
        "% Generated by bench (report); needs \\usepackage{booktabs}.",
        "\\begin{table}[htbp]",
        "\\centering",
        "\\small",
        f"\\caption{{{caption_text}}}",
        f"\\label{{tab:bench-{model.table.replace('.', '-')}}}",
        f"\\begin{{tabular}}{{{'l' * len(lead)}{'r' * len(cols)}}}",
        "\\toprule",
    ]
    groups = [f"\\multicolumn{{{per_dataset}}}{{c}}{{{latex_escape(labels.dataset_name(d))}}}"
              for d in model.datasets]
    lines.append(" & ".join([""] * len(lead) + groups) + " \\\\")
    rules = [f"\\cmidrule(lr){{{len(lead) + 1 + i * per_dataset}-{len(lead) + (i + 1) * per_dataset}}}"
             for i in range(len(model.datasets))]
    lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(h) for h in lead + [c.header() for c in cols]) + " \\\\")
    lines.append("\\midrule")
    for index, (block, rows) in enumerate(body(model, view)):
        if index:
            lines.append("\\midrule")
        lines.append(f"\\multicolumn{{{n_cols}}}{{l}}{{\\textit{{{latex_escape(block)}}}}} \\\\")
        for row, config, texts in rows:
            names = ([config] if show_config(model) else []) + [labels.method_name(row.method)]
            cells = [latex_escape(n) for n in names] + [_latex_text(t, view) for t in texts]
            lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    if model.published:
        lines += ["", *_latex_published(model)]
    return "\n".join(lines)


def _latex_published(model: TableModel) -> list[str]:
    """The published rows as their own table: plain cells, nothing ranked."""
    head = published_head(model)
    caption_text = latex_escape(published_title(model) + ". " + " ".join(published_caption(model)))
    lines = ["\\begin{table}[htbp]", "\\centering", "\\small", f"\\caption{{{caption_text}}}",
             f"\\label{{tab:bench-{model.table.replace('.', '-')}-published}}",
             f"\\begin{{tabular}}{{lll{'r' * len(model.metrics)}l}}", "\\toprule",
             " & ".join(latex_escape(h) for h in head) + " \\\\", "\\midrule"]
    lines += [" & ".join(latex_escape(c) for c in published_cells(model, row)) + " \\\\" for row in model.published]
    lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return lines


def _latex_text(text: Text, view: View = View()) -> str:
    styles = {1: "\\textbf{{{}}}", 2: "\\underline{{{}}}", 3: "\\textit{{{}}}"}
    value = latex_escape(text.value)
    if text.rank:
        value = styles[text.rank].format(value)
    return value + latex_escape(text.mark) + latex_escape(text.suffix) + latex_escape(_extras(text, view))


# -- CSV ------------------------------------------------------------------------------------------

CSV_COLUMNS = ("preset", "table", "dataset", "synthetic", "data_fingerprint", "modalities", "method",
               "config", "optimizer", "metric", "mean", "std", "std_convention", "n", "n_expected", "n_failed",
               "rank", "thesis", "thesis_std", "delta", "p_value", "ci_low", "ci_high", "test", "n_pairs",
               "difference", "interval", "p_adjusted", "correction", "n_tests", "shown_rank", "tied",
               "next_test", "next_p_value", "next_p_adjusted", "seeds", "values", "verdict", "untested",
               "note")
STD_CONVENTION = "sample std over seeds (ddof=1)"


def tidy_frame(models: Sequence[TableModel]) -> pd.DataFrame:
    """One line per cell and metric, missing cells included (empty numbers)."""
    records = []
    for model in models:
        for row in model.rows:
            for dataset, result in row.cells.items():
                for metric in model.metrics:
                    records.append(_tidy_record(model, row, dataset, result, result.metrics[metric.key],
                                                metric.key))
        records += [_published_record(model, row, metric.key) for row in model.published for metric in model.metrics]
    return pd.DataFrame.from_records(records, columns=list(CSV_COLUMNS))


def _tidy_record(model: TableModel, row: Row, dataset: str, result: CellResult, metric: MetricCell,
                 key: str) -> dict[str, object]:
    return {
        "preset": model.preset, "table": model.table, "dataset": dataset,
        "synthetic": model.synthetic[dataset], "data_fingerprint": ";".join(result.fingerprints),
        "modalities": row.block, "method": row.method, "config": row.config_label,
        "optimizer": row.optimizer, "metric": key, "mean": metric.summary.mean,
        "std": metric.summary.std, "std_convention": STD_CONVENTION, "n": result.n, "n_expected": result.n_expected,
        "n_failed": result.n_failed, "rank": metric.rank or None, "thesis": metric.thesis_mean,
        "thesis_std": metric.thesis_std, "delta": metric.delta, "p_value": metric.p_value,
        "ci_low": metric.ci_low, "ci_high": metric.ci_high, "test": metric.test, "n_pairs": metric.n_pairs,
        "difference": metric.difference, "interval": _interval_kind(metric), "p_adjusted": metric.p_adjusted,
        "correction": model.options.correction, "n_tests": sum(model.tests.values()),
        "shown_rank": metric.shown_rank or None, "tied": metric.tied, "next_test": metric.next_test,
        "next_p_value": metric.next_p, "next_p_adjusted": metric.next_p_adjusted,
        "seeds": ";".join(str(s) for s in result.seeds),
        "values": ";".join(f"{v:.6g}" for v in result.values[key]),
        "verdict": metric.verdict, "untested": metric.untested, "note": result.note,
    }


def _interval_kind(metric: MetricCell) -> str:
    """What ci_low / ci_high are: the 95 % t-interval of the paired or the Welch difference, or why none."""
    if not metric.test:
        return ""
    if metric.interval_note:
        return metric.interval_note
    return "95% paired t-interval" if metric.n_pairs else "95% Welch t-interval"


def _published_record(model: TableModel, row: PublishedRow, key: str) -> dict[str, object]:
    """A published figure in the tidy frame: real data, no spread, no rank, no test (said in `untested`)."""
    return {
        "preset": model.preset, "table": model.table, "dataset": row.dataset, "synthetic": False,
        "data_fingerprint": "", "modalities": PUBLISHED_MODALITIES, "method": row.method,
        "config": f"published: {row.source_label}", "optimizer": "", "metric": key, "mean": row.value(key),
        "std": math.nan, "std_convention": "", "n": None, "n_expected": None, "n_failed": None, "rank": None,
        "thesis": math.nan, "thesis_std": math.nan, "delta": math.nan, "p_value": math.nan, "ci_low": math.nan,
        "ci_high": math.nan, "test": "", "n_pairs": None, "difference": math.nan, "interval": "",
        "p_adjusted": math.nan, "correction": "", "n_tests": None, "shown_rank": None, "tied": False,
        "next_test": "", "next_p_value": math.nan, "next_p_adjusted": math.nan, "seeds": "", "values": "",
        "verdict": "", "untested": f"published figure ({row.context}): never ranked or tested",
        "note": row.note,
    }


def to_csv(models: Sequence[TableModel]) -> str:
    """The tidy frame as CSV text."""
    buffer = io.StringIO()
    frame = tidy_frame(models).astype({"rank": "Int64", "shown_rank": "Int64", "n_pairs": "Int64",
                                       "n_tests": "Int64"})
    frame.to_csv(buffer, index=False, float_format="%.6g", lineterminator="\n")
    return buffer.getvalue()


# -- HTML -----------------------------------------------------------------------------------------

HTML_STYLE = f"""
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #111; }}
code {{ overflow-wrap: anywhere; }}
section {{ overflow-x: auto; }}
table.bench {{ border-collapse: collapse; margin: 1em 0; font-size: 0.8em; }}
table.bench th, table.bench td {{ padding: 0.25em 0.4em; border-bottom: 1px solid #ddd; }}
table.bench td.num {{ text-align: right; }}
table.bench tr.block td {{ font-style: italic; font-weight: 600; background: #f6f6f6; }}
td small.extra {{ display: block; color: #444; }}
td.rank1 {{ background: {SHADES[1]}; }}
td.rank2 {{ background: {SHADES[2]}; }}
td.rank3 {{ background: {SHADES[3]}; }}
.synthetic {{ color: #a40000; font-weight: 700; }}
.caption p {{ margin: 0.2em 0; max-width: 60em; font-size: 0.9em; }}
figure {{ margin: 1em 0; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
"""


def to_html(models: Sequence[TableModel], vs_thesis: bool = False, page_title: str | None = None,
            effects: bool = True, per_seed: bool = False) -> str:
    """A standalone page: the tables with dark / medium / light shading of the best three."""
    heading = page_title or (models[0].preset if models else "bench tables")
    view = View(vs_thesis, effects, per_seed)
    return html_page(heading, "\n".join(html_fragment(m, view) for m in models))


def html_page(heading: str, content: str) -> str:
    """Wrap body HTML in a standalone page with the report's style."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(heading)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n"
            f"{content}\n</body>\n</html>\n")


def html_fragment(model: TableModel, vs_thesis: bool | View) -> str:
    """One table with its title and caption, as a <section> (the effects shown unless a View says not)."""
    view = vs_thesis if isinstance(vs_thesis, View) else View(bool(vs_thesis), effects=True)
    cols = columns(model, view)
    with_config = show_config(model)
    lead = (["Configuration"] if with_config else []) + ["Method"]
    per_dataset = len(cols) // max(len(model.datasets), 1)
    css = ' class="synthetic"' if model.any_synthetic else ""
    parts = [f"<section>\n<h2{css}>{html.escape(title(model))}</h2>", '<table class="bench">', "<thead>"]
    top = "".join(f"<th rowspan=\"2\">{h}</th>" for h in lead)
    top += "".join(f'<th colspan="{per_dataset}">{html.escape(labels.dataset_name(d))}</th>'
                   for d in model.datasets)
    parts.append(f"<tr>{top}</tr>")
    parts.append("<tr>" + "".join(f"<th>{html.escape(c.header())}</th>" for c in cols) + "</tr>")
    parts.append("</thead>\n<tbody>")
    for block, rows in body(model, view):
        span = len(lead) + len(cols)
        parts.append(f'<tr class="block"><td colspan="{span}">{html.escape(block)}</td></tr>')
        for row, config, texts in rows:
            names = ([config] if with_config else []) + [labels.method_name(row.method)]
            cells = "".join(f"<td>{html.escape(n)}</td>" for n in names)
            cells += "".join(_html_text(t, view) for t in texts)
            parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody>\n</table>")
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in caption(model, view) if line)
    parts.append(f'<div class="caption">{notes}</div>')
    if model.published:
        parts += _html_published(model)
    parts.append("</section>")
    return "\n".join(parts)


def _html_published(model: TableModel) -> list[str]:
    """The published rows as their own plain table (no shading, no tooltips)."""
    parts = [f"<h3>{html.escape(published_title(model))}</h3>", '<table class="bench published">', "<thead>",
             "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in published_head(model)) + "</tr>",
             "</thead>\n<tbody>"]
    numeric = range(3, 3 + len(model.metrics))  # the metric cells (after source, data, method)
    for row in model.published:
        cells = published_cells(model, row)
        tds = [f'<td class="num">{html.escape(c)}</td>' if i in numeric else f"<td>{html.escape(c)}</td>"
               for i, c in enumerate(cells)]
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts.append("</tbody>\n</table>")
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in published_caption(model))
    parts.append(f'<div class="caption">{notes}</div>')
    return parts


def _html_text(text: Text, view: View = View(effects=True)) -> str:
    css = f"num rank{text.rank}" if text.rank else "num"
    tooltip = f' title="{html.escape(text.tooltip)}"' if text.tooltip else ""
    # The value never wraps; a trailing note such as " (n=3/5, 2 failed)" may.
    content = html.escape(text.value).replace(" ", "&nbsp;") + html.escape(text.mark + text.suffix)
    extras = [t for t in (text.per_seed, text.effect if view.effects else "") if t]
    content += "".join(f'<small class="extra">{html.escape(t)}</small>' for t in extras)
    return f'<td class="{css}"{tooltip}>{content}</td>'


def render(models: Sequence[TableModel], fmt: str, vs_thesis: bool = False, effects: bool = False,
           per_seed: bool = False) -> str:
    """Render in one of FORMATS ('tex' is accepted for 'latex'). effects: the difference to the baseline with
    its interval in md and LaTeX cells (HTML and CSV always carry it); per_seed: each seed's value in every
    format's cells (the CSV always carries them)."""
    fmt = "latex" if fmt == "tex" else fmt
    if fmt == "md":
        return to_markdown(models, vs_thesis, effects, per_seed)
    if fmt == "latex":
        return to_latex(models, vs_thesis, effects, per_seed)
    if fmt == "csv":
        return to_csv(models)
    if fmt == "html":
        return to_html(models, vs_thesis, per_seed=per_seed)

    raise ConfigError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
