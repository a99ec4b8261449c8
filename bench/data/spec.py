"""A dataset as a declared value: what its files hold, how its labels are made, how it is scored.

A `DatasetSpec` is everything the harness knows about a dataset besides its arrays (feature sizes and
padded lengths are still read from the file). MOSI, MOSEI and CH-SIMS are one small module each under
bench/data/builtin; the surrogates and their twins are specs derived from them (bench.data.surrogates);
a user's dataset is a TOML spec file (bench.data.registry.load_spec_file, docs/datasets.md). Code that
needs a dataset's label rules, class names, score range, dev-split size, profile sizes or metric set
asks the spec, never a "family" string.

Stdlib and numpy only: the config and the report read specs without importing torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from bench.data.types import DataError

LABEL_KINDS = ("scores", "classes")
GIVEN = "given"  # the label rule of a "classes" dataset: the file's own classification_labels
METRIC_SETS = ("mmsa", "mmsa-sims")
PROFILE_NAMES = ("smoke", "quick", "full")
# Array names the cache uses for a split's other arrays: a modality may not take them.
RESERVED_NAMES = ("regression", "classification", "ids")


@dataclass(frozen=True)
class LabelSpec:
    """How a dataset's targets look and how class labels are made from them."""

    kind: str  # "scores" (a continuous score with a range) | "classes" (the file's classification_labels)
    score_range: tuple[float, float] | None  # MOSI/MOSEI (-3.0, 3.0); CH-SIMS (-1.0, 1.0); None for "classes"
    rules: tuple[str, ...]  # class-label rules of the classification task, first = default
    class_names: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # rule -> class names

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise DataError(f"label kind {self.kind!r}: choose from {', '.join(LABEL_KINDS)}")
        if not self.rules:
            raise DataError("a label spec needs at least one rule (the first is the default)")
        if self.kind == "scores":
            if self.score_range is None or not self.score_range[0] < self.score_range[1]:
                raise DataError(f"scores need a range (low, high) with low < high, got {self.score_range!r}")
        elif self.rules != (GIVEN,):
            raise DataError(f"class labels use the rule {GIVEN!r} only, got {', '.join(self.rules)}")
        unknown = sorted(set(self.class_names) - set(self.rules))
        if unknown:
            raise DataError(f"class names for rule(s) {', '.join(unknown)} that the labels do not list")

    @property
    def default_rule(self) -> str:
        return self.rules[0]

    def check_rule(self, rule: str, owner: str = "") -> None:
        """DataError unless `rule` is one of this dataset's rules (`owner` names the labels' style: 'MOSI')."""
        if rule not in self.rules:
            classes = self.num_classes(self.default_rule)
            style = f"{owner}-style labels" if owner else "labels"
            what = f"{classes}-class {style}" if classes else style
            raise DataError(f"label rule {rule!r} does not apply to {what}; choose from {', '.join(self.rules)}")

    def num_classes(self, rule: str | None = None) -> int | None:
        """Classes under `rule` (default rule if None); None when the file decides (unnamed given classes)."""
        names = self.class_names.get(rule or self.default_rule)
        return len(names) if names else None

    def names_for(self, rule: str, num_classes: int) -> tuple[str, ...]:
        """Readable class names under `rule`; '0'..'K-1' when the spec names none or the count differs."""
        names = self.class_names.get(rule, ())
        return tuple(names) if len(names) == num_classes else tuple(str(k) for k in range(num_classes))

    @property
    def bound(self) -> float:
        """The largest |score| of the range (3.0 for MOSI/MOSEI): the clip of the MMSA metrics."""
        if self.score_range is None:
            raise DataError("class labels have no score range")
        return float(max(abs(self.score_range[0]), abs(self.score_range[1])))


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, declared. See the module docstring and docs/datasets.md."""

    name: str  # "mosi", "synth-mosi", "sims", or a user's name
    display: str  # "CMU-MOSI", "synthetic CMU-MOSI surrogate", "CH-SIMS"
    modalities: tuple[str, ...]  # names in display order; a file may hold a subset of them
    labels: LabelSpec
    dev_size: int  # rows of train that form the development split on full-size data
    profile_sizes: Mapping[str, tuple[int, int, int]]  # profile -> (train, valid, test) subset sizes
    metric_set: str  # "mmsa" (MOSI/MOSEI regression metrics) | "mmsa-sims" (bench.metrics.sims_regression_metrics)
    recipe: str  # key of the planning layer's recipe table: its own name; derived specs inherit it
    files: Mapping[str, str] = field(default_factory=dict)  # variant -> path relative to the data folder
    published_sha256: Mapping[str, str] = field(default_factory=dict)  # sha256 -> what it is
    synthetic: bool = False
    like: str = ""  # the spec it was derived from ("" for a root spec)
    per_modality_labels: Mapping[str, str] = field(default_factory=dict)  # modality -> label key in the file
    short: str = ""  # compact column label in tables ("MOSI"); "" = the name
    table_name: str = ""  # the name a table caption prints ("CMU-MOSI"); "" = display
    # The version of the spec's rules: part of every run id (RunConfig.code). Bump it when a change alters
    # what a run on this dataset trains on or reports.
    version: int = 1

    def __post_init__(self) -> None:
        where = f"dataset spec {self.name!r}"
        if not self.name or self.name != self.name.strip():
            raise DataError(f"dataset spec: bad name {self.name!r}")
        if not self.modalities or len(set(self.modalities)) != len(self.modalities):
            raise DataError(f"{where}: modalities must be a non-empty list of distinct names")
        for m in self.modalities:
            if not m.isidentifier() or m in RESERVED_NAMES or m.endswith("_lengths"):
                raise DataError(f"{where}: modality name {m!r} must be an identifier, not "
                                f"{', '.join(RESERVED_NAMES)} nor end in _lengths")
        if self.metric_set not in METRIC_SETS:
            raise DataError(f"{where}: metric_set {self.metric_set!r}; choose from {', '.join(METRIC_SETS)}")
        unknown = sorted(set(self.profile_sizes) - set(PROFILE_NAMES))
        missing = sorted(set(PROFILE_NAMES) - set(self.profile_sizes))
        if unknown or missing:
            raise DataError(f"{where}: profile_sizes needs exactly {', '.join(PROFILE_NAMES)} "
                            f"(unknown {unknown or 'none'}, missing {missing or 'none'})")
        if self.dev_size < 0:
            raise DataError(f"{where}: dev_size must be >= 0")
        stray = sorted(set(self.per_modality_labels) - set(self.modalities))
        if stray:
            raise DataError(f"{where}: per_modality_labels for undeclared modalities {', '.join(stray)}")

    # Fields that only name or place the dataset; every other field can change what a run trains or reports.
    PRESENTATION_FIELDS = ("name", "display", "short", "table_name", "like", "files", "published_sha256",
                           "version")  # version: in the run id's code pairs, not in the data fingerprint

    def content_digest(self) -> str:
        """A hash of every field that can change a run's data, labels or metrics (not its names): what a
        spec file declares becomes part of the data fingerprint, so an edited spec never reuses a run."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if f.name not in self.PRESENTATION_FIELDS}
        text = json.dumps(values, sort_keys=True, default=_as_plain)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def __hash__(self) -> int:  # the mappings are dicts; equal specs agree on these fields
        return hash((self.name, self.like, self.recipe, self.modalities, self.display))

    def derive(self, **changes: object) -> DatasetSpec:
        """A copy with `changes`, derived from this spec (lm-eval `include:` style): like = this name."""
        changes.setdefault("like", self.name)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def check_rule(self, rule: str) -> None:
        """DataError unless `rule` is one of this dataset's label rules ("... 3-class MOSI-style labels ...")."""
        self.labels.check_rule(rule, self.recipe.upper())

    @property
    def column_label(self) -> str:
        return self.short or self.name

    @property
    def caption_name(self) -> str:
        return self.table_name or self.display

    def dev_rows(self, n_train: int) -> int:
        """Rows of a train split of n_train that form the dev split: min(dev_size, round(10 % of n_train))."""
        return int(min(self.dev_size, round(0.1 * n_train)))

    def conversion_key(self) -> tuple[object, ...]:
        """What converting a file into the array cache depends on (besides the file)."""
        return (self.modalities, self.labels.score_range if self.labels.kind == "scores" else None,
                tuple(sorted(self.per_modality_labels.items())))


def _as_plain(value: object) -> object:
    """JSON form of the nested spec values (LabelSpec, mappings, tuples)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"not JSON-serialisable: {value!r}")
