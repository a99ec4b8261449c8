"""CH-SIMS v2.0, supervised part (Liu et al., "Make Acoustic and Visual Cues Matter: CH-SIMS v2.0 Dataset and
AV-Mixup Consistent Module", ICMI 2022), in the MMSA layout: `SIMS_V2/ch-simsv2s.pkl`.

Confirmed (thuiar/ch-sims-v2 README; the `simsv2` entry of MMSA-derived configs in several public repositories,
e.g. the MSE-Adapter family: dataPath SIMS_V2/ch-simsv2s.pkl, seq_lens (text, audio, vision) = (50, 925, 232),
feature_dims (768, 25, 177), train_samples 2722, language cn); one public checker of the published file
asserts audio / vision widths 25 / 177, scores in [-1, 1], audio_lengths / vision_lengths keys.
NOT confirmed here: thuiar/MMSA's own config_regression.json (the stored copy lists mosi, mosei and sims only);
valid / test 647 / 1034 (4,403 supervised segments) are the paper's split table as we recall it, not read from
the paper; that the pickle carries `regression_labels_T/_A/_V` (the paper annotates each modality, as CH-SIMS
does; a file without those keys fails loading in one line naming the key, and a spec file with
`like = "simsv2"` and `per_modality_labels = {}` reads it).

Scores: in [-1, 1] (five annotators, as CH-SIMS). Metrics: MMSA's `__eval_sims_regression` (the SIMS set).
Ours: the label rules (CH-SIMS's), the dev split (200 rows of train: a training set twice CH-SIMS's) and the
smoke / quick subset sizes; the recipe is CH-SIMS's (`sims`, today the generic block).
"""

from bench.data.builtin.sims import SIMS
from bench.data.spec import DatasetSpec

SIMSV2_SHAPES = {"text": (50, 768), "audio": (925, 25), "vision": (232, 177)}  # padded steps, feature size
SIMSV2_SPLITS = (2722, 647, 1034)

SIMSV2 = DatasetSpec(
    name="simsv2",
    display="CH-SIMS v2.0 (supervised)",
    short="SIMSv2",
    modalities=("text", "audio", "vision"),
    labels=SIMS.labels,
    dev_size=200,
    # quick: 350 training rows (ours; see sims.py)
    profile_sizes={"smoke": (48, 24, 24), "quick": (350, 150, 300), "full": SIMSV2_SPLITS},
    metric_set="mmsa-sims",
    recipe="sims",
    files={"unaligned": "SIMS_V2/ch-simsv2s.pkl"},
    published_sha256={"f8fd9a1dd070588a714ff357b00f31d5bb93277b4e502cf2dc4ff718a95fc49b": "CH-SIMS v2 ch-simsv2s.pkl"},
    per_modality_labels=dict(SIMS.per_modality_labels),
)
