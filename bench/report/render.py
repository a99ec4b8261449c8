"""Render table models as Markdown, LaTeX (booktabs), tidy CSV and standalone HTML."""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench.config import ConfigError
from bench.report import labels, stats
from bench.report.model import METRICS, CellResult, MetricCell, Row, TableModel
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


# -- shared content -------------------------------------------------------------------------------

def columns(model: TableModel, vs_thesis: bool) -> list[Column]:
    """Value columns in order: per dataset, per metric of the task, ours (then thesis and delta, where the
    thesis's figures apply to the task)."""
    kinds = ("ours", "thesis", "delta") if _vs_thesis(model, vs_thesis) else ("ours",)
    return [Column(d, m.key, k, m.label, m.decimals) for d in model.datasets for m in model.metrics for k in kinds]


def _vs_thesis(model: TableModel, vs_thesis: bool) -> bool:
    """Thesis columns only for a task the thesis's figures are of (classification)."""
    return vs_thesis and model.spec.thesis


def show_config(model: TableModel) -> bool:
    """Whether rows need a configuration column (more than one configuration / optimizer)."""
    return len({(r.config_label, r.optimizer) for r in model.rows}) > 1


def cell_text(result: CellResult | None, column: Column) -> Text:
    """The text of one value column for one row."""
    if result is None:
        return Text("")  # the preset has no such cell: nothing was asked, nothing is missing
    metric = result.metrics[column.metric]
    if column.kind == "thesis":
        return Text(_mean_std(metric.thesis_mean, metric.thesis_std))
    if column.kind == "delta":
        return Text(NOT_AVAILABLE if math.isnan(metric.delta) else f"{metric.delta:+.2f}")
    return _ours_text(result, metric, column.decimals)


def _ours_text(result: CellResult, metric: MetricCell, decimals: int = 2) -> Text:
    notes = []
    if 0 < result.n < result.n_expected:
        notes.append(f"n={result.n}/{result.n_expected}")
    if result.n_failed:
        notes.append(f"{result.n_failed} failed")
    if result.note and metric is next(iter(result.metrics.values()), None):  # once per cell, beside its first
        notes.append(result.note)
    suffix = f" ({', '.join(notes)})" if notes else ""
    if result.missing:
        return Text(MISSING, suffix=suffix)
    tooltip = ""
    if not math.isnan(metric.p_value):
        tooltip = (f"vs baseline: p={metric.p_value:.3g}, 95% bootstrap CI of the difference "
                   f"[{metric.ci_low:+.{decimals}f}, {metric.ci_high:+.{decimals}f}]")
    summary = metric.summary
    return Text(_mean_std(summary.mean, summary.std, decimals), rank=metric.rank if metric.rank <= 3 else 0,
                mark=metric.mark, suffix=suffix, tooltip=tooltip)


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


def caption(model: TableModel, vs_thesis: bool) -> list[str]:
    """Caption sentences: data provenance, cell format, ranking, significance, summary, notes."""
    lines = [_provenance(model), _cell_format(model), _ranking(model), _significance(model),
             summary_line(model)]
    by_method = _by_method(model)
    if by_method:
        lines.append(by_method)
    if _vs_thesis(model, vs_thesis):
        lines.append("Thesis: the figure the thesis prints for the same cell (real data, 5 seeds); "
                     f"Δ = ours − thesis; {NOT_AVAILABLE}: the thesis has no such cell.")
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
        parts.append(f"Real data: {', '.join(real)} (data fingerprints: {_fingerprint_list(model, real)}).")
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


def _ranking(model: TableModel) -> str:
    thesis = ", as the thesis shades table 6.10" if model.table == "6.10" else ""
    scope = (f"across all rows of each column{thesis}"
             if model.rank_scope == "column" else "within each modality block of each column")
    return ("Bold / underline / italic (HTML: dark / medium / light shading) mark the best / second / "
            f"third mean per column ({model.spec.directions_text}), ranked {scope}.")


def _significance(model: TableModel) -> str:
    tested = any(m.verdict for r in model.cells() for m in r.metrics.values())
    if not tested:
        return ("Significance: no Late Concatenation (concat) baseline cell matches these rows, so none "
                "is tested.")
    return (f"† p < {stats.ALPHA:g}, ‡ p < {stats.STRONG_ALPHA:g}: two-sided Welch's t-test (unequal "
            "variances) over seeds against Late Concatenation (concat) of the same modality block, "
            "dataset and optimizer, in the same configuration where one exists (else its standard "
            "configuration); the CSV and the HTML tooltips add the 95 % bootstrap interval of the "
            f"difference of means ({stats.BOOTSTRAP_RESAMPLES} resamples, seed {stats.BOOTSTRAP_SEED}).")


def summary_line(model: TableModel) -> str:
    """How many cells beat the baseline significantly, tie with it, or lose, per metric."""
    parts = []
    for metric in model.metrics:
        c = model.tally.counts[metric.key]
        parts.append(f"{metric.name} {c['better']} better, {c['tie']} not "
                     f"significant, {c['worse']} worse, {c['n/a']} not testable")
    return f"Summary against the baseline (p < {stats.ALPHA:g}): " + "; ".join(parts) + "."


def _by_method(model: TableModel) -> str:
    items = []
    for method in sorted(model.tally.by_method, key=labels.method_rank):
        per = model.tally.by_method[method]
        counts = " ".join(f"{metric.key} {per[metric.key]['better']}/{per[metric.key]['tie']}/"
                          f"{per[metric.key]['worse']}" for metric in model.metrics)
        items.append(f"{labels.method_name(method)} {counts}")
    return "By method (better/not significant/worse): " + "; ".join(items) + "." if items else ""


def body(model: TableModel, vs_thesis: bool) -> list[tuple[str, list[tuple[Row, str, list[Text]]]]]:
    """Blocks of rows: (block name, [(row, configuration label or '', value texts)])."""
    cols = columns(model, vs_thesis)
    blocks: list[tuple[str, list[tuple[Row, str, list[Text]]]]] = []
    previous_group: tuple[str, str, str] | None = None
    for row in model.rows:
        if not blocks or blocks[-1][0] != labels.block_name(row.block):
            blocks.append((labels.block_name(row.block), []))
        group = (row.block, row.config_label, row.optimizer)
        config = labels.config_name(row.config_label, row.optimizer) if group != previous_group else ""
        previous_group = group
        texts = [cell_text(row.cells.get(c.dataset), c) for c in cols]
        blocks[-1][1].append((row, config, texts))
    return blocks


# -- published reference rows (an unranked block under a table) -----------------------------------

NOT_REPORTED = "n/r"  # a published row's metric its source does not give
PUBLISHED_MODALITIES = "audio+vision+text"  # every published system uses all three


def published_title(model: TableModel) -> str:
    """The heading of the published block: real data, the fine-tuned encoder, unranked."""
    names = " / ".join(dict.fromkeys(labels.dataset_name(r.dataset) for r in model.published))
    return (f"Published results on the real {names} ({ENCODER_NOTE}), by source — reference rows, "
            "never ranked or tested against the runs above")


def published_caption(model: TableModel) -> list[str]:
    """The published block's caption: where the rows come from and why they are not compared."""
    lines = [f"Each row is one figure as its source prints it (Source: the paper or benchmark and its table; "
             f"no spread is given; {NOT_REPORTED}: the source does not report that metric), transcribed in "
             "bench/reference/msa_published.csv. Every one of these systems fine-tunes its text encoder "
             "(BERT / RoBERTa) on the real data, where the runs above train on frozen features: the rows are "
             "context, not competitors, so they are never shaded, ranked, marked best or tested."]
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

def to_markdown(models: Sequence[TableModel], vs_thesis: bool = False) -> str:
    """GitHub Markdown: bold / <u>underline</u> / italic for the best three."""
    return "\n\n".join(_markdown_one(m, vs_thesis) for m in models) + "\n"


def _markdown_one(model: TableModel, vs_thesis: bool) -> str:
    cols = columns(model, vs_thesis)
    with_config = show_config(model)
    head = (["Configuration"] if with_config else []) + ["Method"]
    head += [f"{labels.dataset_short(c.dataset)} {c.header()}" for c in cols]
    lines = [f"### {title(model)}", "", _md_row(head), _md_row(["---"] * len(head))]
    for block, rows in body(model, vs_thesis):
        lines.append(_md_row([f"**{block}**"] + [""] * (len(head) - 1)))
        for row, config, texts in rows:
            lead = ([config] if with_config else []) + [labels.method_name(row.method)]
            lines.append(_md_row(lead + [_md_text(t) for t in texts]))
    lines.append("")
    lines += [f"{line}  " for line in caption(model, vs_thesis) if line]
    if model.published:
        lines += ["", f"#### {published_title(model)}", "", _md_row(published_head(model)),
                  _md_row(["---"] * len(published_head(model)))]
        lines += [_md_row(published_cells(model, row)) for row in model.published]
        lines.append("")
        lines += [f"{line}  " for line in published_caption(model)]
    return "\n".join(lines).rstrip()


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _md_text(text: Text) -> str:
    styles = {1: "**{}**", 2: "<u>{}</u>", 3: "*{}*"}
    value = styles[text.rank].format(text.value) if text.rank else text.value
    return f"{value}{text.mark}{text.suffix}"


# -- LaTeX ----------------------------------------------------------------------------------------

LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
LATEX_UNICODE = {"±": r"$\pm$", "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}",
                 "Δ": r"$\Delta$", "—": "---", "−": "--", "×": r"$\times$", "<": r"$<$", ">": r"$>$",
                 "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the symbols this module prints to LaTeX commands."""
    out = []
    for char in text:
        out.append(LATEX_SPECIAL.get(char) or LATEX_UNICODE.get(char) or char)
    return "".join(out)


def to_latex(models: Sequence[TableModel], vs_thesis: bool = False) -> str:
    """booktabs tables (\\usepackage{booktabs}); bold / underline / italic for the best three."""
    return "\n\n".join(_latex_one(m, vs_thesis) for m in models) + "\n"


def _latex_one(model: TableModel, vs_thesis: bool) -> str:
    cols = columns(model, vs_thesis)
    lead = (["Configuration"] if show_config(model) else []) + ["Method"]
    per_dataset = len(cols) // max(len(model.datasets), 1)
    n_cols = len(lead) + len(cols)
    caption_text = latex_escape(title(model) + ". " + " ".join(s for s in caption(model, vs_thesis) if s))
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
    for index, (block, rows) in enumerate(body(model, vs_thesis)):
        if index:
            lines.append("\\midrule")
        lines.append(f"\\multicolumn{{{n_cols}}}{{l}}{{\\textit{{{latex_escape(block)}}}}} \\\\")
        for row, config, texts in rows:
            names = ([config] if show_config(model) else []) + [labels.method_name(row.method)]
            cells = [latex_escape(n) for n in names] + [_latex_text(t) for t in texts]
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


def _latex_text(text: Text) -> str:
    styles = {1: "\\textbf{{{}}}", 2: "\\underline{{{}}}", 3: "\\textit{{{}}}"}
    value = latex_escape(text.value)
    if text.rank:
        value = styles[text.rank].format(value)
    return value + latex_escape(text.mark) + latex_escape(text.suffix)


# -- CSV ------------------------------------------------------------------------------------------

CSV_COLUMNS = ("preset", "table", "dataset", "synthetic", "data_fingerprint", "modalities", "method",
               "config", "optimizer", "metric", "mean", "std", "std_convention", "n", "n_expected", "n_failed",
               "rank", "thesis", "thesis_std", "delta", "p_value", "ci_low", "ci_high", "verdict", "untested",
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
        "ci_low": metric.ci_low, "ci_high": metric.ci_high, "verdict": metric.verdict,
        "untested": metric.untested, "note": result.note,
    }


def _published_record(model: TableModel, row: PublishedRow, key: str) -> dict[str, object]:
    """A published figure in the tidy frame: real data, no spread, no rank, no test (said in `untested`)."""
    return {
        "preset": model.preset, "table": model.table, "dataset": row.dataset, "synthetic": False,
        "data_fingerprint": "", "modalities": PUBLISHED_MODALITIES, "method": row.method,
        "config": f"published: {row.source_label}", "optimizer": "", "metric": key, "mean": row.value(key),
        "std": math.nan, "std_convention": "", "n": None, "n_expected": None, "n_failed": None, "rank": None,
        "thesis": math.nan, "thesis_std": math.nan, "delta": math.nan, "p_value": math.nan, "ci_low": math.nan,
        "ci_high": math.nan, "verdict": "", "untested": f"published figure ({ENCODER_NOTE}): never ranked or tested",
        "note": row.note,
    }


def to_csv(models: Sequence[TableModel]) -> str:
    """The tidy frame as CSV text."""
    buffer = io.StringIO()
    frame = tidy_frame(models).astype({"rank": "Int64"})
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
td.rank1 {{ background: {SHADES[1]}; }}
td.rank2 {{ background: {SHADES[2]}; }}
td.rank3 {{ background: {SHADES[3]}; }}
.synthetic {{ color: #a40000; font-weight: 700; }}
.caption p {{ margin: 0.2em 0; max-width: 60em; font-size: 0.9em; }}
figure {{ margin: 1em 0; }} figure img {{ max-width: 100%; border: 1px solid #eee; }}
"""


def to_html(models: Sequence[TableModel], vs_thesis: bool = False, page_title: str | None = None) -> str:
    """A standalone page: the tables with dark / medium / light shading of the best three."""
    heading = page_title or (models[0].preset if models else "bench tables")
    return html_page(heading, "\n".join(html_fragment(m, vs_thesis) for m in models))


def html_page(heading: str, content: str) -> str:
    """Wrap body HTML in a standalone page with the report's style."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(heading)}</title>\n<style>{HTML_STYLE}</style>\n</head>\n<body>\n"
            f"{content}\n</body>\n</html>\n")


def html_fragment(model: TableModel, vs_thesis: bool) -> str:
    """One table with its title and caption, as a <section>."""
    cols = columns(model, vs_thesis)
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
    for block, rows in body(model, vs_thesis):
        span = len(lead) + len(cols)
        parts.append(f'<tr class="block"><td colspan="{span}">{html.escape(block)}</td></tr>')
        for row, config, texts in rows:
            names = ([config] if with_config else []) + [labels.method_name(row.method)]
            cells = "".join(f"<td>{html.escape(n)}</td>" for n in names)
            cells += "".join(_html_text(t) for t in texts)
            parts.append(f"<tr>{cells}</tr>")
    parts.append("</tbody>\n</table>")
    notes = "".join(f"<p>{html.escape(line)}</p>" for line in caption(model, vs_thesis) if line)
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


def _html_text(text: Text) -> str:
    css = f"num rank{text.rank}" if text.rank else "num"
    tooltip = f' title="{html.escape(text.tooltip)}"' if text.tooltip else ""
    # The value never wraps; a trailing note such as " (n=3/5, 2 failed)" may.
    content = html.escape(text.value).replace(" ", "&nbsp;") + html.escape(text.mark + text.suffix)
    return f'<td class="{css}"{tooltip}>{content}</td>'


def render(models: Sequence[TableModel], fmt: str, vs_thesis: bool = False) -> str:
    """Render in one of FORMATS ('tex' is accepted for 'latex')."""
    fmt = "latex" if fmt == "tex" else fmt
    if fmt == "md":
        return to_markdown(models, vs_thesis)
    if fmt == "latex":
        return to_latex(models, vs_thesis)
    if fmt == "csv":
        return to_csv(models)
    if fmt == "html":
        return to_html(models, vs_thesis)

    raise ConfigError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
