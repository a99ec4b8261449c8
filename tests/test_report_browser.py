"""`bench report`'s page in a real browser (headless Chromium): every figure loads, no table overflows.

Chromium loads a copy of the page with a small script that measures the DOM once everything has loaded
and writes the numbers into the page; `--dump-dom` prints the page, and the test reads them back. A
screenshot of the whole page is kept in BENCH_SCREENSHOT_DIR when that is set. Without Chromium the test
is skipped, except under CI (the CI environment variable), where it fails: .ci/run installs it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_report_helpers import fake_trajectory, store_cell

from bench.presets import expand
from bench.report.page import write_report

pytestmark = pytest.mark.slow

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1280, 800  # a laptop window: the widest table (6.10 beside the thesis) must fit in it
PRESET = {"profile": "smoke", "datasets": ("mosi", "mosei"), "source": "synth", "seeds": (0, 1)}
FIGURE_METHODS = ("concat", "ogm")  # the methods table 6.10's figures draw (standard configuration)

MEASURE_JS = """
window.addEventListener('load', function () {
  var images = Array.from(document.images).map(function (img) {
    return {alt: img.alt, complete: img.complete, naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight};
  });
  var tables = Array.from(document.querySelectorAll('table')).map(function (table) {
    var box = table.parentElement;
    return {width: table.getBoundingClientRect().width, boxWidth: box.clientWidth,
            boxScrollWidth: box.scrollWidth};
  });
  var page = document.documentElement;
  var out = document.createElement('pre');
  out.id = 'bench-measurements';
  out.textContent = JSON.stringify({images: images, tables: tables, pageWidth: page.clientWidth,
                                    pageScrollWidth: page.scrollWidth, pageHeight: page.scrollHeight});
  document.body.appendChild(out);
});
"""


def find_browser() -> str | None:
    """$BENCH_CHROMIUM, or the first Chromium / Chrome on PATH."""
    if os.environ.get("BENCH_CHROMIUM"):
        return os.environ["BENCH_CHROMIUM"]
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        reason = "Chromium is not installed (Debian: apt-get install -y chromium), so the page cannot be opened"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs it before the tests")
        pytest.skip(reason)
    return path


def chromium(binary: str, page: Path, profile: Path, *flags: str, height: int = HEIGHT) -> str:
    """Open `page` headless in a WIDTH x height window; Chromium's stdout."""
    args = [binary, "--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={WIDTH},{height}", "--virtual-time-budget=10000",
            *flags, page.as_uri()]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    done = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


def measure(binary: str, page: Path, profile: Path) -> dict[str, Any]:
    """The DOM measurements of MEASURE_JS for `page` (a measuring copy is written next to it)."""
    text = page.read_text(encoding="utf-8")
    probe = page.with_name(f"measure-{page.name}")
    probe.write_text(text.replace("</head>", f"<script>{MEASURE_JS}</script>\n</head>", 1), encoding="utf-8")
    dom = chromium(binary, probe, profile, "--dump-dom")
    found = re.search(r'<pre id="bench-measurements">(.*?)</pre>', dom, re.S)
    assert found, f"the measuring script did not run; Chromium printed: {dom[:500]}"
    return json.loads(html.unescape(found.group(1)))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def problems(measured: dict[str, Any]) -> list[str]:
    """What a person would see as broken: figures that did not load, tables wider than their box."""
    found = [f"figure not loaded: {img['alt'][:80]}" for img in measured["images"]
             if not img["complete"] or img["naturalWidth"] <= 0]
    for index, table in enumerate(measured["tables"]):
        if table["width"] > table["boxWidth"] + 0.5 or table["boxScrollWidth"] > table["boxWidth"]:
            found.append(f"table {index} overflows: {table['width']:.0f} px in a {table['boxWidth']} px box")
    if measured["pageScrollWidth"] > measured["pageWidth"]:
        found.append(f"page scrolls sideways: {measured['pageScrollWidth']} px in a {measured['pageWidth']} px window")
    return found


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The table-6.10 report page (smoke, mosi + mosei, 2 seeds) on fake stored runs; one seed failed."""
    runs = tmp_path_factory.mktemp("browser-runs")
    rng = np.random.default_rng(0)
    for index, cell in enumerate(expand("table-6.10", **PRESET)):
        accs = list(np.round(30 + 40 * rng.random(2), 2))
        losses = list(np.round(90 + 30 * rng.random(2), 2))
        figure = cell.method in FIGURE_METHODS and cell.config_label == "standard"
        store_cell(runs, cell, accs, losses, failed=(1,) if index == 3 else (),
                   trajectory=fake_trajectory if figure else None)
    return write_report("table-6.10", runs, tmp_path_factory.mktemp("browser-report"), **PRESET)


def test_report_page_in_chromium(browser: str, report: Path, tmp_path: Path) -> None:
    measured = measure(browser, report, tmp_path / "profile")
    n_images = report.read_text(encoding="utf-8").count("<img ")
    assert len(measured["images"]) == n_images >= 4
    assert len(measured["tables"]) == 1
    assert problems(measured) == []
    shot = tmp_path / "table-6.10-report.png"
    height = min(int(measured["pageHeight"]), 16000)
    chromium(browser, report, tmp_path / "profile", f"--screenshot={shot}", height=height)
    assert png_size(shot) == (WIDTH, height) and shot.stat().st_size > 50_000
    if os.environ.get("BENCH_SCREENSHOT_DIR"):
        keep = Path(os.environ["BENCH_SCREENSHOT_DIR"])
        keep.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, keep / shot.name)


def test_the_check_sees_a_broken_figure_and_a_wide_table(browser: str, report: Path, tmp_path: Path) -> None:
    """The same measurements on a page with one corrupt image and one over-wide table report both."""
    page = report.read_text(encoding="utf-8")
    broken = re.sub(r'src="data:image/png;base64,[^"]{0,40}', 'src="data:image/png;base64,AAAA', page, count=1)
    broken = broken.replace('<table class="bench">', '<table class="bench" style="min-width: 3000px">', 1)
    copy = tmp_path / "broken.html"
    copy.write_text(broken, encoding="utf-8")
    found = problems(measure(browser, copy, tmp_path / "profile"))
    assert len(found) == 2, found  # the table scrolls inside its section: the page itself stays put
    assert found[0].startswith("figure not loaded: ") and "overflows: 3000 px" in found[1]
