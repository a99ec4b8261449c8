"""Presets: the thesis tables expand to the right cells with the thesis's hyper-parameters."""

from __future__ import annotations

from collections import Counter

import pytest

from bench import presets
from bench.config import ConfigError
from bench.presets import Cell, expand, jobs_with_dependencies, preset_names, resolve_dataset, thesis_config


@pytest.fixture(autouse=True)
def _no_real_data(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing-here"))


def _cell(cells: list[Cell], **want) -> Cell:
    found = [c for c in cells if all(getattr(c, k) == v for k, v in want.items())]
    assert len(found) == 1, f"{len(found)} cells match {want}"
    return found[0]


def _runs(cells: list[Cell]) -> int:
    return sum(len(c.configs) for c in cells)


@pytest.mark.parametrize("preset, cells, runs, unique_jobs", [
    ("table-6.2", 12, 60, 60),
    ("table-6.3", 48, 240, 220),  # baseline dev_set rows reuse the standard baseline runs
    ("table-6.4", 24, 120, 120),
    ("table-6.5", 9, 45, 45),
    ("table-6.6", 10, 50, 50),
    ("table-6.7", 24, 120, 100),
    ("table-6.8", 32, 160, 120),
    ("table-6.9", 24, 120, 120),
    ("table-6.10", 44, 220, 250),  # + 2 datasets x 3 modalities x 5 seeds unimodal dependencies
])
def test_preset_sizes(preset, cells, runs, unique_jobs):
    expanded = expand(preset, source="synth")
    assert len(expanded) == cells and _runs(expanded) == runs
    assert len(jobs_with_dependencies(expanded)) == unique_jobs


def test_table_6_10_is_the_unified_comparison():
    cells = expand("table-6.10", source="synth")
    per_block = Counter((c.dataset, c.modalities) for c in cells)
    assert per_block == {(d, m): n for d in ("synth-mosi", "synth-mosei")
                         for m, n in (("audio+vision", 9), ("text+vision", 9), ("audio+vision+text", 4))}
    assert {c.method for c in cells if c.modalities == "audio+vision+text"} == {
        "ensemble", "unipre", "concat", "reconboost"}
    assert {c.optimizer for c in cells} == {"adam"} and {c.config_label for c in cells} == {"standard"}
    jobs = jobs_with_dependencies(cells)
    deps = [j for j in jobs if j.method == "unimodal"]
    assert len(deps) == 30 and Counter(j.modalities for j in deps) == {("text",): 10, ("audio",): 10,
                                                                       ("vision",): 10}
    position = {j.run_id: i for i, j in enumerate(jobs)}
    assert max(position[d.run_id] for d in deps) < min(
        position[j.run_id] for j in jobs if j.method in ("ensemble", "unipre"))
    assert all(len(c.configs) == 5 and [cfg.seed for cfg in c.configs] == [0, 1, 2, 3, 4] for c in cells)


def test_thesis_learning_rates():
    t62 = expand("table-6.2", source="synth")
    lr = {(c.family, c.modalities, c.config_label): c.configs[0].lr for c in t62}
    assert lr[("mosi", "audio", "step_every_4")] == 1e-3 and lr[("mosi", "vision", "step_every_4")] == 5e-4
    assert lr[("mosi", "text", "step_every_4")] == 1e-4 and lr[("mosei", "audio", "step_every_4")] == 5e-4
    assert lr[("mosei", "vision", "step_every_4")] == 1e-4 and lr[("mosei", "text", "step_every_4")] == 1e-4
    assert {v for k, v in lr.items() if k[2] == "standard"} == {5e-4}
    assert all(c.configs[0].step_every == (4 if c.config_label == "step_every_4" else 1) for c in t62)
    t63 = expand("table-6.3", source="synth")
    sgd = _cell(t63, family="mosi", modalities="text+vision", method="ogm", optimizer="sgd").configs[0]
    assert (sgd.optimizer, sgd.lr, sgd.momentum) == ("sgd", 1e-2, 0.9)
    assert _cell(t63, family="mosei", modalities="audio+vision", method="concat",
                 optimizer="sgd").configs[0].lr == 5e-3
    assert _cell(t63, family="mosei", modalities="audio+vision", method="ogm_ge", optimizer="adam",
                 config_label="standard").configs[0].lr == 5e-4
    rb = _cell(expand("table-6.9", source="synth"), family="mosei", modalities="audio+vision+text",
               method="reconboost", optimizer="sgd").configs[0]
    assert rb.lr == 1e-2  # appendix A.0.4: 1e-2 for SGD on both datasets


def test_method_hyper_parameters_and_windows():
    cells = expand("table-6.10", source="synth", datasets=["mosi"])
    cfg = {(c.method, c.modalities): c.configs[0] for c in cells}
    ogm_readings = {"form": "official", "include_biases": False}  # every parameter is resolved
    ogm = cfg[("ogm", "text+vision")]
    assert ogm.params == {"alpha": 0.5, **ogm_readings} and (ogm.window_start, ogm.window_end) == (0, 4)
    assert cfg[("acc", "audio+vision")].params == {"alpha": 0.5, "include_biases": False}  # acc has no form
    agm = cfg[("agm", "audio+vision")]
    assert agm.params == {"alpha": 2.0, "clip_c": 7.0, "regression_score": "mse"} and agm.window_end == 9
    pmr_readings = {"entropy_mu": 0.0, "proto_fraction": 0.1}
    assert cfg[("pmr", "audio+vision")].params == {"alpha": 0.3, "ema": 0.0, **pmr_readings}
    assert cfg[("pmr", "text+vision")].params == {"alpha": 0.5, "ema": 0.1, **pmr_readings}  # 6.10 TV: EMA rows
    rb = cfg[("reconboost", "audio+vision+text")]
    assert rb.params == {"w1": 1.0, "w2": 0.25, "consolidation_alpha": 0.5, "consolidation": "official",
                         "stage_epochs": 1, "rectify_epochs": 1, "eta_init": 1.0, "stage0_q": "official",
                         "optimizer_reset": "phase"}
    assert rb.scheduler == "none" and rb.max_epochs == 12
    assert all(c.max_epochs == 12 and c.profile == "quick" for c in cfg.values())


def test_dev_set_and_ema_configurations():
    t63 = expand("table-6.3", source="synth", datasets=["mosi"], modalities=["audio+vision"])
    dev = _cell(t63, method="ogm", config_label="dev_set").configs[0]
    assert dev.dev_set and dev.ratio_every == 5
    base_dev = _cell(t63, method="concat", config_label="dev_set")
    base_std = _cell(t63, method="concat", config_label="standard", optimizer="adam")
    assert base_dev.run_ids == base_std.run_ids  # the thesis reuses the standard baseline
    agm = _cell(expand("table-6.7", source="synth", datasets=["mosei"], modalities=["text+vision"]),
                method="agm", config_label="dev_set").configs[0]
    assert agm.dev_set and agm.ratio_every == 2
    t68 = expand("table-6.8", source="synth", datasets=["mosi"], modalities=["text+vision"], methods=["pmr"])
    assert _cell(t68, config_label="ema_prototypes").configs[0].params["ema"] == 0.1
    assert _cell(t68, config_label="dev_set").configs[0].ratio_every == 5
    assert _cell(t68, config_label="standard", optimizer="adam").configs[0].params["ema"] == 0.0


def test_windows_are_clipped_to_short_profiles_and_long_rows():
    smoke = expand("table-6.10", profile="smoke", source="synth", datasets=["mosi"], methods=["agm", "ogm"])
    assert {(c.configs[0].window_start, c.configs[0].window_end, c.configs[0].max_epochs) for c in smoke} == {
        (0, 1, 2)}
    full = expand("table-6.9", profile="full", source="synth", datasets=["mosi"], methods=["reconboost"])
    assert {c.configs[0].max_epochs for c in full} == {200}
    long = expand("table-6.5", profile="full", source="synth")
    run = _cell(long, method="ogm_ge", modalities="text+vision", config_label="100_epochs_no_early_stop_dev_set")
    cfg = run.configs[0]
    assert (cfg.max_epochs, cfg.early_stopping, cfg.lr, cfg.window_end, cfg.dev_set) == (100, False, 8e-5, 49, True)
    all_epochs = _cell(expand("table-6.6", source="synth"), method="ogm", modalities="audio+vision",
                       config_label="modulate_all_epochs").configs[0]
    assert all_epochs.window_end == -1 and all_epochs.in_window(11)


def test_overrides_apply_to_every_config_and_reclip_the_window():
    cells = expand("table-6.10", source="synth", datasets=["mosi"], methods=["agm"], seeds=[7],
                   overrides={"max_epochs": 3, "method_params": {"alpha": 1.0}})
    for cell in cells:
        (cfg,) = cell.configs
        assert (cfg.max_epochs, cfg.window_end, cfg.params["alpha"], cfg.seed) == (3, 2, 1.0, 7)


def test_filters_select_cells():
    cells = expand("table-6.3", source="synth", datasets=["mosei"], methods=["ogm"], optimizers=["adam"],
                   modalities=["text,vision"], dev_set=False, seeds=[0, 1])
    assert [(c.config_label, c.optimizer) for c in cells] == [("standard", "adam"), ("step_every_4", "adam")]
    assert all(c.family == "mosei" and len(c.configs) == 2 for c in cells)
    only_dev = expand("table-6.3", source="synth", dev_set=True)
    assert {c.config_label for c in only_dev} == {"dev_set"}


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "table-9"}, "unknown preset"),
    ({"preset": "table-6.3", "methods": ["agm"]}, "unknown method"),
    ({"preset": "table-6.3", "optimizers": ["rmsprop"]}, "unknown optimizer"),
    ({"preset": "table-6.3", "modalities": ["smell"]}, "unknown modality"),
    ({"preset": "table-6.3", "seeds": []}, "seeds"),
    ({"preset": "table-6.3", "datasets": ["iemocap"]}, "unknown dataset"),
    ({"preset": "table-6.3", "profile": "huge"}, "unknown profile"),
    ({"preset": "table-6.2", "modalities": ["text+vision"]}, "no cells"),
    ({"preset": "table-6.3", "overrides": {"method_params": {"beta": 1.0}}, "methods": ["ogm"]}, "beta"),
])
def test_bad_requests_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        expand(source="synth", **kwargs)


def test_source_picks_real_files_when_present(tmp_path, monkeypatch):
    assert resolve_dataset("mosi", "auto") == "synth-mosi"
    real = tmp_path / "data" / "MOSI" / "Processed"
    real.mkdir(parents=True)
    (real / "unaligned_50.pkl").write_bytes(b"")
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "data"))
    assert resolve_dataset("mosi", "auto") == "mosi" and resolve_dataset("mosei", "auto") == "synth-mosei"
    assert resolve_dataset("mosei", "real") == "mosei" and resolve_dataset("mosi", "synth") == "synth-mosi"
    cells = expand("table-6.10", datasets=["mosi", "mosei"], methods=["concat"])
    assert {c.dataset for c in cells} == {"mosi", "synth-mosei"}
    with pytest.raises(ConfigError, match="source"):
        resolve_dataset("mosi", "cloud")


def test_all_preset_covers_every_method_and_combination():
    cells = expand("all", source="synth", datasets=["mosi"], seeds=[0])
    combos = {(c.method, c.modalities) for c in cells}
    assert ("concat", "audio+text") in combos and ("reconboost", "audio+vision+text") in combos
    assert {m for (meth, m) in combos if meth == "unimodal"} == {"text", "audio", "vision"}
    assert {c.optimizer for c in cells} == {"adam", "sgd"}
    dev_methods = {c.method for c in cells if c.config_label == "dev_set"}
    assert dev_methods == {"ogm", "ogm_ge", "acc", "agm", "pmr"}
    assert len({cfg.run_id for c in cells for cfg in c.configs}) == _runs(cells)


def test_thesis_config_is_the_cell_config():
    cell = _cell(expand("table-6.8", source="synth", datasets=["mosi"]), method="pmr",
                 modalities="audio+vision", config_label="dev_set")
    again = thesis_config("synth-mosi", "pmr", "audio,vision", config_label="dev_set", seed=0)
    assert again == cell.configs[0]
    assert "table-6.10" in preset_names() and "all" in preset_names()


def test_presets_pin_the_current_data_version() -> None:
    from bench.data import load_dataset

    cells = presets.expand("table-6.10", profile="smoke", datasets=("mosi",), seeds=(0,))
    pinned = {cfg.data_version for cell in cells for cfg in cell.configs}
    assert pinned == {load_dataset("synth-mosi", "smoke").fingerprint}
    deps = [cfg for cfg in presets.jobs_with_dependencies(cells) if cfg.method == "unimodal"]
    assert deps and {cfg.data_version for cfg in deps} == pinned


def test_all_preset_gives_dev_set_rows_to_exactly_the_methods_that_have_a_variant() -> None:
    from bench.methods import REGISTRY

    cells = presets.expand("all", profile="smoke", datasets=("mosi",), seeds=(0,))
    with_dev = {cell.method for cell in cells if cell.config_label == "dev_set"}
    assert with_dev == {name for name, cls in REGISTRY.items() if cls.has_dev_set_variant}
    assert with_dev == {"ogm", "ogm_ge", "acc", "agm", "pmr"}


def test_a_label_rule_override_applies_to_the_datasets_it_fits():
    cells = expand("table-6.10", profile="smoke", source="synth", seeds=(0,), methods=["concat"],
                   overrides={"label_rule": "round"})
    rules = {c.family: {cfg.label_rule for cfg in c.configs} for c in cells}
    assert rules == {"mosi": {"sign"}, "mosei": {"round"}}
    default = expand("table-6.10", profile="smoke", source="synth", seeds=(0,), methods=["concat"],
                     datasets=["mosei"])
    assert {cfg.label_rule for c in default for cfg in c.configs} == {"binned"}
    assert {c.run_ids for c in default}.isdisjoint({c.run_ids for c in cells})
    with pytest.raises(ConfigError, match="label rule .round. applies to none of synth-mosi"):
        expand("table-6.10", profile="smoke", source="synth", datasets=["mosi"], overrides={"label_rule": "round"})


def test_method_variants_and_on_model_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A method's declared variant label sets its params; on_<model> sets the model; others are errors."""
    from bench.methods import REGISTRY
    from bench.report.labels import config_name

    monkeypatch.setattr(REGISTRY["agm"], "variants", {"low_alpha": {"alpha": 0.5}})
    cfg = thesis_config("synth-mosi", "agm", "text,vision", config_label="low_alpha")
    assert cfg.params["alpha"] == 0.5
    assert thesis_config("synth-mosi", "agm", "text,vision").params["alpha"] == 2.0
    on_model = thesis_config("synth-mosi", "concat", "text,vision", config_label="on_late_fusion")
    assert on_model.model == "late_fusion"
    with pytest.raises(ConfigError, match="no model 'nope'"):
        thesis_config("synth-mosi", "concat", "text,vision", config_label="on_nope")
    with pytest.raises(ConfigError, match="unknown configuration label 'low_alpha' for 'concat'"):
        thesis_config("synth-mosi", "concat", "text,vision", config_label="low_alpha")
    assert config_name("on_late_fusion", "adam") == "on the late_fusion model"


def test_table_modern_runs_mmpareto_again_under_its_official_recipe():
    # GeWu-Lab/MMPareto_ICML2024 code/MMPareto.py: SGD lr 2e-3, momentum 0.9, weight decay 1e-4, a StepLR it
    # never steps; one labelled row per modality block beside the Adam row, which stays as it was
    cells = expand("table-modern", source="synth", seeds=(0,))
    official = [c for c in cells if c.config_label == "official_recipe"]
    assert {(c.method, c.optimizer) for c in official} == {("mmpareto", "sgd")}
    assert len(official) == 6  # 3 modality blocks x 2 datasets
    cfg = official[0].configs[0]
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.scheduler) == ("sgd", 2e-3, 0.9, 1e-4, "none")
    adam = _cell(cells, method="mmpareto", config_label="standard", modalities=official[0].modalities,
                 dataset=official[0].dataset)
    assert adam.optimizer == "adam" and adam.configs[0].scheduler == "plateau"
