"""The presets `msa-seeds` and `ood`: which cells they hold and what each run is configured with."""

from __future__ import annotations

from bench.presets import expand
from bench.presets_msa import OOD_BASELINES, ood_methods
from bench.report.model import PUBLISHED_SOURCES


def test_msa_seeds_cells_are_the_systems_their_variants_and_concat_on_each_model() -> None:
    cells = expand("msa-seeds", profile="smoke", datasets=("mosi",), source="synth", seeds=(0,))
    labels = {(c.method, c.config_label) for c in cells}
    assert labels == {
        ("concat", "standard"), ("concat", "on_feada"), ("concat", "on_sati"),
        ("feada", "standard"), ("feada", "no_uni"), ("feada", "no_con"), ("feada", "no_kl"),
        ("feada", "no_prompt"), ("sati", "standard"), ("sati", "no_adversarial"), ("sati", "no_svr"),
        ("sati", "reuse_audio_gate"),
    }
    by_label = {(c.method, c.config_label): c.configs[0] for c in cells}
    assert all(cfg.task == "regression" and cfg.modalities == ("text", "audio", "vision")
               for cfg in by_label.values())
    assert by_label[("concat", "on_feada")].model == "feada"
    assert by_label[("concat", "standard")].model == "late_fusion"
    assert by_label[("feada", "no_kl")].params["use_kl"] is False
    assert by_label[("feada", "standard")].params["use_kl"] is True
    assert PUBLISHED_SOURCES["msa-seeds"] == ("feada", "sati")


def test_ood_tests_each_source_on_the_other_family_shifted_twin() -> None:
    cells = expand("ood", profile="smoke", source="synth", seeds=(0, 1))
    targets = {(c.dataset, c.configs[0].test_dataset) for c in cells}
    assert targets == {("synth-mosi", "synth-mosei-shift"), ("synth-mosei", "synth-mosi-shift")}
    methods = ood_methods()
    assert methods[:len(OOD_BASELINES)] == list(OOD_BASELINES)
    assert {"feada", "sati", "cpsl", "s2lif", "agm"} <= set(methods)
    assert "ogm" not in methods  # no regression form
    assert len(cells) == 2 * len(methods)
    assert all(len(c.configs) == 2 and c.configs[0].task == "regression" for c in cells)


def test_bench_run_keeps_the_papers_task_settings_and_matches_the_preset_run() -> None:
    from bench.api import run_configs
    from bench.presets import expand

    tav = ("text", "audio", "vision")
    ran = run_configs("sati", tav, "synth-mosi", task="regression", seeds=(0,))[0]
    assert dict(ran.task_params) == {"loss": "mse", "checkpoint": "acc2_has0"}  # SATI's paper_fields, not the task's
    cell = next(c for c in expand("msa-seeds", "quick", datasets=("mosi",), seeds=(0,))
                if c.method == "sati" and c.config_label == "standard")
    assert ran.run_id == cell.configs[0].run_id  # `bench run` trains the preset's run
    mine = run_configs("sati", tav, "synth-mosi", task="regression", task_params={"checkpoint": "loss"}, seeds=(0,))[0]
    assert dict(mine.task_params) == {"loss": "mse", "checkpoint": "loss"}  # a user's option replaces one key
    feada = run_configs("feada", tav, "synth-mosi", task="regression", model_params={"text_summary": "token0"},
                        seeds=(0,))[0]
    assert dict(feada.model_params)["size"] == "quick" and dict(feada.model_params)["text_summary"] == "token0"
