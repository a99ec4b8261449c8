"""`bench table / plot / report` through the real CLI entry point, and the file-writing API."""

from __future__ import annotations

import pytest
from test_report_helpers import fake_cell, fake_trajectory, store_cell

from bench import selection
from bench.cli import main
from bench.presets import expand
from bench.report import sources
from bench.report.tables import render_table, write_table_files


@pytest.fixture()
def small_store(tmp_path, monkeypatch):
    """Baseline and OGM on synth-mosi audio+vision (quick: thesis figures may stand beside them); the preset
    returns these cells."""
    cells = [fake_cell("concat", profile="quick"), fake_cell("ogm", profile="quick")]
    store_cell(tmp_path, cells[0], [50, 51, 52, 53, 54], trajectory=fake_trajectory)
    store_cell(tmp_path, cells[1], [60, 61, 62, 63, 64], trajectory=fake_trajectory)
    monkeypatch.setattr(selection, "expand_preset", lambda preset, **kw: cells)
    return tmp_path


def test_corrupt_result_file_is_reported_and_skipped(small_store, capsys):
    (small_store / "results" / "0123456789abcdef.parquet").write_bytes(b"not parquet at all")
    main(["table", "table-6.10", "--runs-dir", str(small_store)])
    out, err = capsys.readouterr()
    assert "warning: skipped" in err and "0123456789abcdef.parquet: unreadable parquet" in err
    # 5 paired seeds: the exact test's smallest p is 0.0625, so OGM is tied with the baseline (≈), not marked.
    assert "| OGM | 62.00 ± 1.58≈ | 38.00 ± 1.58≈ |" in out
    assert "1 unreadable or foreign result file(s) skipped" in out


def test_table_formats_and_out_file(small_store, tmp_path, capsys):
    out_file = tmp_path / "t" / "table.tex"
    main(["table", "table-6.10", "--runs-dir", str(small_store), "--format", "latex", "--vs-thesis",
          "--out", str(out_file)])
    assert f"written: {out_file}" in capsys.readouterr().out
    assert out_file.read_text().count("\\begin{tabular}") == 1
    csv_text = render_table("table-6.10", small_store, "csv")
    assert csv_text.splitlines()[0].startswith("preset,table,dataset,synthetic,data_fingerprint")
    assert len(csv_text.splitlines()) == 1 + 2 * 2


def test_unknown_format_exits_2(small_store, capsys):
    with pytest.raises(SystemExit) as done:
        main(["table", "table-6.10", "--runs-dir", str(small_store), "--format", "docx"])
    assert done.value.code == 2
    expected = "error: unknown table format 'docx'; choose from md, latex, csv, html"
    assert capsys.readouterr().err.strip() == expected


def test_write_table_files(small_store, tmp_path):
    paths = write_table_files("table-6.10", small_store, tmp_path / "reports")
    assert {k: p.name for k, p in paths.items()} == {
        "md": "table-6.10.md", "latex": "table-6.10.tex", "csv": "table-6.10.csv", "html": "table-6.10.html"}
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert "Thesis accuracy" in paths["md"].read_text()  # files carry the thesis comparison


def test_plot_command_writes_png_and_pdf(small_store, tmp_path, capsys):
    out = tmp_path / "fig.png"
    main(["plot", "ratios", "--runs-dir", str(small_store), "--out", str(out), "--pdf", "--seeds", "0,1"])
    printed = capsys.readouterr().out
    assert f"written: {out}" in printed and "fig.pdf" in printed
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"


def test_report_command(small_store, tmp_path, capsys):
    main(["report", "table-6.10", "--runs-dir", str(small_store), "--out-dir", str(tmp_path)])
    assert f"written: {tmp_path / 'table-6.10-report.html'}" in capsys.readouterr().out
    page = (tmp_path / "table-6.10-report.html").read_text(encoding="utf-8")
    assert "sample std over seeds (ddof=1)" in page  # the std convention, in the page's captions


def test_real_preset_join(tmp_path, capsys):
    """The real preset's run ids find the stored runs; everything else is shown missing."""
    kwargs = {"profile": "quick", "datasets": ("mosi",), "source": "synth", "seeds": (0, 1)}
    cell = next(c for c in expand("table-6.10", **kwargs)
                if c.method == "concat" and c.modalities == "text+vision")
    store_cell(tmp_path, cell, [74.0, 75.0], [66.0, 67.0])
    main(["table", "table-6.10", "--runs-dir", str(tmp_path), "--profile", "quick", "--dataset", "mosi",
          "--source", "synth", "--seeds", "0,1", "--vs-thesis"])
    out = capsys.readouterr().out
    # Thesis 6.10 MOSI text+vision Late Concatenation: 74.35 ± 0.58 / 66.57 ± 0.49. The only cell with runs has
    # no next-ranked cell to differ from, so it is not marked best.
    assert ("| Late Concatenation (Baseline) | 74.50 ± 0.71 | 74.35 ± 0.58 | +0.15 | "
            "66.50 ± 0.71 | 66.57 ± 0.49 | -0.07 |") in out
    assert out.count("| — |") >= 20  # every other cell of the preset is shown as missing
    assert "Test split (quick profile): synth-mosi 300 samples" in out


def test_smoke_runs_leave_the_thesis_columns_out_with_one_note(tmp_path, capsys):
    kwargs = {"profile": "smoke", "datasets": ("mosi",), "source": "synth", "seeds": (0, 1)}
    cell = next(c for c in expand("table-6.10", **kwargs)
                if c.method == "concat" and c.modalities == "text+vision")
    store_cell(tmp_path, cell, [74.0, 75.0], [66.0, 67.0])
    main(["table", "table-6.10", "--runs-dir", str(tmp_path), "--profile", "smoke", "--dataset", "mosi",
          "--source", "synth", "--seeds", "0,1", "--vs-thesis"])
    out = capsys.readouterr().out
    assert "Thesis accuracy" not in out and "| Late Concatenation (Baseline) | 74.50 ± 0.71 | 66.50 ± 0.71 |" in out
    assert out.count("The thesis figures and deltas are left out: these are smoke runs") == 1
    # 24 test samples on smoke: one sample moves accuracy by 100 / 24 = 4.17 points.
    assert "Test split (smoke profile): synth-mosi 24 samples (one sample = 4.17 points of a percentage)" in out


def test_plot_by_run_ids_and_unmatched_selection(small_store, tmp_path, capsys):
    cells = sources.expand_preset("table-6.10")
    ids = [cfg.run_id for cfg in cells[1].configs[:2]]  # two OGM seeds
    out = tmp_path / "losses.png"
    main(["plot", "losses", "--runs-dir", str(small_store), "--run-id", ids[0], "--run-id", ids[1],
          "--out", str(out)])
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit) as done:
        main(["plot", "strengths", "--runs-dir", str(small_store)])
    assert done.value.code == 2
    assert "no ok runs match the selection for 'strengths' (methods agm)" in capsys.readouterr().err


def test_html_table_tags_are_balanced(small_store):
    from html.parser import HTMLParser

    class Balance(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.stack: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag not in ("meta",):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack.pop() == tag

    parser = Balance()
    parser.feed(render_table("table-6.10", small_store, "html", vs_thesis=True))
    assert parser.stack == []
