"""Display names and thesis orderings shared by tables, plots and the report page."""

from __future__ import annotations

from collections.abc import Sequence

# The thesis's row order in table 6.10 (methods) and across its tables (modality blocks).
METHOD_ORDER: tuple[str, ...] = (
    "unimodal", "ensemble", "unipre", "concat", "concat_lr", "ogm", "ogm_ge", "acc", "agm", "pmr",
    "reconboost",
)
METHOD_NAMES: dict[str, str] = {
    "unimodal": "Unimodal",
    "ensemble": "Ensemble",
    "unipre": "Uni-Pre Finetuned",
    "concat": "Late Concatenation (Baseline)",
    "concat_lr": "Late Concatenation (per-encoder lr)",
    "ogm": "OGM",
    "ogm_ge": "OGM-GE",
    "acc": "ACC",
    "agm": "AGM",
    "pmr": "PMR",
    "reconboost": "ReconBoost",
}
BLOCK_ORDER: tuple[str, ...] = (
    "text", "audio", "vision", "audio+vision", "text+vision", "audio+text", "audio+vision+text",
)
BLOCK_NAMES: dict[str, str] = {
    "text": "Text",
    "audio": "Audio",
    "vision": "Vision",
    "audio+vision": "Audio-Vision",
    "text+vision": "Text-Vision",
    "audio+text": "Audio-Text",
    "audio+vision+text": "Audio-Vision-Text",
}
CONFIG_NAMES: dict[str, str] = {
    "standard": "Standard training",
    "step_every_4": "Update every 4 iterations",
    "dev_set": "Development set",
    "ema_prototypes": "EMA prototypes",
    "modulate_first_5_epochs": "Modulate first 5 epochs",
    "modulate_all_epochs": "Modulate all epochs",
    "lr_8e-5_long_patience": "lr 8e-5, long patience",
    "100_epochs_no_early_stop_dev_set": "100 epochs, no early stop, dev set",
}
DATASET_NAMES: dict[str, str] = {"mosi": "CMU-MOSI", "mosei": "CMU-MOSEI"}
BASELINE_METHOD = "concat"


def method_name(method: str) -> str:
    """Thesis display name of a method key (the key itself when unknown)."""
    return METHOD_NAMES.get(method, method)


def block_name(modalities: str) -> str:
    """'audio+vision' -> 'Audio-Vision'."""
    return BLOCK_NAMES.get(modalities, modalities)


def config_name(config_label: str, optimizer: str) -> str:
    """Row label of a training configuration; SGD rows say so, as the thesis's 'SGD Optimizer' rows.

    A grid file's label 'standard [alpha=0.1]' keeps its bracketed setting as it is.
    """
    base, sep, setting = config_label.partition(" [")
    name = CONFIG_NAMES.get(base, base.replace("_", " "))
    if optimizer != "adam":
        name = f"{optimizer.upper()} optimizer" if base == "standard" else f"{name}, {optimizer.upper()}"
    return f"{name} [{setting}" if sep else name


def dataset_name(dataset: str) -> str:
    """'mosi' -> 'CMU-MOSI'; 'synth-mosi' -> 'synth-MOSI (surrogate)'; custom names unchanged."""
    if dataset.startswith("synth-"):
        base = dataset.removeprefix("synth-")
        return f"synth-{base.upper()} (surrogate)"
    return DATASET_NAMES.get(dataset, dataset)


def dataset_short(dataset: str) -> str:
    """Compact column label: 'synth-mosi' -> 'synth-MOSI', 'mosi' -> 'MOSI'."""
    base = dataset.removeprefix("synth-")
    name = base.upper() if base in DATASET_NAMES else base
    return f"synth-{name}" if dataset.startswith("synth-") else name


def is_synthetic_name(dataset: str) -> bool:
    """Whether a dataset name denotes the generated surrogate."""
    return dataset.startswith("synth-")


def order_index(value: str, order: Sequence[str]) -> int:
    """Position of `value` in `order`; unknown values sort after every known one."""
    return order.index(value) if value in order else len(order)
