"""CMU-MOSI as MMSA ships it (thesis 6.2.1): scores in [-3, 3], 3 classes by sign."""

from bench.data.labels import MOSI_CLASS_NAMES
from bench.data.spec import DatasetSpec, LabelSpec

MOSI = DatasetSpec(
    name="mosi",
    display="CMU-MOSI",
    short="MOSI",
    modalities=("text", "audio", "vision"),
    labels=LabelSpec(kind="scores", score_range=(-3.0, 3.0), rules=("sign",),
                     class_names={"sign": MOSI_CLASS_NAMES}),
    dev_size=100,  # the thesis's development split
    # quick / smoke: ours (the surrogate's sizes); full: MMSA's split sizes
    profile_sizes={"smoke": (48, 24, 24), "quick": (500, 150, 300), "full": (1284, 229, 686)},
    metric_set="mmsa",
    recipe="mosi",
    files={"unaligned": "MOSI/Processed/unaligned_50.pkl", "aligned": "MOSI/Processed/aligned_50.pkl"},
    published_sha256={"78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524": "MOSI unaligned_50.pkl"},
)
