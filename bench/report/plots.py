"""Trend plots after the thesis figures: ratios, AGM strengths, losses, PMR prototype ratios.

Seeds are drawn as a band of mean ± 1 std (ddof=1) around the mean of each line. Figures are built
with matplotlib's object API (no pyplot, so no global backend or figure state) and seaborn styles.
"""

from __future__ import annotations

import dataclasses
import io
import json
import textwrap
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from bench import store
from bench.config import ConfigError, RunConfig, canonical_modalities, modality_key
from bench.report import labels, sources
from bench.selection import holdings, print_note


@dataclass(frozen=True)
class Panel:
    """One axes: a trajectory series (first candidate name found) against step or epoch."""

    title: str
    series: tuple[str, ...]  # candidate series names, in order of preference
    splits: tuple[str, ...]
    x: str = "step"  # "step" or "epoch"
    modalities: str = "any"  # "each": per-modality rows only; "fused": modality "" only; "any"
    fused_label: str = "fused"  # legend name of modality ""; "{pair}" becomes e.g. "audio/vision"
    show_split: bool = False  # name the split in the legend even when only one is present


@dataclass(frozen=True)
class PlotKind:
    """A figure: its title, the methods it shows by default, its panels."""

    title: str
    methods: tuple[str, ...]
    panels: tuple[Panel, ...]


# Plot kind -> series names. The names come from the methods' logs ("series/modality" keys, see
# bench/methods); a renamed log key is a one-line fix here.
PLOTS: dict[str, PlotKind] = {
    "ratios": PlotKind(
        "Discrepancy ratio and coefficient per step (thesis fig. 6.1)", ("concat", "ogm"),
        (Panel("discrepancy ratio ρ_m", ("ratio", "rho"), ("train",), "step", "each"),
         Panel("modulation coefficient k_m", ("coeff", "k"), ("train",), "step", "each"))),
    "strengths": PlotKind(
        "AGM modality strength and validation accuracy (thesis figs. 6.3, 6.4)", ("agm",),
        (Panel("modality strength r_m", ("strength", "r", "score"), ("train",), "step", "each"),
         Panel("coefficient k_m", ("coeff", "k"), ("train",), "step", "each"),
         Panel("validation accuracy (%): joint and per modality", ("acc",), ("valid",), "step", "any",
               fused_label="joint"))),
    "losses": PlotKind(
        "Training, validation and per-modality losses per epoch (thesis figs. 6.2, 6.7)", ("concat",),
        (Panel("fused loss (the task's: cross-entropy, or L1 / MSE)", ("loss",), ("train", "valid"), "epoch",
               "fused", show_split=True),
         Panel("per-modality and per-term losses (a method's own terms: loss/<term>)", ("loss",),
               ("train", "valid"), "epoch", "each", show_split=True))),
    "prototypes": PlotKind(
        "PMR imbalance ratio with and without development set (thesis figs. 6.5, 6.6)", ("pmr",),
        (Panel("imbalance ratio ρ", ("ratio", "rho"), ("train",), "step", "any", fused_label="{pair}"),
         Panel("prototype-classifier accuracy on the validation split (%)", ("proto_acc",),
               ("train", "valid", "dev"), "step", "each"))),
}
PLOT_KINDS = tuple(PLOTS)
SERIES_PREFIX = "series:"  # `bench plot series:<name>`: any series a method logs, per modality and split


def plot_kind(kind: str) -> PlotKind:
    """The figure of `kind`: a built-in one, or "series:<name>" for a method's own logged series (every
    split and modality it was logged with, against the optimizer step)."""
    if kind in PLOTS:
        return PLOTS[kind]
    name = kind.removeprefix(SERIES_PREFIX).strip()
    if not kind.startswith(SERIES_PREFIX) or not name:
        raise ConfigError(f"unknown plot {kind!r}; choose from {', '.join(PLOT_KINDS)}, or {SERIES_PREFIX}<name> "
                          "for a series a method logs (e.g. series:ratio)")
    return PlotKind(f"logged series '{name}' per step", (),
                    (Panel(name, (name,), ("train", "valid", "dev"), "step", "any", show_split=True),))

DPI = 100
FIG_WIDTH_IN = 10.0
PANEL_HEIGHT_IN = 3.0
HEADER_HEIGHT_IN = 1.0  # room for a title of up to four lines
BAND = "band: mean ± 1 std over seeds (ddof=1)"
LINE_STYLES = ("-", "--", ":", "-.")
CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
# Fields that do not distinguish a line: the seed is what the band is over; the rest is bookkeeping.
NOT_VARIANT_FIELDS = ("seed",)
# Fields a variant label leaves out: said by "+ dev set" (ratio_every goes with it), or by the optimizer.
LABEL_IMPLIED = ("method", "dev_set", "ratio_every")
OPTIMIZER_IMPLIED = ("optimizer", "lr", "momentum")
TITLE_CHARS = 135  # a title line longer than this would run off a 10-inch figure


def figure_size_px(kind: str) -> tuple[int, int]:
    """(width, height) in pixels of a saved figure of this kind."""
    height = PANEL_HEIGHT_IN * len(plot_kind(kind).panels) + HEADER_HEIGHT_IN
    return int(round(FIG_WIDTH_IN * DPI)), int(round(height * DPI))


@dataclass(frozen=True)
class Selection:
    """Which stored runs a figure draws (None: no filter on that field)."""

    run_ids: tuple[str, ...] | None = None
    methods: tuple[str, ...] | None = None
    dataset: str | None = None
    modalities: str | None = None
    optimizer: str | None = None
    dev_set: bool | None = None
    seeds: tuple[int, ...] | None = None
    task: str | None = None
    model: str | None = None


@dataclass
class Variant:
    """Runs that differ only by seed: one line (per modality / split) with a band."""

    label: str
    method: str
    dev_set: bool
    run_ids: list[str]


# -- selection ------------------------------------------------------------------------------------

def filter_runs(results: pd.DataFrame, selection: Selection, methods: Sequence[str] | None = None) -> pd.DataFrame:
    """The ok runs of the selection (`methods` in place of selection.methods when given)."""
    if not len(results) or "status" not in results:
        return results.iloc[0:0]
    rows = results[results["status"] == "ok"]
    if selection.run_ids:
        unknown = sorted(set(selection.run_ids) - set(rows["run_id"]))
        if unknown:
            raise ConfigError(f"no ok result for run id(s) {', '.join(unknown)}")
        rows = rows[rows["run_id"].isin(selection.run_ids)]
    rows = _filter(rows, "method", methods or selection.methods)
    rows = _filter(rows, "dataset", (selection.dataset,) if selection.dataset else None)
    mods = modality_key(canonical_modalities(selection.modalities)) if selection.modalities else None
    rows = _filter(rows, "modalities", (mods,) if mods else None)
    rows = _filter(rows, "optimizer", (selection.optimizer,) if selection.optimizer else None)
    for column in ("task", "model"):
        wanted = getattr(selection, column)
        rows = _filter(rows, column, (wanted,) if wanted else None)
    if selection.dev_set is not None:
        rows = rows[rows["dev_set"].astype(bool) == selection.dev_set]
    return _filter(rows, "seed", selection.seeds)


# What `bench plot` reports of the store when a selection finds nothing, and the flags that select.
HELD_COLUMNS = ("profile", "task", "model", "dataset", "modalities", "method", "optimizer", "seed")
SELECT_FLAGS = "--method, --dataset, --modalities, --optimizer, --dev-set/--no-dev-set, --seeds or --run-id"


def select_runs(results: pd.DataFrame, kind: str, selection: Selection) -> pd.DataFrame:
    """The ok runs of the selection; one dataset and one modality set, or a ConfigError naming them."""

    if not len(results) or "status" not in results:
        raise ConfigError("no stored results to plot (the store is empty)")
    methods = selection.methods or (None if selection.run_ids else plot_kind(kind).methods)
    rows = filter_runs(results, selection, methods)
    if not len(rows):
        wanted = ", ".join(methods or ["any"])
        ok = results[results["status"] == "ok"]
        held = (f"the store holds {len(ok)} ok run(s): {holdings(ok, HELD_COLUMNS)}; choose with {SELECT_FLAGS}"
                if len(ok) else "the store holds no ok run")
        raise ConfigError(f"no ok runs match the selection for '{kind}' (methods {wanted}); {held}")
    for column, flag in (("dataset", "--dataset"), ("modalities", "--modalities")):
        values = sorted(set(rows[column].astype(str)))
        if len(values) > 1:
            raise ConfigError(f"the selection spans {column} {', '.join(values)}: choose one with {flag}")
    return rows


def selection_note(rows: pd.DataFrame, kind: str, selection: Selection) -> str:
    """A note naming the methods and seeds the selection asks for that have no ok run ("" when none)."""
    methods = selection.methods or (None if selection.run_ids else plot_kind(kind).methods)
    absent = [f"method {m}" for m in methods or () if m not in set(rows["method"])]
    absent += [f"seed {s}" for s in selection.seeds or () if s not in set(rows["seed"])]
    if not absent:
        return ""
    return f"note: no ok runs of {', '.join(absent)} in the selection for '{kind}'; drawing the other runs"


def _filter(rows: pd.DataFrame, column: str, allowed: Sequence[Any] | None) -> pd.DataFrame:
    if allowed is None or column not in rows:
        return rows
    return rows[rows[column].isin(list(allowed))]


def variants(rows: pd.DataFrame) -> list[Variant]:
    """Group runs by every config field but the seed; label each by what tells it apart."""
    fields = [f for f in CONFIG_FIELDS if f in rows and f not in NOT_VARIANT_FIELDS]
    keys = rows[fields].astype(str).apply(tuple, axis=1)
    groups: dict[tuple[str, ...], list[str]] = {}
    for key, run_id in zip(keys, rows["run_id"], strict=True):
        groups.setdefault(key, []).append(str(run_id))
    found = []
    for key, run_ids in groups.items():
        values = dict(zip(fields, key, strict=True))
        # Only differences between runs of the same method need words: across methods the name says it.
        method_at = fields.index("method")
        siblings = [dict(zip(fields, k, strict=True)) for k in groups if k[method_at] == values["method"]]
        found.append(Variant(label=_variant_label(values, siblings), method=values["method"],
                             dev_set=values.get("dev_set") == "True", run_ids=run_ids))
    return sorted(found, key=lambda v: (_method_rank(v.method), v.dev_set, v.label))


def _method_rank(method: str) -> tuple[bool, int, str]:
    return labels.method_rank(method)


def _variant_label(values: dict[str, str], siblings: Sequence[dict[str, str]]) -> str:
    label = labels.method_name(values["method"]).replace(" (Baseline)", "")
    if values.get("dev_set") == "True":
        label += " + dev set"
    varying = [f for f in values if len({s[f] for s in siblings}) > 1 and f not in LABEL_IMPLIED]
    if "optimizer" in varying:
        label += f" {values['optimizer'].upper()}"
        varying = [f for f in varying if f not in OPTIMIZER_IMPLIED]
    extras = [f"{f}={_short(values[f], [s[f] for s in siblings])}" for f in varying]
    return f"{label} ({', '.join(extras)})" if extras else label


def _short(value: str, siblings: Sequence[str] = ()) -> str:
    """Compact a JSON parameter dict for a legend: only the keys whose values differ among `siblings` (a
    model's dozen sizes would overflow the legend when one of them is what tells two lines apart)."""
    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    if not isinstance(parsed, dict):
        return value
    others = [json.loads(s) for s in siblings if s != value]
    others = [o for o in others if isinstance(o, dict)]
    differing = {k: v for k, v in parsed.items() if any(o.get(k) != v for o in others)} if others else parsed
    return ",".join(f"{k}={v}" for k, v in differing.items()) or "{}"


# -- aggregation ----------------------------------------------------------------------------------

@dataclass
class Line:
    """Mean and std across seeds of one series of one variant, split and modality."""

    variant: int
    label: str
    split: str
    modality: str
    x: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n: int


def panel_data(traj: pd.DataFrame, found: Sequence[Variant],
               panel: Panel) -> tuple[str, list[Line], list[str]]:
    """(series used, lines, labels of the variants that logged none of it)."""
    series = next((s for s in panel.series if (traj["series"] == s).any()), panel.series[0])
    rows = traj[(traj["series"] == series) & traj["split"].isin(panel.splits)]
    if panel.modalities == "each":
        rows = rows[rows["modality"] != ""]
    elif panel.modalities == "fused":
        rows = rows[rows["modality"] == ""]
    lines: list[Line] = []
    missing: list[str] = []
    for index, variant in enumerate(found):
        mine = rows[rows["run_id"].isin(variant.run_ids)]
        if not len(mine):
            missing.append(variant.label)
            continue
        for (split, modality), group in mine.groupby(["split", "modality"], sort=True):
            lines.append(_aggregate(index, variant.label, str(split), str(modality), group, panel.x))
    return series, lines, missing


def _aggregate(index: int, label: str, split: str, modality: str, rows: pd.DataFrame, x: str) -> Line:
    # Per run, average duplicates at the same x (per-step logs inside an epoch); then across runs.
    per_run = rows.groupby(["run_id", x])["value"].mean().unstack("run_id").sort_index()
    values = per_run.to_numpy(dtype=float)
    counts = np.sum(np.isfinite(values), axis=1)
    with warnings.catch_warnings():
        # All-NaN columns (an x only some seeds reached) are expected; they stay NaN.
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = np.nanmean(values, axis=1)
        std = np.where(counts >= 2, np.nanstd(values, axis=1, ddof=1), np.nan)
    return Line(index, label, split, modality, per_run.index.to_numpy(dtype=float), mean, std,
                n=int(per_run.shape[1]))


# -- drawing --------------------------------------------------------------------------------------

def build_figure(kind: str, rows: pd.DataFrame, traj: pd.DataFrame) -> Figure:
    """The figure of `kind` for the selected result rows and their trajectories."""
    spec = plot_kind(kind)
    found = variants(rows)
    width, height = figure_size_px(kind)
    absent: dict[str, list[str]] = {}  # variant label -> series it did not log
    drawn = 0
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.8):
        fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
        axes = fig.subplots(len(spec.panels), 1, squeeze=False)[:, 0]
        style = _Style(palette=sns.color_palette("colorblind", max(len(found), 8)),
                       multi_variant=len(found) > 1,
                       pair="/".join(canonical_modalities(str(rows["modalities"].iloc[0]))))
        for ax, panel in zip(axes, spec.panels, strict=True):
            series, lines, missing = panel_data(traj, found, panel)
            drawn += len(lines)
            for label in missing:
                absent.setdefault(label, []).append(f"'{series}'")
            _draw_panel(ax, panel, series, lines, missing, style)
        notes = [f"{label} logs no {', '.join(series)}" for label, series in absent.items()]
        fig.suptitle("\n".join(_title_lines(kind, rows, found, notes)), fontsize=9)
    if not drawn:
        looked = sorted({s for p in spec.panels for s in p.series})
        raise ConfigError(f"no trajectory rows for '{kind}' in the {len(rows)} selected run(s) "
                          f"(series looked for: {', '.join(looked)})")
    return fig


@dataclass(frozen=True)
class _Style:
    """What every panel of a figure shares: colours, whether colour means variant, the modality pair."""

    palette: Sequence[Any]
    multi_variant: bool
    pair: str  # "audio/vision": the run order of the modalities, for a bimodal ratio's legend


def _draw_panel(ax: Axes, panel: Panel, series: str, lines: Sequence[Line], missing: Sequence[str],
                style: _Style) -> None:
    title = f"{panel.title}  [series '{series}']"
    if missing:
        title += f" — not logged by: {', '.join(missing)}"
    ax.set_title(title, fontsize=9, loc="left")
    ax.set_xlabel("optimizer step" if panel.x == "step" else "epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not lines:
        ax.text(0.5, 0.5, f"no '{series}' series in the selected runs", ha="center", va="center",
                transform=ax.transAxes)
        return
    keys = sorted({(line.split, line.modality) for line in lines})
    name_split = panel.show_split or len({line.split for line in lines}) > 1
    for line in lines:
        style_index = keys.index((line.split, line.modality))
        # Several variants: colour = variant, dash = split/modality; one variant: colour = split/modality.
        color = style.palette[line.variant if style.multi_variant else style_index]
        dash = LINE_STYLES[style_index % len(LINE_STYLES)] if style.multi_variant else "-"
        name = panel.fused_label.format(pair=style.pair) if line.modality == "" else line.modality
        split = f" ({line.split})" if name_split else ""
        label = f"{line.label} · {name}{split}, n={line.n}"
        ax.plot(line.x, line.mean, dash, color=color, linewidth=1.2, label=label)
        band = np.isfinite(line.std)
        if band.any():
            spread = np.where(band, line.std, 0.0)
            ax.fill_between(line.x, line.mean - spread, line.mean + spread, where=band, color=color,
                            alpha=0.2, linewidth=0)
    ax.legend(fontsize=7, title="mean ± std over seeds", title_fontsize=7, loc="best")


def _title_lines(kind: str, rows: pd.DataFrame, found: Sequence[Variant], notes: Sequence[str]) -> list[str]:
    dataset = str(rows["dataset"].iloc[0])
    synthetic = labels.is_synthetic_name(dataset) or bool(rows.get("synthetic", pd.Series([False])).any())
    prints = sorted({str(p)[:8] for p in rows.get("data_fingerprint", pd.Series(dtype=str)).dropna() if p})
    data = ("SYNTHETIC SURROGATE (not MOSI/MOSEI)" if synthetic else "real data") + f" · {dataset}"
    data += f" · data fingerprint {', '.join(prints) or 'unknown'}"
    optimizers = ", ".join(sorted(set(rows["optimizer"].astype(str))))
    dev = " / ".join(sorted({"with" if v.dev_set else "without" for v in found}, reverse=True))
    methods = ", ".join(dict.fromkeys(labels.method_name(v.method) for v in found))
    config = (f"{labels.block_name(str(rows['modalities'].iloc[0]))} · optimizer {optimizers} · "
              f"dev set: {dev} · {methods} · {BAND}")
    lines = [plot_kind(kind).title, data, config]
    if notes:
        lines.append("; ".join(notes) + ": only what exists is plotted")
    return [textwrap.shorten(line, TITLE_CHARS, placeholder=" …") for line in lines]


# -- entry points ---------------------------------------------------------------------------------

def figure_for(kind: str, runs_dir: Path, selection: Selection) -> tuple[Figure, pd.DataFrame]:
    """Read the store and build the figure; returns it with the result rows it draws."""
    plot_kind(kind)  # an unknown kind is an error before anything is read
    results, problems = sources.read_results(Path(runs_dir))
    sources.print_warnings(problems)
    rows = select_runs(results, kind, selection)
    print_note(selection_note(rows, kind, selection))
    traj, traj_problems = sources.read_trajectories(Path(runs_dir), list(rows["run_id"]))
    sources.print_warnings(traj_problems)
    return build_figure(kind, rows, traj), rows


def default_path(kind: str, rows: pd.DataFrame, out_dir: Path) -> Path:
    """reports/<kind>-<dataset>-<modalities>-<optimizers>-<methods>.png"""
    parts = [kind, str(rows["dataset"].iloc[0]), str(rows["modalities"].iloc[0]).replace("+", "-"),
             "-".join(sorted(set(rows["optimizer"].astype(str)))),
             "-".join(sorted(set(rows["method"].astype(str)), key=_method_rank))]
    return Path(out_dir) / ("-".join(parts) + ".png")


def plot(kind: str, runs_dir: Path, selection: Selection | None = None, out: Path | None = None,
         out_dir: Path = Path("reports"), pdf: bool = False) -> list[Path]:
    """Draw `kind` for the selected runs; write a PNG (and a PDF); return the written paths."""
    fig, rows = figure_for(kind, runs_dir, selection or Selection())
    png = Path(out) if out is not None else default_path(kind, rows, out_dir)
    if png.is_dir():
        raise IsADirectoryError(f"{png} is a directory; give a file name such as {png / (kind + '.png')}")
    if png.suffix.lower() != ".png":
        png = png.with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    store.write_output(png, figure_bytes(fig, "png", dpi=DPI))  # atomic: never a 0-byte plot
    paths = [png]
    if pdf:
        store.write_output(png.with_suffix(".pdf"), figure_bytes(fig, "pdf"))
        paths.append(png.with_suffix(".pdf"))
    return paths


def figure_bytes(fig: Figure, fmt: str, **kwargs: Any) -> bytes:
    """The figure as the bytes of a `fmt` file."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (for embedding)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()
