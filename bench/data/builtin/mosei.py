"""CMU-MOSEI as MMSA ships it (thesis 6.2.1): scores in [-3, 3], 7 classes ([133]'s bins, or rounded)."""

from bench.data.labels import MOSEI_BIN_NAMES, MOSEI_CLASS_NAMES
from bench.data.spec import DatasetSpec, LabelSpec

MOSEI = DatasetSpec(
    name="mosei",
    display="CMU-MOSEI",
    short="MOSEI",
    modalities=("text", "audio", "vision"),
    labels=LabelSpec(kind="scores", score_range=(-3.0, 3.0), rules=("binned", "round"),
                     class_names={"binned": MOSEI_BIN_NAMES, "round": MOSEI_CLASS_NAMES}),
    dev_size=200,  # the thesis's development split
    profile_sizes={"smoke": (64, 32, 32), "quick": (800, 200, 400), "full": (16326, 1871, 4659)},
    metric_set="mmsa",
    recipe="mosei",
    files={"unaligned": "MOSEI/Processed/unaligned_50.pkl", "aligned": "MOSEI/Processed/aligned_50.pkl"},
    published_sha256={"ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f": "MOSEI unaligned_50.pkl"},
)
