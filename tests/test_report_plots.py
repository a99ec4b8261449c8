"""Plots and the report page from a small fake store with trajectories."""

from __future__ import annotations

import pytest
from matplotlib import image as mpimg
from test_report_helpers import FINGERPRINT, fake_cell, fake_trajectory, store_cell

from bench import selection
from bench.config import ConfigError
from bench.report import page, plots
from bench.report.plots import Selection
from bench.store import read_results, read_trajectories

# 10 in wide at 100 dpi; 3 in per panel plus a 1 in header: 2 panels -> 700 px, 3 panels -> 1000 px.
EXPECTED_SHAPE = {"ratios": (700, 1000), "strengths": (1000, 1000), "losses": (700, 1000),
                  "prototypes": (700, 1000)}


@pytest.fixture(scope="module")
def trend_store(tmp_path_factory):
    """Baseline, OGM, AGM and PMR with and without dev set, 3 seeds each, on synth-mosi audio+vision."""
    runs = tmp_path_factory.mktemp("runs")
    cells = []
    for method, dev in (("concat", False), ("ogm", False), ("ogm", True), ("agm", False), ("agm", True),
                        ("pmr", False), ("pmr", True)):
        extra = {"dev_set": True, "ratio_every": 5} if dev else {}
        cell = fake_cell(method, config_label="dev_set" if dev else "standard", seeds=(0, 1, 2), **extra)
        store_cell(runs, cell, [50, 51, 52], trajectory=fake_trajectory)
        cells.append(cell)
    return runs, cells


@pytest.mark.parametrize("kind", sorted(EXPECTED_SHAPE))
def test_each_plot_writes_a_png_of_the_expected_size(trend_store, tmp_path, kind):
    runs, _ = trend_store
    paths = plots.plot(kind, runs, Selection(), out_dir=tmp_path)
    assert len(paths) == 1 and paths[0].suffix == ".png" and paths[0].stat().st_size > 10_000
    assert mpimg.imread(paths[0]).shape == (*EXPECTED_SHAPE[kind], 4)
    assert plots.figure_size_px(kind) == EXPECTED_SHAPE[kind][::-1]


def test_plot_title_names_data_config_and_missing_series(trend_store):
    runs, _ = trend_store
    results, _ = read_results(runs)
    rows = plots.select_runs(results, "ratios", Selection())
    traj, _ = read_trajectories(runs, list(rows["run_id"]))
    fig = plots.build_figure("ratios", rows, traj)
    title = fig._suptitle.get_text()
    assert "SYNTHETIC SURROGATE (not MOSI/MOSEI) · synth-mosi" in title
    assert f"data fingerprint {FINGERPRINT[:8]}" in title
    assert "Audio-Vision · optimizer adam · dev set: without / with" in title
    assert "band: mean ± 1 std over seeds" in title
    # The baseline logs no ratio or coefficient: the figure says so instead of inventing a line.
    assert "Late Concatenation logs no 'ratio', 'coeff'" in title
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["OGM · audio, n=3", "OGM · vision, n=3", "OGM + dev set · audio, n=3",
                      "OGM + dev set · vision, n=3"]
    assert fig.axes[0].get_legend().get_title().get_text() == "mean ± std over seeds"


def test_band_is_mean_and_sample_std_across_seeds(trend_store):
    runs, _ = trend_store
    results, _ = read_results(runs)
    rows = plots.select_runs(results, "losses", Selection())
    traj, _ = read_trajectories(runs, list(rows["run_id"]))
    found = plots.variants(rows)
    _, lines, _ = plots.panel_data(traj, found, plots.PLOTS["losses"].panels[0])
    train = next(line for line in lines if line.split == "train")
    values = traj[(traj["series"] == "loss") & (traj["split"] == "train") & (traj["epoch"] == 2)]["value"]
    assert train.n == 3
    assert train.mean[2] == pytest.approx(values.mean()) and train.std[2] == pytest.approx(values.std(ddof=1))


def test_selection_must_name_one_dataset(trend_store):
    runs, cells = trend_store
    other = fake_cell("concat", dataset="synth-mosei", seeds=(0,))
    store_cell(runs, other, [30])
    try:
        message = "spans dataset synth-mosei, synth-mosi: choose one with --dataset"
        with pytest.raises(ConfigError, match=message):
            plots.figure_for("losses", runs, Selection())
        fig, rows = plots.figure_for("losses", runs, Selection(dataset="synth-mosi"))
        assert set(rows["dataset"]) == {"synth-mosi"}
    finally:
        for cfg in other.configs:
            (runs / "results" / f"{cfg.run_id}.parquet").unlink()


def test_report_page_embeds_tables_and_figures(trend_store, tmp_path, monkeypatch):
    runs, cells = trend_store
    monkeypatch.setattr(selection, "expand_preset", lambda preset, **kw: cells)
    path = page.write_report("table-6.10", runs, tmp_path)
    text = path.read_text()
    assert path.name == "table-6.10-report.html" and text.startswith("<!DOCTYPE html>")
    assert text.count('<table class="bench">') == 1
    # Smoke runs: the page leaves the thesis's columns out, with one note (quick and full runs show them).
    assert "SYNTHETIC SURROGATE" in text and "Thesis accuracy" not in text
    assert text.count("The thesis figures and deltas are left out: these are smoke runs") == 1
    # 6.10 shows the ratio figure (baseline vs OGM) and the baseline's losses.
    assert text.count("data:image/png;base64,") == 2
