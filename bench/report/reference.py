"""The thesis's published figures (package data `bench/reference/thesis_tables.csv`)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

REFERENCE_FILE = "thesis_tables.csv"


@dataclass(frozen=True)
class ThesisValue:
    """One thesis row: accuracy (%) and loss (CE x 100), mean and std over its 5 seeds."""

    acc_mean: float
    acc_std: float
    loss_mean: float
    loss_std: float
    note: str = ""

    def mean(self, metric: str) -> float:
        return self.acc_mean if metric == "acc" else self.loss_mean

    def std(self, metric: str) -> float:
        return self.acc_std if metric == "acc" else self.loss_std


# (table, dataset family, modalities, method, config, optimizer)
ReferenceKey = tuple[str, str, str, str, str, str]


def normalise_table(table: str) -> str:
    """'table-6.10' / 'Table 6.10' / '6.10' -> '6.10'."""
    text = str(table).strip().lower()
    for prefix in ("table-", "table "):
        text = text.removeprefix(prefix)
    return text


@lru_cache(maxsize=1)
def load_reference() -> dict[ReferenceKey, ThesisValue]:
    """Every thesis row, keyed by (table, family, modalities, method, config, optimizer)."""
    text = resources.files("bench").joinpath("reference", REFERENCE_FILE).read_text(encoding="utf-8")
    rows: dict[ReferenceKey, ThesisValue] = {}
    for row in csv.DictReader(io.StringIO(text)):
        key = (row["table"], row["dataset"], row["modalities"], row["method"], row["config"],
               row["optimizer"])
        rows[key] = ThesisValue(
            acc_mean=float(row["acc_mean"]), acc_std=float(row["acc_std"]),
            loss_mean=float(row["loss_mean"]), loss_std=float(row["loss_std"]),
            note=row.get("note") or "",
        )
    return rows


def table_order(table: str) -> list[tuple[str, str, str, str]]:
    """(modalities, method, config, optimizer) in the order the thesis prints table `table`."""
    seen: dict[tuple[str, str, str, str], None] = {}
    for key in load_reference():
        if key[0] == normalise_table(table):
            seen.setdefault((key[2], key[3], key[4], key[5]), None)
    return list(seen)


# Where a table does not print a cell (a baseline row, the 'all' preset), the same configuration is
# looked up in the other tables in this order; 6.10 comes late because its PMR text+vision row is
# the EMA variant under the 'standard' label.
FALLBACK_TABLES = ("6.3", "6.4", "6.7", "6.8", "6.9", "6.2", "6.10", "6.5", "6.6")


def thesis_value(table: str, family: str, modalities: str, method: str, config: str,
                 optimizer: str) -> ThesisValue | None:
    """The thesis's figure for this cell in this table, or None where the table has none."""
    return load_reference().get((normalise_table(table), family, modalities, method, config, optimizer))


def thesis_lookup(table: str, family: str, modalities: str, method: str, config: str,
                  optimizer: str) -> tuple[ThesisValue, str] | None:
    """(figure, table it comes from): this table first, then the same configuration elsewhere."""
    own = normalise_table(table)
    for candidate in (own, *[t for t in FALLBACK_TABLES if t != own]):
        value = thesis_value(candidate, family, modalities, method, config, optimizer)
        if value is not None:
            return value, candidate
    return None
