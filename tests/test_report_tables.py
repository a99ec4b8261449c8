"""Tables from a small fake store: values, ranks, thesis deltas, honesty marks, significance, formats."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from test_report_helpers import FINGERPRINT, fake_cell, store_cell

from bench.data.types import DataError
from bench.report import stats
from bench.report.model import StatsOptions, build_models
from bench.report.render import latex_escape, render, to_csv, to_latex, to_markdown
from bench.store import read_results


def models_for(runs_dir, cells, preset="table-6.10", test="welch", correction="none"):
    """Models with the old statistics by default (Welch, no correction): the tests below pin them; the
    defaults (exact paired test, Holm) have their own tests in test_report_statistics.py."""
    results, problems = read_results(runs_dir)
    from bench.report.tables import models_from

    return models_from(preset, cells, results, problems, options=StatsOptions(test, correction))


def md_row(text: str, method_name: str) -> list[str]:
    """The cells of the first Markdown row whose method column is `method_name`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if method_name in cells:
            return cells[cells.index(method_name) + 1:]
    raise AssertionError(f"no row {method_name!r} in\n{text}")


@pytest.fixture()
def av_store(tmp_path):
    """Audio-vision on synth-mosi: baseline, two clearly ranked methods, one partial, one missing (quick
    profile: the thesis's figures may stand beside it)."""
    cells = {
        "concat": fake_cell("concat", profile="quick"),
        "ogm": fake_cell("ogm", profile="quick"),
        "agm": fake_cell("agm", profile="quick"),
        "pmr": fake_cell("pmr", profile="quick"),
        "reconboost": fake_cell("reconboost", profile="quick"),
    }
    store_cell(tmp_path, cells["concat"], [50, 51, 52, 53, 54], [90, 91, 92, 93, 94])
    store_cell(tmp_path, cells["ogm"], [60, 61, 62, 63, 64], [80, 81, 82, 83, 84])
    store_cell(tmp_path, cells["agm"], [70, 71, 73, 74, 77], [95, 96, 97, 98, 99])
    store_cell(tmp_path, cells["pmr"], [55, 56, 57], [85, 86, 87], failed=(3, 4))
    # reconboost: nothing stored -> missing
    return tmp_path, list(cells.values())


def test_cell_is_mean_and_sample_std(av_store):
    runs, cells = av_store
    text = to_markdown(models_for(runs, cells))
    # AGM accuracies [70, 71, 73, 74, 77]: mean 73, sample variance 30 / 4 -> std 2.7386.
    assert md_row(text, "AGM")[0] == "**73.00 ± 2.74**‡"
    assert np.std([70, 71, 73, 74, 77], ddof=1) == pytest.approx(2.7386, abs=1e-4)


def test_best_second_third_marked_per_column(av_store):
    runs, cells = av_store
    text = to_markdown(models_for(runs, cells))
    acc = {name: md_row(text, name)[0] for name in ("AGM", "OGM", "PMR", "Late Concatenation (Baseline)")}
    assert acc["AGM"].startswith("**73.00")  # best accuracy: bold
    assert acc["OGM"].startswith("<u>62.00")  # second: underline
    assert acc["PMR"].startswith("*56.00")  # third: italic
    assert acc["Late Concatenation (Baseline)"] == "52.00 ± 1.58"  # fourth: plain
    loss = {name: md_row(text, name)[1] for name in ("OGM", "PMR", "Late Concatenation (Baseline)", "AGM")}
    assert loss["OGM"].startswith("**82.00")  # lowest loss is best
    assert loss["PMR"].startswith("<u>86.00")
    assert loss["Late Concatenation (Baseline)"].startswith("*92.00")
    assert loss["AGM"].startswith("97.00")
    latex = to_latex(models_for(runs, cells))
    assert r"\textbf{73.00 $\pm$ 2.74}" in latex
    assert r"\underline{62.00 $\pm$ 1.58}" in latex
    assert r"\textit{56.00 $\pm$ 1.00}" in latex


def test_ranks_within_modality_block_outside_6_10(tmp_path):
    cells = [fake_cell("concat", mods, table="6.3") for mods in ("audio+vision", "text+vision")]
    store_cell(tmp_path, cells[0], [50, 51, 52])
    store_cell(tmp_path, cells[1], [70, 71, 72])
    text = to_markdown(models_for(tmp_path, cells, "table-6.3"))
    # Each block ranks on its own (6.10 would rank the whole column); a block of one row has no next cell to
    # differ from, so nothing is marked best (before the marks needed a significant difference, both were bold).
    assert text.count("**Late Concatenation (Baseline)**") == 0
    assert "| Late Concatenation (Baseline) | 51.00 ± 1.00 (n=3/5)" in text
    assert "| Late Concatenation (Baseline) | 71.00 ± 1.00 (n=3/5)" in text
    assert "within each modality block" in text


def test_thesis_value_and_delta(av_store):
    runs, cells = av_store
    models = models_for(runs, cells)
    text = to_markdown(models, vs_thesis=True)
    # Thesis table 6.10, MOSI audio+vision Late Concatenation: 54.93 ± 1.19 / 84.10 ± 1.25.
    row = md_row(text, "Late Concatenation (Baseline)")
    assert row[:6] == ["52.00 ± 1.58", "54.93 ± 1.19", "-2.93", "*92.00 ± 1.58*", "84.10 ± 1.25", "+7.90"]
    frame = pd.read_csv(io.StringIO(to_csv(models)))
    concat_acc = frame[(frame["method"] == "concat") & (frame["metric"] == "acc")].iloc[0]
    assert concat_acc["thesis"] == pytest.approx(54.93)
    assert concat_acc["delta"] == pytest.approx(-2.93)


def test_partial_failed_and_missing_cells_are_shown(av_store):
    runs, cells = av_store
    text = to_markdown(models_for(runs, cells))
    assert md_row(text, "PMR")[0] == "*56.00 ± 1.00*‡ (n=3/5, 2 failed)"
    assert md_row(text, "ReconBoost")[:2] == ["—", "—"]
    assert "—: missing, no successful run" in text
    frame = pd.read_csv(io.StringIO(to_csv(models_for(runs, cells))))
    recon = frame[frame["method"] == "reconboost"]
    assert len(recon) == 2 and recon["n"].tolist() == [0, 0] and recon["mean"].isna().all()


def test_significance_against_the_baseline(av_store):
    runs, cells = av_store
    models = models_for(runs, cells)
    by_method = {r.cell.method: r for r in models[0].cells()}
    ogm = by_method["ogm"].metrics["acc"]
    expected = scipy_stats.ttest_ind([60, 61, 62, 63, 64], [50, 51, 52, 53, 54], equal_var=False).pvalue
    assert ogm.p_value == pytest.approx(expected)
    assert ogm.p_value < 0.01 and ogm.mark == "‡" and ogm.verdict == "better"
    assert ogm.ci_low > 0 and ogm.ci_high < 20  # the difference is 10, seeds 1 apart
    assert by_method["concat"].metrics["acc"].verdict == ""  # the baseline is not tested against itself


def test_identical_distributions_are_not_significant(tmp_path):
    cells = [fake_cell("concat"), fake_cell("ogm")]
    store_cell(tmp_path, cells[0], [50, 51, 52, 53, 54])
    store_cell(tmp_path, cells[1], [54, 53, 52, 51, 50])
    models = models_for(tmp_path, cells)
    ogm = next(r for r in models[0].cells() if r.cell.method == "ogm").metrics["acc"]
    assert ogm.p_value == pytest.approx(1.0) and ogm.mark == "" and ogm.verdict == "tie"
    # Equal means share the rank: tied (≈; before, both were bold), neither marked significant.
    assert "| OGM | 52.00 ± 1.58≈ | 48.00 ± 1.58≈ |" in to_markdown(models)


def test_summary_line_counts(av_store):
    runs, cells = av_store
    text = to_markdown(models_for(runs, cells))
    # acc: OGM and AGM better, PMR better too (55-57 vs 50-54, p<0.05); reconboost not testable.
    # loss: OGM better (80s vs 90s), PMR better, AGM worse (95-99 vs 90-94).
    pmr_p = scipy_stats.ttest_ind([55, 56, 57], [50, 51, 52, 53, 54], equal_var=False).pvalue
    assert pmr_p < 0.05
    assert ("Summary against the baseline (p < 0.05, no correction for multiplicity (12 tests)): "
            "accuracy 3 better, 0 not significant, 0 worse, 1 not testable; loss 2 better, 0 not significant, "
            "1 worse, 1 not testable.") in text
    assert "AGM acc 1/0/0 loss 0/0/1" in text


def test_latex_is_balanced_and_escaped(av_store):
    runs, cells = av_store
    latex = render(models_for(runs, cells), "latex", vs_thesis=True)
    depth = 0
    for match in re.finditer(r"(?<!\\)[{}]", latex):
        depth += 1 if match.group() == "{" else -1
        assert depth >= 0
    assert depth == 0
    assert re.search(r"(?<!\\)_", latex) is None  # every underscore escaped
    body = [line for line in latex.splitlines() if not line.startswith("%")]
    assert all(re.search(r"(?<!\\)%", line) is None for line in body)
    assert r"Accuracy (\%)" in latex and r"\toprule" in latex and r"\bottomrule" in latex
    assert latex_escape("a_b 5% & c#") == r"a\_b 5\% \& c\#"


def test_synthetic_label_in_title_and_caption(av_store):
    runs, cells = av_store
    models = models_for(runs, cells)
    md = to_markdown(models)
    title = md.splitlines()[0]
    assert title.startswith("### SYNTHETIC SURROGATE — not MOSI/MOSEI results")
    assert FINGERPRINT[:12] in title
    caption = md.split("\n\n", 2)[2]
    assert "SYNTHETIC SURROGATE — not MOSI/MOSEI results" in caption and FINGERPRINT[:12] in caption
    html_text = render(models, "html")
    assert html_text.startswith("<!DOCTYPE html>") and "SYNTHETIC SURROGATE" in html_text
    assert "\\caption{SYNTHETIC SURROGATE --- not MOSI/MOSEI results" in render(models, "latex")


def test_real_and_surrogate_never_share_a_cell(tmp_path):
    cell = fake_cell("concat", dataset="mosi")
    rows = pd.DataFrame({"run_id": [cfg.run_id for cfg in cell.configs[:2]], "dataset": ["mosi", "mosi"],
                         "status": ["ok", "ok"], "test_acc": [50.0, 51.0], "test_loss": [90.0, 91.0],
                         "data_fingerprint": ["a", "a"], "synthetic": [False, True]})
    with pytest.raises(DataError, match="mixes real and synthetic"):
        build_models("table-6.10", [cell], rows)
    with pytest.raises(DataError, match="marked synthetic=True"):
        build_models("table-6.10", [cell], rows.assign(synthetic=True))
    with pytest.raises(DataError, match="matched runs of dataset"):
        build_models("table-6.10", [cell], rows.assign(dataset="synth-mosi"))


def test_html_shades_the_best_three(av_store):
    runs, cells = av_store
    page = render(models_for(runs, cells), "html")
    assert page.count('class="num rank1"') == 2  # best accuracy (AGM) and best loss (OGM)
    assert "td.rank1 { background: #8c8c8c; }" in page
    assert 'title="vs baseline (Welch t): difference +10.00, 95% t-interval' in page


def test_csv_is_tidy(av_store):
    runs, cells = av_store
    frame = pd.read_csv(io.StringIO(render(models_for(runs, cells), "csv")))
    assert len(frame) == len(cells) * 2
    for column in ("mean", "std", "n", "thesis", "delta", "p_value", "ci_low", "ci_high"):
        assert column in frame.columns
    agm = frame[(frame["method"] == "agm") & (frame["metric"] == "acc")].iloc[0]
    assert agm["mean"] == 73 and agm["std"] == pytest.approx(2.73861, abs=1e-5) and agm["n"] == 5
    assert agm["rank"] == 1 and agm["synthetic"]


def test_stats_helpers():
    assert math.isnan(stats.summarise([1.0]).std)
    assert stats.dense_ranks([1.0, 3.0, math.nan, 3.0], higher_is_better=True) == [2, 1, 0, 1]
    assert math.isnan(stats.welch_p([1, 1, 1], [1, 1, 1]))  # no test: the t statistic is undefined
    assert stats.untestable([1, 1, 1], [2, 2, 2]) == stats.NO_VARIANCE
    assert stats.untestable([1.0], [1, 2, 3]) == stats.FEW_SEEDS and stats.untestable([1, 2], [1, 3]) == ""
    low, high = stats.bootstrap_ci([1, 2, 3], [1, 2, 3])
    assert low < 0 < high and (low, high) == stats.bootstrap_ci([1, 2, 3], [1, 2, 3])  # reproducible


def test_thesis_figure_borrowed_from_another_table_is_said(tmp_path):
    # Table 6.4 prints only ACC; its baseline row takes the thesis's 6.3 figure of the same configuration.
    cells = [fake_cell("concat", table="6.4", profile="quick"), fake_cell("acc", table="6.4", profile="quick")]
    store_cell(tmp_path, cells[0], [55, 56])
    text = to_markdown(models_for(tmp_path, cells, "table-6.4"), vs_thesis=True)
    assert md_row(text, "Late Concatenation (Baseline)")[1] == "54.93 ± 1.19"
    assert md_row(text, "ACC")[1] == "52.39 ± 2.42"  # 6.4's own ACC row (standard, adam)
    assert "taken from the same configuration in table 6.3 (Late Concatenation (Baseline))" in text


def test_mixed_data_versions_are_flagged(tmp_path):
    cell = fake_cell("concat")
    store_cell(tmp_path, cell, [50, 51], fingerprint="aaaa")
    store_cell(tmp_path, fake_cell("concat", seeds=(2,)), [52], fingerprint="bbbb")
    mixed = fake_cell("concat", seeds=(0, 1, 2))
    text = to_markdown(models_for(tmp_path, [mixed]))
    assert "WARNING: runs of different data versions are combined: synth-mosi (2 data fingerprints)." in text


def test_runs_of_several_code_versions_are_flagged(tmp_path, monkeypatch):
    import bench.store

    cells = [fake_cell("concat"), fake_cell("ogm")]
    monkeypatch.setattr(bench.store.provenance, "git_commit", lambda: "a" * 40)
    store_cell(tmp_path, cells[0], [50, 51, 52])
    one_version = to_markdown(models_for(tmp_path, cells))
    monkeypatch.setattr(bench.store.provenance, "git_commit", lambda: "b" * 40)
    store_cell(tmp_path, cells[1], [60, 61])
    text = to_markdown(models_for(tmp_path, cells))
    assert "code versions" not in one_version
    assert ("Runs trained by 2 code versions are combined (git commits: aaaaaaaaaaaa (3 runs), "
            "bbbbbbbbbbbb (2 runs))") in text


def test_baseline_taken_from_the_grid_when_the_preset_has_none(tmp_path):
    concat, ogm = fake_cell("concat", table="6.3"), fake_cell("ogm", table="6.3")
    store_cell(tmp_path, concat, [50, 51, 52, 53, 54])
    store_cell(tmp_path, ogm, [60, 61, 62, 63, 64])
    results, _ = read_results(tmp_path)
    models = build_models("table-6.3", [ogm], results, baseline_cells=[concat], options=StatsOptions("welch"))
    assert next(models[0].cells()).metrics["acc"].verdict == "better"
    text = to_markdown(models)
    assert "Late Concatenation (Baseline) |" not in text  # the baseline row is not invented into the table
    assert "taken from elsewhere in the grid): audio+vision synth-mosi standard/adam." in text


def test_every_format_states_the_std_convention(av_store):
    runs, cells = av_store
    models = models_for(runs, cells)
    for fmt in ("md", "latex", "html"):
        assert "sample std over seeds (ddof=1)" in render(models, fmt), fmt
    frame = pd.read_csv(io.StringIO(render(models, "csv")))
    assert set(frame["std_convention"]) == {"sample std over seeds (ddof=1)"}


def test_equal_seeds_give_no_library_warning_and_the_caption_says_why(tmp_path):
    """Two seeds with equal accuracies: scipy's ttest_ind warned "Precision loss occurred in moment calculation"."""
    import warnings

    cells = [fake_cell("concat", seeds=(0, 1)), fake_cell("ogm", seeds=(0, 1)), fake_cell("agm", seeds=(0, 1)),
             fake_cell("pmr", seeds=(0, 1))]
    store_cell(tmp_path, cells[0], [50.0, 52.0], [90.0, 90.0])
    store_cell(tmp_path, cells[1], [55.0, 55.0], [90.0, 90.0])  # constant accuracy; loss constant on both sides
    store_cell(tmp_path, cells[2], [51.0], [91.0])  # one seed
    store_cell(tmp_path, cells[3], [60.0, 61.0], [80.0, 81.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        models = models_for(tmp_path, cells)
        text = to_markdown(models)
    by_method = {r.cell.method: r for r in models[0].cells()}
    ogm = by_method["ogm"].metrics
    # One constant group: the test is defined (df = n - 1 of the other group) and matches scipy's value.
    expected = scipy_stats.ttest_ind_from_stats(55.0, 0.0, 2, 51.0, np.std([50, 52], ddof=1), 2,
                                                equal_var=False).pvalue
    assert ogm["acc"].p_value == pytest.approx(expected) and ogm["acc"].untested == ""
    assert math.isnan(ogm["loss"].p_value) and ogm["loss"].verdict == "n/a"
    assert ogm["loss"].untested == stats.NO_VARIANCE
    assert by_method["agm"].metrics["acc"].untested == stats.FEW_SEEDS
    assert by_method["pmr"].metrics["acc"].untested == ""
    note = next(line for line in text.splitlines() if line.startswith("Not tested against the baseline"))
    assert f"{stats.NO_VARIANCE}: OGM audio+vision synth-mosi standard/adam loss" in note
    assert f"{stats.FEW_SEEDS}: AGM audio+vision synth-mosi standard/adam accuracy, AGM" in note
    assert "PMR" not in note
    frame = pd.read_csv(io.StringIO(to_csv(models)))
    untested = frame[(frame["method"] == "ogm") & (frame["metric"] == "loss")]["untested"].iloc[0]
    assert untested == stats.NO_VARIANCE
