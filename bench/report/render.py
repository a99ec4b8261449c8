"""Render table models as Markdown, LaTeX (booktabs), tidy CSV and standalone HTML."""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from bench.report import labels, stats
from bench.report.model import METRICS, CellResult, MetricCell, Row, TableModel

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
}
# HTML shading of best / second / third, dark to light as the thesis's colour code.
SHADES = {1: "#8c8c8c", 2: "#bdbdbd", 3: "#e3e3e3"}


@dataclass(frozen=True)
class Column:
    """A value column: one metric of one dataset, ours or the thesis's or the delta."""

    dataset: str
    metric: str  # "acc" / "loss"
    kind: str  # "ours" / "thesis" / "delta"

    def header(self) -> str:
        label = next(m.label for m in METRICS if m.key == self.metric)
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
    """Value columns in order: per dataset, per metric, ours (then thesis and delta)."""
    kinds = ("ours", "thesis", "delta") if vs_thesis else ("ours",)
    return [Column(d, m.key, k) for d in model.datasets for m in METRICS for k in kinds]


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
    return _ours_text(result, metric)


def _ours_text(result: CellResult, metric: MetricCell) -> Text:
    notes = []
    if 0 < result.n < result.n_expected:
        notes.append(f"n={result.n}/{result.n_expected}")
    if result.n_failed:
        notes.append(f"{result.n_failed} failed")
    if result.note and metric is result.metrics.get(METRICS[0].key):  # once per cell, beside its first metric
        notes.append(result.note)
    suffix = f" ({', '.join(notes)})" if notes else ""
    if result.missing:
        return Text(MISSING, suffix=suffix)
    tooltip = ""
    if not math.isnan(metric.p_value):
        tooltip = (f"vs baseline: p={metric.p_value:.3g}, 95% bootstrap CI of the difference "
                   f"[{metric.ci_low:+.2f}, {metric.ci_high:+.2f}]")
    summary = metric.summary
    return Text(_mean_std(summary.mean, summary.std), rank=metric.rank if metric.rank <= 3 else 0,
                mark=metric.mark, suffix=suffix, tooltip=tooltip)


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return NOT_AVAILABLE
    return f"{mean:.2f} ± {NOT_AVAILABLE if math.isnan(std) else f'{std:.2f}'}"


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
    if vs_thesis:
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
    return (f"Cells: mean ± {STD_CONVENTION}, 2 decimals; "
            f"{model.seeds_expected} seeds requested; (n=k/{model.seeds_expected}) marks a cell with "
            f"fewer successful seeds, 'k failed' counts failed runs (never averaged in); "
            f"{MISSING}: missing, no successful run; {NOT_AVAILABLE}: undefined (std of one seed). "
            f"Loss is test cross-entropy x 100.")


def _ranking(model: TableModel) -> str:
    scope = ("across all rows of each column, as the thesis shades table 6.10"
             if model.rank_scope == "column" else "within each modality block of each column")
    return ("Bold / underline / italic (HTML: dark / medium / light shading) mark the best / second / "
            f"third mean per column (highest accuracy, lowest loss), ranked {scope}.")


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
    for metric in METRICS:
        c = model.tally.counts[metric.key]
        parts.append(f"{metric.label.split(' (')[0].lower()} {c['better']} better, {c['tie']} not "
                     f"significant, {c['worse']} worse, {c['n/a']} not testable")
    return f"Summary against the baseline (p < {stats.ALPHA:g}): " + "; ".join(parts) + "."


def _by_method(model: TableModel) -> str:
    items = []
    for method in sorted(model.tally.by_method, key=labels.method_rank):
        per = model.tally.by_method[method]
        counts = " ".join(f"{metric.key} {per[metric.key]['better']}/{per[metric.key]['tie']}/"
                          f"{per[metric.key]['worse']}" for metric in METRICS)
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
    return "\n".join(lines)


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
                for metric in METRICS:
                    records.append(_tidy_record(model, row, dataset, result, result.metrics[metric.key],
                                                metric.key))
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
    parts.append(f'<div class="caption">{notes}</div>\n</section>')
    return "\n".join(parts)


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
    from bench.config import ConfigError

    raise ConfigError(f"unknown table format {fmt!r}; choose from {', '.join(FORMATS)}")
