"""CH-SIMS (Yu et al., ACL 2020) as MMSA ships it: `SIMS/Processed/unaligned_39.pkl`.

Confirmed against thuiar/MMSA `src/MMSA/config/config_regression.json` (datasetCommonParams.sims.unaligned):
featurePath SIMS/Processed/unaligned_39.pkl, seq_lens (text, audio, vision) = (39, 400, 55), feature_dims
(768, 33, 709), train_samples 1368, KeyEval "Loss". Valid / test 456 / 457 (2,281 segments in all) are the
paper's split, as the brief states it; MMSA's config lists only the training size. Scores: the mean of five
annotators' {-1, 0, 1} votes, so multiples of 0.2 in [-1, 1]; the file also holds one score per modality,
`regression_labels_T` / `_A` / `_V`, loaded as `SplitArrays.modality_scores`. Metrics: MMSA's
`__eval_sims_regression` (`src/MMSA/utils/metricsTop.py`; bench.metrics.sims_regression_metrics).

Ours: the label rules (default "sims3" = MMSA's Acc-3 bins, or "sims5" = its Acc-5 bins, bench.data.labels),
the dev split (100 rows of train, as MOSI's: a similar training size), and the quick / smoke subset sizes.
"""

from bench.data.labels import SIMS3_NAMES, SIMS5_NAMES
from bench.data.spec import DatasetSpec, LabelSpec

SIMS_SHAPES = {"text": (39, 768), "audio": (400, 33), "vision": (55, 709)}  # padded steps, feature size
SIMS_SPLITS = (1368, 456, 457)

SIMS = DatasetSpec(
    name="sims",
    display="CH-SIMS",
    short="SIMS",
    modalities=("text", "audio", "vision"),
    labels=LabelSpec(kind="scores", score_range=(-1.0, 1.0), rules=("sims3", "sims5"),
                     class_names={"sims3": SIMS3_NAMES, "sims5": SIMS5_NAMES}),
    dev_size=100,
    # quick: 300 training rows (ours), so that `bench grid sims --profile quick` fits 30 minutes on 2 cores
    profile_sizes={"smoke": (48, 24, 24), "quick": (300, 150, 300), "full": SIMS_SPLITS},
    metric_set="mmsa-sims",
    recipe="sims",
    files={"unaligned": "SIMS/Processed/unaligned_39.pkl"},
    per_modality_labels={"text": "regression_labels_T", "audio": "regression_labels_A",
                         "vision": "regression_labels_V"},
)
