"""The redesign's contract: every run id of every preset x profile x dataset (the job lists of
`bench grid PRESET --dry-run`, dependencies included), the ids `bench run` resolves, and the column lists of
the result, trajectory, prediction and evaluation files are those pinned in tests/golden/run_ids.json.

A change that moves an id on purpose (a method's new default) regenerates the file with
`python tests/golden/make_golden.py` and says so in its commit.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(GOLDEN_DIR))

import make_golden  # noqa: E402

PINNED = json.loads((GOLDEN_DIR / "run_ids.json").read_text())


def _differences(pinned: dict, now: dict) -> list[str]:
    keys = sorted(set(pinned) | set(now))
    return [f"{k}: pinned {pinned.get(k)}, now {now.get(k)}" for k in keys if pinned.get(k) != now.get(k)]


def test_every_preset_profile_and_dataset_keeps_its_run_ids() -> None:
    now = {}
    for key in PINNED["presets"]:
        preset, profile, dataset = key.split("|")
        try:
            rows = make_golden.job_ids(preset, profile, dataset)
        except Exception as err:  # noqa: BLE001  (the pin records which combinations have no cells)
            now[key] = {"error": type(err).__name__}
        else:
            now[key] = {"count": len(rows), "digest": make_golden.digest(rows)}
    assert _differences(PINNED["presets"], now) == []


def test_bench_run_resolves_the_pinned_ids() -> None:
    assert _differences(PINNED["run"], make_golden.run_case_ids()) == []


@pytest.mark.slow
def test_stored_files_keep_their_columns() -> None:
    assert make_golden.stored_columns() == PINNED["columns"]
