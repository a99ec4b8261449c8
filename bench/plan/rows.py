"""A preset's table row before it meets a dataset, a profile and seeds, and the thesis's modality blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

AV: tuple[str, ...] = ("audio", "vision")
TV: tuple[str, ...] = ("text", "vision")
AVT: tuple[str, ...] = ("text", "audio", "vision")


@dataclass(frozen=True)
class Row:
    """One row of a preset's table: modalities, method, configuration label, optimizer, the dataset
    families (table columns) it has cells for, and per-row RunConfig fields on top of the recipe."""

    table: str
    modalities: tuple[str, ...]
    method: str
    config_label: str = "standard"
    optimizer: str = "adam"
    families: tuple[str, ...] = ("mosi", "mosei")
    fields: tuple[tuple[str, Any], ...] = field(default=())
