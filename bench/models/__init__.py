"""Model registry: architectures apart from methods. A new model is one file here (discovered on import)."""

from __future__ import annotations

import importlib
import pkgutil

from bench.models.base import (
    CAPABILITIES,
    REGISTRY,
    EncoderSize,
    Model,
    ModelSpec,
    add_capability,
    behaves_the_same_in_train_and_eval,
    check_model_params,
    default_param_groups,
    model_class,
    model_spec,
    register,
)

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "base":
        importlib.import_module(f"{__name__}.{_info.name}")

from bench.models.late_fusion import ENCODER_SIZES, LateFusionModel, SequenceEncoder  # noqa: E402

DEFAULT_MODEL = "late_fusion"

__all__ = ["CAPABILITIES", "DEFAULT_MODEL", "ENCODER_SIZES", "REGISTRY", "EncoderSize", "LateFusionModel", "Model",
           "ModelSpec", "SequenceEncoder", "add_capability", "behaves_the_same_in_train_and_eval",
           "check_model_params", "default_param_groups", "model_class", "model_spec", "register"]
