"""Published results (package data under bench/reference/): MSA regression results on CMU-MOSI / CMU-MOSEI
(`msa_published.csv`) and multi-view classification results on the UCI Multiple Features digits, TMC's
"Handwritten" (`mfeat_published.csv`, accuracy under each source's own protocol).

These are other systems' figures on the real CMU-MOSI / CMU-MOSEI under the regression protocol, as
their sources print them. Every one of them fine-tunes its text encoder (BERT / RoBERTa), where the
harness trains on frozen features, so they are reference rows only: a table shows them in their own
block, labelled with their source, and never ranks them, marks them best, or tests anything against
them. One figure per metric (the sources give no spread); an empty field means the source does not
report that metric.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from bench.data.registry import display_rank

PUBLISHED_FILE = "msa_published.csv"
MFEAT_FILE = "mfeat_published.csv"
METRIC_KEYS = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "mae", "corr", "acc")
ENCODER_NOTE = "fine-tuned text encoder"
OWN_PROTOCOL = "each source's own split and protocol"
# What sets each file's rows apart from the runs above (the published block's heading says it).
FILE_CONTEXT = {PUBLISHED_FILE: ENCODER_NOTE, MFEAT_FILE: OWN_PROTOCOL}

SOURCE_NAMES: dict[str, str] = {
    "feada": "FeaDA (Yin et al.)",
    "sati": "SATI (arXiv 2409.00143)",
    "mmsa": "MMSA benchmark (thuiar/MMSA)",
    "tmc": "TMC (Han et al., ICLR 2021)",
}
METHOD_NAMES: dict[str, str] = {
    "tfn": "TFN", "lmf": "LMF", "mult": "MulT", "misa": "MISA", "self_mm": "Self-MM", "fdmer": "FDMER",
    "tetfn": "TETFN", "almt": "ALMT", "confede": "ConFEDE", "sfttr": "SFTTR", "feada": "FeaDA",
    "feada_no_uni": "FeaDA w/o unimodal loss", "feada_no_con": "FeaDA w/o contrastive loss",
    "feada_no_kl": "FeaDA w/o KL loss", "feada_no_prompt": "FeaDA w/o soft prompts", "sati": "SATI",
    "tmc": "TMC",
}


@dataclass(frozen=True)
class PublishedRow:
    """One published result: where it comes from, on which dataset, its metrics (NaN: not reported)."""

    source: str  # "feada" / "sati" / "mmsa"
    table: str  # the source's table ("2", "abstract", "result-stat")
    dataset: str  # "mosi" / "mosei" (the real data)
    method: str
    values: dict[str, float]
    note: str = ""
    context: str = ENCODER_NOTE  # what differs from the runs above: FILE_CONTEXT of the row's file

    @property
    def source_label(self) -> str:
        """'FeaDA (...), table 2': the source and where in it."""
        name = SOURCE_NAMES.get(self.source, self.source)
        where = f"table {self.table}" if self.table[:1].isdigit() else self.table
        return f"{name}, {where}"

    @property
    def method_label(self) -> str:
        return METHOD_NAMES.get(self.method, self.method)

    def value(self, metric: str) -> float:
        return self.values.get(metric, math.nan)


def _number(text: str | None) -> float:
    text = (text or "").strip()
    return float(text) if text else math.nan


@lru_cache(maxsize=1)
def load_published() -> tuple[PublishedRow, ...]:
    """Every published row, in file order (MSA first, then mfeat)."""
    rows = []
    for name, context in FILE_CONTEXT.items():
        text = resources.files("bench").joinpath("reference", name).read_text(encoding="utf-8")
        for record in csv.DictReader(io.StringIO(text)):
            rows.append(PublishedRow(
                source=record["source"].strip(), table=record["table"].strip(), dataset=record["dataset"].strip(),
                method=record["method"].strip(), values={k: _number(record.get(k)) for k in METRIC_KEYS},
                note=(record.get("note") or "").strip(), context=context))
    return tuple(rows)


def published_rows(families: Iterable[str]) -> list[PublishedRow]:
    """The published rows of these datasets ('mosi', 'mosei'), in the registry's order (MOSI first), then
    file order."""
    wanted = list(dict.fromkeys(families))
    rows = [r for r in load_published() if r.dataset in wanted]
    return sorted(rows, key=lambda r: display_rank(r.dataset))
