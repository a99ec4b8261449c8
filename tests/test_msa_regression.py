"""The msa-regression preset and its tables: cells from the registry, MMSA metric columns, MAE's direction,
the published block (labelled, never ranked or tested), and classification tables as before."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from clitools import bench
from scipy import stats as scipy_stats
from test_report_helpers import FINGERPRINT, fake_cell, store_cell

from bench.data.types import DataError
from bench.methods import REGISTRY
from bench.methods.base import Method
from bench.presets import expand
from bench.presets_msa import msa_regression_rows, regression_methods
from bench.report.model import StatsOptions, find_baseline, join_cell
from bench.report.published import load_published
from bench.report.render import render, tidy_frame, to_markdown
from bench.report.tables import models_from
from bench.store import RunRecord, read_results, save_result
from bench.tasks import task_class

MSA = "msa-regression"
KEYS = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "mae", "corr")
SINGLE = {"text", "audio", "vision"}
MULTI = {"audio+vision", "text+vision", "audio+text", "audio+vision+text"}


def expected_methods(n: int) -> list[str]:
    return sorted(name for name, cls in REGISTRY.items()
                  if "regression" in cls.tasks and cls.min_modalities <= n <= cls.max_modalities)


# -- the preset -----------------------------------------------------------------------------------

def test_the_preset_has_every_block_and_every_regression_method_of_the_registry():
    cells = expand(MSA, profile="smoke", source="synth")
    assert {c.dataset for c in cells} == {"synth-mosi", "synth-mosei"}
    assert {c.modalities for c in cells} == SINGLE | MULTI
    for cell in cells:
        assert cell.table == MSA and cell.optimizer == "adam" and cell.config_label == "standard"
        assert [cfg.seed for cfg in cell.configs] == [0, 1, 2, 3, 4]
        assert {cfg.task for cfg in cell.configs} == {"regression"}
        assert {cfg.optimizer for cfg in cell.configs} == {"adam"}
    for dataset in ("synth-mosi", "synth-mosei"):
        for block in SINGLE | MULTI:
            methods = sorted(c.method for c in cells if c.dataset == dataset and c.modalities == block)
            assert methods == expected_methods(block.count("+") + 1), (dataset, block)
    assert {c.method for c in cells if c.modalities in SINGLE} == {"unimodal"}
    assert {"concat", "ensemble", "unipre"} <= {c.method for c in cells if c.modalities in MULTI}
    assert not {c.method for c in cells} & {name for name, cls in REGISTRY.items() if "regression" not in cls.tasks}
    # The unimodal runs ensemble and unipre build on are the preset's own unimodal runs (no extra jobs).
    from bench.presets import dependencies

    own = {cfg.run_id for c in cells for cfg in c.configs}
    needed = {d.run_id for c in cells for cfg in c.configs for d in dependencies(cfg) if d.method == "unimodal"}
    assert needed and needed <= own


def test_a_method_that_gains_a_regression_form_joins_the_preset(monkeypatch):
    later = type("LaterAGM", (Method,), {"name": "zz_later", "tasks": ("classification", "regression")})
    monkeypatch.setitem(REGISTRY, "zz_later", later)
    assert "zz_later" in regression_methods(2) and "zz_later" not in regression_methods(1)
    rows = msa_regression_rows()
    assert {r.modalities for r in rows if r.method == "zz_later"} == {("audio", "vision"), ("text", "vision"),
                                                                     ("text", "audio"), ("text", "audio", "vision")}
    assert all(dict(r.fields)["task"] == "regression" for r in rows)


def test_grid_show_writes_the_regression_preset_with_its_task(capsys):
    assert bench("grid", MSA, "--show") == 0
    assert 'task = "regression"' in capsys.readouterr().out


# -- a regression table from a fake store ---------------------------------------------------------

def regression_cell(method: str, modalities: str = "audio+vision", seeds: Sequence[int] = (0, 1, 2), **kw):
    """quick profile: published figures may stand beside these runs (smoke runs leave them out)."""
    return fake_cell(method, modalities, table=MSA, task="regression", seeds=seeds, profile="quick", **kw)


def store_regression(runs: Path, cell, **series: Sequence[float]) -> None:
    """Store one ok run per seed with the given metric series (other metrics: a fixed 50 / 0.5)."""
    for index, cfg in enumerate(cell.configs):
        metrics = {f"test_{k}": (series[k][index] if k in series else (0.5 if k in ("mae", "corr") else 50.0))
                   for k in KEYS}
        save_result(runs, RunRecord(config=cfg, status="ok", metrics=metrics, data_fingerprint=FINGERPRINT))


@pytest.fixture()
def msa_store(tmp_path):
    """Audio-vision on synth-mosi: the baseline has the better Acc-2, the ensemble the better (lower) MAE."""
    cells = {"concat": regression_cell("concat"), "ensemble": regression_cell("ensemble"),
             "unipre": regression_cell("unipre"), "unimodal": regression_cell("unimodal", "text")}
    store_regression(tmp_path, cells["concat"], acc2_non0=[70.0, 71.0, 72.0], mae=[1.20, 1.25, 1.30])
    store_regression(tmp_path, cells["ensemble"], acc2_non0=[60.0, 61.0, 62.0], mae=[0.80, 0.85, 0.90])
    store_regression(tmp_path, cells["unipre"], acc2_non0=[65.0, 65.0, 68.0], mae=[1.00, 1.10, 1.15])
    store_regression(tmp_path, cells["unimodal"], acc2_non0=[55.0, 56.0, 57.0], mae=[1.40, 1.50, 1.60])
    results, problems = read_results(tmp_path)
    # Welch and no correction: the p-values below are pinned against scipy's ttest_ind (3 paired seeds could
    # never be significant with the default exact test; bench.report.stats).
    return models_from(MSA, list(cells.values()), results, problems, options=StatsOptions("welch", "none"))


def md_cells(text: str, method: str) -> list[str]:
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if method in cells:
            return cells[cells.index(method) + 1:]
    raise AssertionError(f"no row {method!r}")


def test_columns_are_the_tasks_metrics_in_order_with_synthetic_title(msa_store):
    text = to_markdown(msa_store)
    title, _, header = text.splitlines()[:3]
    assert title.startswith("### SYNTHETIC SURROGATE — not MOSI/MOSEI results")
    heads = [h.strip() for h in header.strip("|").split("|")]
    assert heads == ["Method", "synth-MOSI Acc-2 has0 (%)", "synth-MOSI Acc-2 non0 (%)", "synth-MOSI F1 has0 (%)",
                     "synth-MOSI F1 non0 (%)", "synth-MOSI Acc-7 (%)", "synth-MOSI Acc-5 (%)", "synth-MOSI MAE",
                     "synth-MOSI Corr"]
    assert list(task_class("regression").summary_metrics) == list(KEYS)
    assert "Metrics as MMSA defines them" in text and "2 decimals (MAE and Corr: 3)" in text


def test_mean_std_by_hand_and_mae_lower_is_best(msa_store):
    text = to_markdown(msa_store)
    concat, ensemble = md_cells(text, "Late Concatenation (Baseline)"), md_cells(text, "Ensemble")
    unipre, unimodal = md_cells(text, "Uni-Pre Finetuned"), md_cells(text, "Unimodal")
    # Acc-2 non0: concat [70, 71, 72] -> 71.00 ± 1.00, the highest: bold; unipre [65, 65, 68] -> 66.00 ± 1.73.
    assert concat[1] == "**71.00 ± 1.00**"
    assert unipre[1].startswith("<u>66.00 ± 1.73</u>")
    assert np.std([65, 65, 68], ddof=1) == pytest.approx(1.7321, abs=1e-4)
    # MAE, 3 decimals: ensemble [0.80, 0.85, 0.90] -> 0.850 ± 0.050 is the lowest, so the best (bold).
    assert ensemble[6] == "**0.850 ± 0.050**‡"
    assert unipre[6].startswith("<u>1.083 ± 0.076</u>")
    assert concat[6] == "*1.250 ± 0.050*"
    assert unimodal[6] == "1.500 ± 0.100"  # the highest MAE: fourth, unmarked
    # Significance against the baseline, with the MAE direction: the ensemble is better on MAE, worse on Acc-2.
    model = msa_store[0]
    by_method = {r.cell.method: r for r in model.cells()}
    mae, acc = by_method["ensemble"].metrics["mae"], by_method["ensemble"].metrics["acc2_non0"]
    assert mae.p_value == pytest.approx(scipy_stats.ttest_ind([0.8, 0.85, 0.9], [1.2, 1.25, 1.3],
                                                              equal_var=False).pvalue)
    assert mae.verdict == "better" and acc.verdict == "worse"
    unipre_p = scipy_stats.ttest_ind([1.0, 1.1, 1.15], [1.2, 1.25, 1.3], equal_var=False).pvalue
    assert unipre_p < 0.05 and by_method["unipre"].metrics["mae"].verdict == "better"  # lower MAE: better
    assert model.tally.counts["mae"] == {"better": 2, "tie": 0, "worse": 0, "n/a": 0}
    assert model.tally.counts["acc2_non0"]["worse"] == 2
    assert by_method["unimodal"].metrics["mae"].verdict == ""  # no baseline for a single modality
    assert math.isnan(by_method["concat"].metrics["mae"].thesis_mean)  # never the thesis's classification figure


def test_vs_thesis_adds_no_thesis_columns_to_a_regression_table(msa_store):
    text = to_markdown(msa_store, vs_thesis=True)
    assert "Thesis" not in text.splitlines()[2] and "Δ" not in text.splitlines()[2]


def published_section(text: str) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("#### Published"))
    return lines[start:]


def test_the_published_block_is_labelled_and_never_ranked_or_tested(msa_store):
    text = to_markdown(msa_store)
    block = published_section(text)
    assert "real CMU-MOSI (fine-tuned text encoder)" in block[0] and "never ranked or tested" in block[0]
    assert block[2].startswith("| Source | Data | Method | Acc-2 has0 (%) |")
    rows = [line for line in block if line.startswith("| ") and "CMU-" in line]
    expected = [r for r in load_published() if r.dataset == "mosi"]  # the table has MOSI only
    assert len(rows) == len(expected) > 0
    assert "| MMSA benchmark (thuiar/MMSA), result-stat | CMU-MOSI | Self-MM | 83.44 | 85.46 | 83.36 | 85.43 | " \
           "46.67 | n/r | 0.708 | 0.796 |" in text
    assert any(row.startswith("| FeaDA (Yin et al.), table 2 | CMU-MOSI | FeaDA |") for row in rows)
    for row in rows:
        assert not re.search(r"\*|<u>|†|‡", row), row
    assert "CMU-MOSEI" not in "\n".join(rows)
    assert any("SYNTHETIC SURROGATE" in line and "real-data figures" in line for line in block)
    # CSV: real data, no rank, no p-value, no verdict, said to be untested; HTML / LaTeX: no shading, no bold.
    frame = tidy_frame(msa_store)
    published = frame[frame["config"].str.startswith("published")]
    assert len(published) == len(expected) * len(KEYS)
    assert published["rank"].isna().all() and published["p_value"].isna().all()
    assert (published["verdict"] == "").all() and not published["synthetic"].any()
    assert published["untested"].str.contains("fine-tuned text encoder").all()
    assert set(published["dataset"]) == {"mosi"}
    html_text = render(msa_store, "html")
    table = html_text[html_text.index('<table class="bench published">'):]
    table = table[:table.index("</table>")]
    assert "rank1" not in table and "title=" not in table and "Self-MM" in table
    latex = render(msa_store, "latex")
    published_latex = latex[latex.index("-published}"):]
    assert "\\textbf" not in published_latex and "fine-tuned text encoder" in latex
    csv_text = render(msa_store, "csv")
    assert pd.read_csv(io.StringIO(csv_text))["config"].str.startswith("published").sum() == len(published)


def test_a_table_never_mixes_tasks_and_a_baseline_is_of_the_same_task(tmp_path):
    classification = fake_cell("concat", table=MSA)
    regression = regression_cell("ensemble")
    store_cell(tmp_path, classification, [50, 51, 52])
    store_regression(tmp_path, regression, mae=[0.8, 0.9, 1.0])
    results, _ = read_results(tmp_path)
    with pytest.raises(DataError, match="mixes tasks"):
        models_from(MSA, [classification, regression], results)
    pool = [join_cell(classification, results)]
    assert find_baseline(regression, pool) is None


# -- classification tables: as before ------------------------------------------------------------

def test_a_classification_table_keeps_its_metrics_captions_and_has_no_published_block(tmp_path):
    cells = [fake_cell("concat", profile="quick"), fake_cell("ogm", profile="quick")]
    store_cell(tmp_path, cells[0], [50, 51, 52, 53, 54], [90, 91, 92, 93, 94])
    store_cell(tmp_path, cells[1], [60, 61, 62, 63, 64], [80, 81, 82, 83, 84])
    results, problems = read_results(tmp_path)
    models = models_from("table-6.10", cells, results, problems, options=StatsOptions("welch", "none"))
    assert [m.key for m in models[0].metrics] == ["acc", "loss"] and models[0].published == []
    text = to_markdown(models, vs_thesis=True)
    assert text.splitlines()[2] == ("| Method | synth-MOSI Accuracy (%) | synth-MOSI Thesis accuracy | synth-MOSI Δ "
                                    "accuracy | synth-MOSI Loss (CE x 100) | synth-MOSI Thesis loss | synth-MOSI Δ "
                                    "loss |")
    assert "| OGM | **62.00 ± 1.58**‡ | 53.30 ± 3.12 | +8.70 | **82.00 ± 1.58**‡ | 85.31 ± 2.62 | -3.31 |" in text
    assert "Cells: mean ± sample std over seeds (ddof=1), 2 decimals; 5 seeds requested;" in text
    assert "undefined (std of one seed). Loss is test cross-entropy x 100.  " in text
    assert ("third mean per column (highest accuracy, lowest loss), ranked across all rows of each column, as "
            "the thesis shades table 6.10, only where it differs significantly") in text
    assert "Published" not in text and "fine-tuned" not in text


# -- the commands ---------------------------------------------------------------------------------

def _fake_regression_job(cfg, deps=None, device="cpu"):
    """The shared fake job, with MMSA metrics for regression runs (deterministic in the seed)."""
    import test_execute_fakes as fakes

    record = fakes.fake_job(cfg, deps, device)
    if cfg.task == "regression":
        record.metrics.update({f"test_{k}": (0.7 + cfg.seed / 10 if k in ("mae", "corr") else 60.0 + cfg.seed)
                               for k in KEYS})
    return record


def test_grid_ls_table_and_report_of_the_preset(fake_training, monkeypatch, tmp_path, capsys):
    from bench import execute

    monkeypatch.setattr(execute, "default_job_fn", lambda: _fake_regression_job)
    runs, out = tmp_path / "runs", tmp_path / "reports"
    selection = ["--profile", "smoke", "--dataset", "mosi", "--seeds", "0,1", "--method", "concat,ensemble",
                 "--modalities", "audio+vision"]
    assert bench("grid", MSA, *selection, "--runs-dir", str(runs), "--no-progress") == 0
    capsys.readouterr()
    assert bench("ls", "--preset", MSA, "--runs-dir", str(runs)) == 0
    listing = capsys.readouterr().out
    assert f"preset {MSA} (smoke): " in listing and "lacks msa-regression synth-mosei" in listing
    assert bench("table", MSA, *selection, "--runs-dir", str(runs)) == 0
    text = capsys.readouterr().out
    # 2 paired seeds: not significantly apart, so tied (≈) rather than bold; smoke runs: no published block.
    assert text.startswith("### SYNTHETIC SURROGATE") and "| Ensemble | 60.50 ± 0.71≈ |" in text
    assert "#### Published results" not in text and "The published figures are left out: these are smoke" in text
    assert bench("report", MSA, "--profile", "smoke", "--dataset", "mosi", "--seeds", "0,1", "--runs-dir", str(runs),
                 "--out-dir", str(out)) == 0
    page = (out / f"{MSA}-report.html").read_text()
    assert "SYNTHETIC SURROGATE" in page and "The published figures are left out" in page
