"""Fakes for the report tests: preset cells and a small store written with the real store writer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.plan.resolve import make_config
from bench.presets import Cell
from bench.store import RunRecord, save_result

FINGERPRINT = "feedc0de12345678abcdef"


def fake_cell(method: str, modalities: str = "audio+vision", dataset: str = "synth-mosi", table: str = "6.10",
              config_label: str = "standard", optimizer: str = "adam", seeds: Sequence[int] = (0, 1, 2, 3, 4),
              profile: str = "smoke", **fields: Any) -> Cell:
    """A preset cell with one real RunConfig per seed (run ids are the real hashes)."""
    configs = tuple(
        make_config(dataset, profile=profile, modalities=modalities, method=method, optimizer=optimizer,
                    seed=seed, **fields)
        for seed in seeds
    )
    return Cell(table=table, dataset=dataset, family=dataset.removeprefix("synth-"), modalities=modalities,
                method=method, config_label=config_label, optimizer=optimizer, configs=configs)


STEP_SERIES = {  # what each method logs per optimizer step (see bench/methods)
    "ogm": ("score", "ratio", "coeff"),
    "ogm_ge": ("score", "ratio", "coeff"),
    "agm": ("score", "r", "tau", "coeff", "strength"),
    "pmr": ("score", "ratio", "beta"),
}


def fake_trajectory(cfg: Any, epochs: int = 4, steps_per_epoch: int = 10) -> list[dict[str, Any]]:
    """Trajectory rows shaped like the trainer's: per-step method logs, per-epoch losses and accuracies."""
    rng = np.random.default_rng(cfg.seed)
    mods = [m for m in ("audio", "vision", "text") if m in cfg.modalities]
    rows: list[dict[str, Any]] = []

    def add(epoch: int, step: int, split: str, series: str, modality: str, value: float) -> None:
        rows.append({"epoch": epoch, "step": step, "split": split, "series": series, "modality": modality,
                     "value": float(value)})

    step = 0
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            step += 1
            for series in STEP_SERIES.get(cfg.method, ()):
                for i, m in enumerate(mods):
                    drift = 0.005 if cfg.dev_set else 0.01
                    add(epoch, step, "train", series, m, 1.0 + 0.3 * i + 0.1 * rng.normal() + drift * step)
        add(epoch, step, "train", "loss", "", 1.1 - 0.1 * epoch + 0.02 * rng.normal())
        add(epoch, step, "valid", "loss", "", 1.2 - 0.05 * epoch + 0.02 * rng.normal())
        add(epoch, step, "valid", "acc", "", 50 + 3 * epoch + rng.normal())
        for i, m in enumerate(mods):
            add(epoch, step, "valid", "loss", m, 1.3 - 0.03 * epoch * (i + 1) + 0.02 * rng.normal())
            add(epoch, step, "valid", "acc", m, 40 + 2 * epoch * (i + 1) + rng.normal())
            if cfg.method == "pmr":
                add(epoch, step, "train", "proto_acc", m, 35 + 2 * epoch + rng.normal())
    return rows


def store_cell(runs_dir: Path, cell: Cell, accs: Sequence[float], losses: Sequence[float] | None = None,
               failed: Sequence[int] = (), trajectory: Any = None, fingerprint: str = FINGERPRINT,
               synthetic: bool | None = None) -> None:
    """Store the first len(accs) seeds of `cell` as ok runs; seeds listed in `failed` as failed runs."""
    losses = losses if losses is not None else [100.0 - a for a in accs]
    for index, cfg in enumerate(cell.configs):
        if cfg.seed in failed:
            save_result(runs_dir, RunRecord(config=cfg, status="failed", error="non-finite loss",
                                            data_fingerprint=fingerprint, synthetic=synthetic))
            continue
        if index >= len(accs):
            continue
        rows = trajectory(cfg) if trajectory is not None else []
        save_result(runs_dir, RunRecord(config=cfg, status="ok",
                                        metrics={"test_acc": accs[index], "test_loss": losses[index]},
                                        trajectory=rows, data_fingerprint=fingerprint, synthetic=synthetic))


def test_a_reconstructed_method_says_so_in_its_name(monkeypatch) -> None:
    """Method.provenance joins the display name, so every table row and plot legend carries it."""
    from bench.methods import REGISTRY
    from bench.methods.base import RECONSTRUCTED
    from bench.report.labels import method_name

    plain = method_name("agm")
    monkeypatch.setattr(REGISTRY["agm"], "provenance", RECONSTRUCTED)
    assert method_name("agm") == f"{plain} (reconstructed from the paper's description)"


def test_dataset_names_and_order_come_from_the_specs_and_keep_todays_labels() -> None:
    from bench.report import labels as report_labels

    names = {d: (report_labels.dataset_name(d), report_labels.dataset_short(d))
             for d in ("mosi", "mosei", "synth-mosi", "synth-mosei", "synth-mosi-aligned", "sims", "/d/x.pkl")}
    assert names == {"mosi": ("CMU-MOSI", "MOSI"), "mosei": ("CMU-MOSEI", "MOSEI"),
                     "synth-mosi": ("synth-MOSI (surrogate)", "synth-MOSI"),
                     "synth-mosei": ("synth-MOSEI (surrogate)", "synth-MOSEI"),
                     "synth-mosi-aligned": ("synth-MOSI-ALIGNED (surrogate)", "synth-mosi-aligned"),
                     "sims": ("CH-SIMS", "SIMS"), "/d/x.pkl": ("/d/x.pkl", "/d/x.pkl")}
    ranks = [report_labels.dataset_rank(d) for d in ("synth-mosi", "mosei", "synth-mosei", "sims", "/d/x.pkl")]
    assert ranks[0] == 0 and ranks[1] == ranks[2] == 1 and ranks[3] == 2 and ranks[4] > 2
    assert report_labels.is_synthetic_name("synth-mosei-shift") and not report_labels.is_synthetic_name("synth-x")
