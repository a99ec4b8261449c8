"""Per-modality labels stored and used: a run on data with a label per modality keeps `target_<m>` beside
`prediction_<m>` in its predictions file and reports each modality's metrics against its own label and the
multimodal one; `bench table --modality-view` shows them. Data without such labels keeps its columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench import api
from bench.data.registry import spec_for
from bench.models import EncoderSize, ModelSpec, model_class
from bench.report import modality_view
from bench.store.schema import prediction_schema
from bench.tasks import make_task


def test_the_prediction_schema_adds_target_columns_only_for_modalities_with_labels() -> None:
    plain = prediction_schema(("text", "audio"))
    assert not any(name.startswith("target_") for name in plain.names)
    sims = prediction_schema(("text", "audio"), ("audio", "text"))
    assert sims.names[-2:] == ["target_text", "target_audio"] and sims.names[:-2] == plain.names


def test_the_modality_view_scores_each_output_against_both_labels() -> None:
    from bench.data.types import SplitArrays

    task = make_task("regression", spec=spec_for("sims"))
    truth = torch.tensor([0.4, -0.6, 0.2, -0.2])  # (N,) multimodal label
    own = np.array([0.4, 0.6, -0.2, -0.2], dtype=np.float32)  # (N,) the audio label: signs + + - -
    outputs = {"audio": torch.tensor([[0.5], [0.3], [-0.1], [-0.4]])}
    split = SplitArrays(features={}, lengths={}, labels=np.zeros(4, dtype=np.int64),
                        regression=truth.numpy(), ids=np.array(["a", "b", "c", "d"]),
                        modality_scores={"audio": own})
    view = task.modality_view(outputs, truth.double().numpy(), split)
    # own label bins 1,1,0,0 == output bins 1,1,0,0: Acc-2 100 %; multimodal bins 1,0,1,0: 2 of 4 = 50 %
    assert view["audio_own_acc2"] == pytest.approx(100.0) and view["audio_mm_acc2"] == pytest.approx(50.0)
    # MAE against its own label: |0.1| + |0.3| + |0.1| + |0.2| = 0.7 / 4 = 0.175
    assert view["audio_own_mae"] == pytest.approx(0.175)
    assert "text_own_acc2" not in view  # no text output, no text label here
    assert make_task("regression", spec=spec_for("mosi")).modality_view(outputs, truth.numpy(), split) == {}


def test_a_run_stores_each_modality_target_and_the_view_table_shows_it(tmp_path: Path) -> None:
    rows = api.run("concat", "text,audio", "synth-sims", profile="smoke", seeds=(0,), task="regression",
                   runs_dir=tmp_path, executor="inline", progress=False, echo=None)
    assert (rows["status"] == "ok").all()
    predictions = pd.read_parquet(next((tmp_path / "predictions").glob("*.parquet")))
    assert {"target_text", "target_audio", "prediction_text", "prediction_audio"} <= set(predictions.columns)
    assert "target_vision" not in predictions.columns
    result = pd.read_parquet(next((tmp_path / "results").glob("*.parquet")))
    assert np.isfinite(result["test_audio_own_acc2"]).all() and np.isfinite(result["test_text_mm_corr"]).all()
    assert result["test_vision_own_acc2"].isna().all()  # a SIMS column of a modality the run does not train

    selection = {"profile": "smoke", "datasets": ("synth-sims",), "seeds": (0,), "methods": ("concat",),
                 "modalities": "text+audio"}  # the `sims` preset's concat text+audio cell, as `bench table` asks
    text = api.render_modality_view("sims", tmp_path, "md", **selection)
    assert "Modality view" in text and "| text |" in text and "| audio |" in text and "SYNTHETIC" in text
    frame = modality_view.view_frame(api.select("sims", tmp_path, **selection).cells, result)
    assert set(frame["modality"]) == {"text", "audio"}
    assert frame.loc[frame["modality"] == "audio", "own_acc2_mean"].item() == pytest.approx(
        result["test_audio_own_acc2"].item())


def test_the_mlp_model_offers_late_fusions_interface_and_feature_widths() -> None:
    spec = ModelSpec(modalities=("pix", "mor"), input_dims=(("pix", 240), ("mor", 6)),
                     sizes=(("pix", EncoderSize(8, 4)), ("mor", EncoderSize(8, 4))), num_classes=10)
    model = model_class("mlp_late_fusion").build(spec)
    assert model_class("mlp_late_fusion").capabilities == model_class("late_fusion").capabilities
    assert (model.feature_dim("pix"), model.feature_dim("mor")) == (4, 4) and model.head.in_features == 8
    lengths = torch.ones(3, dtype=torch.long)
    zeros = model.encoders["mor"].forward_zeros(lengths)  # (3, 4): the encoding of an all-zero view
    assert torch.allclose(zeros, model.encoders["mor"](torch.zeros(3, 1, 6), lengths))
