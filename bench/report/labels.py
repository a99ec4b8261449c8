"""Display names and thesis orderings shared by tables, plots and the report page."""

from __future__ import annotations

from collections.abc import Sequence

from bench.data.registry import DATASETS, display_rank, is_synthetic

# The thesis's order of modality blocks across its tables. Method names and order are each method's own
# declarations (`Method.display_name`, `Method.table_order`; see method_name / method_order).
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


def method_name(method: str) -> str:
    """Display name of a method key (`Method.display_name`, with its provenance; the key itself when unknown)."""
    from bench.methods import REGISTRY

    cls = REGISTRY.get(method)
    if cls is None:
        return method
    # A method built from its paper's text alone says so wherever it is named (Method.provenance).
    return f"{cls.display_name} ({cls.provenance})" if cls.provenance else cls.display_name


def method_order() -> tuple[str, ...]:
    """The registered methods in the thesis's row order (`Method.table_order`), the others alphabetically."""
    from bench.methods import method_order as registered_order

    return tuple(registered_order())


def method_rank(method: str) -> tuple[bool, int, str]:
    """Sort key of a method key in tables and plots: thesis order, then unordered or unknown ones by name."""
    from bench.methods import method_sort_key

    return method_sort_key(method)


def baseline_method() -> str:
    """The method the report tests the others against (`Method.is_reference_baseline`), "" when none is."""
    from bench.methods import REGISTRY

    return next((name for name in method_order() if REGISTRY[name].is_reference_baseline), "")


def block_name(modalities: str) -> str:
    """'audio+vision' -> 'Audio-Vision'."""
    return BLOCK_NAMES.get(modalities, modalities)


def config_name(config_label: str, optimizer: str) -> str:
    """Row label of a training configuration; SGD rows say so, as the thesis's 'SGD Optimizer' rows.

    A grid file's label 'standard [alpha=0.1]' keeps its bracketed setting as it is.
    """
    base, sep, setting = config_label.partition(" [")
    name = CONFIG_NAMES.get(base, base.replace("_", " "))
    if base.startswith("on_"):  # bench.presets.ON_MODEL: the method on another registered model
        name = f"on the {base.removeprefix('on_')} model"
    if optimizer != "adam":
        name = f"{optimizer.upper()} optimizer" if base == "standard" else f"{name}, {optimizer.upper()}"
    return f"{name} [{setting}" if sep else name


def dataset_name(dataset: str) -> str:
    """The spec's caption name: 'mosi' -> 'CMU-MOSI'; 'synth-mosi' -> 'synth-MOSI (surrogate)';
    'sims' -> 'CH-SIMS'; an unregistered name (a path) unchanged."""
    spec = DATASETS.get(dataset)
    return spec.caption_name if spec is not None else dataset


def dataset_short(dataset: str) -> str:
    """The spec's compact column label: 'synth-mosi' -> 'synth-MOSI', 'mosi' -> 'MOSI'; else the name."""
    spec = DATASETS.get(dataset)
    return spec.column_label if spec is not None else dataset


def dataset_rank(dataset: str) -> int:
    """Sort key of a dataset in tables: its root spec's registration order (MOSI, MOSEI, SIMS, then others)."""
    return display_rank(dataset)


def is_synthetic_name(dataset: str) -> bool:
    """Whether a dataset name is a generated dataset (its spec says so)."""
    return is_synthetic(dataset)


def order_index(value: str, order: Sequence[str]) -> int:
    """Position of `value` in `order`; unknown values sort after every known one."""
    return order.index(value) if value in order else len(order)
