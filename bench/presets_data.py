"""Presets on the datasets beyond MOSI / MOSEI: `sims` (CH-SIMS and CH-SIMS v2, regression) and `real-mfeat`
(the UCI Multiple Features digits, classification, real data).

- `sims`: the MSA regression protocol (bench.presets_msa) on CH-SIMS and CH-SIMS v2 (dataset family "sims":
  both specs use the recipe `sims`): each single modality with the unimodal model, audio+vision, text+vision,
  audio+text and all three with every registered method that has a regression form and takes that many
  modalities, and the seed systems (concat on each system's own model, each system and its variants). Without
  the MMSA files (BENCH_DATA_DIR) the datasets resolve to the surrogates synth-sims / synth-simsv2. SATI is
  left out (SIMS_LEFT_OUT: its paper settings checkpoint on a MOSI metric).
- `real-mfeat`: classification on mfeat's views (modalities named by the views) with the model
  `mlp_late_fusion`: each single view (unimodal), the strong+weak pairs pix+mor and fou+kar, and the six
  views together, with every registered method that has a classification form, runs on late_fusion (its
  default model) with capabilities the MLP model offers, and takes that many modalities.

Five seeds, the expansion's default. `bench.presets` lists the presets in PRESETS and their default
datasets in PRESET_DATASETS; this module only builds their rows.
"""

from __future__ import annotations

from bench.plan.rows import AV, AVT, TV, Row
from bench.presets_msa import MSA_TASK, SEED_SYSTEMS, SINGLE_MODALITIES, regression_methods

SIMS_PRESET = "sims"
SIMS_FAMILIES = ("sims",)
SIMS_DATASETS = ("sims", "simsv2")
SIMS_COMBINATIONS: tuple[tuple[str, ...], ...] = (AV, TV, ("text", "audio"), AVT)
# Left out on CH-SIMS until its recipe can name the SIMS set's metric: SATI's paper settings checkpoint on
# MOSI's "acc2_has0", which the SIMS metric set does not have (every SATI run there stops with a ConfigError).
SIMS_LEFT_OUT = {"sati": "its checkpoint metric acc2_has0 is not in the SIMS metric set"}

MFEAT_PRESET = "real-mfeat"
MFEAT_FAMILIES = ("mfeat",)
MFEAT_DATASETS = ("mfeat",)
MFEAT_MODEL = "mlp_late_fusion"
MFEAT_VIEWS = ("fac", "fou", "kar", "mor", "pix", "zer")
MFEAT_PAIRS: tuple[tuple[str, ...], ...] = (("pix", "mor"), ("fou", "kar"))  # a strong view with a weak one
CLASSIFICATION = "classification"


def sims_rows() -> list[Row]:
    """`sims`: every (modality combination, regression method) and the seed systems, Adam, standard."""
    from bench.methods import REGISTRY

    task = (("task", MSA_TASK),)
    rows = [Row(SIMS_PRESET, mods, method, "standard", "adam", SIMS_FAMILIES, task)
            for mods in (*SINGLE_MODALITIES, *SIMS_COMBINATIONS) for method in regression_methods(len(mods))
            if method not in SIMS_LEFT_OUT]
    for name in (n for n in SEED_SYSTEMS if n not in SIMS_LEFT_OUT):
        system = REGISTRY[name]
        rows.append(Row(SIMS_PRESET, AVT, "concat", f"on_{system.default_model}", "adam", SIMS_FAMILIES, task))
        rows += [Row(SIMS_PRESET, AVT, name, label, "adam", SIMS_FAMILIES, task) for label in system.variants]
    return rows


def mlp_methods(n_modalities: int) -> list[str]:
    """Registered classification methods that run on late_fusion, need only what mlp_late_fusion offers and
    take `n_modalities` modalities, in table order."""
    from bench.methods import REGISTRY, method_sort_key
    from bench.models import model_class

    offered = model_class(MFEAT_MODEL).capabilities
    return [name for name in sorted(REGISTRY, key=method_sort_key)
            if not name.startswith("test_") and CLASSIFICATION in REGISTRY[name].tasks
            and REGISTRY[name].default_model == "late_fusion" and REGISTRY[name].requires <= offered
            and REGISTRY[name].min_modalities <= n_modalities <= REGISTRY[name].max_modalities]


def mfeat_rows() -> list[Row]:
    """`real-mfeat`: each view alone, the two strong+weak pairs, all six views; on mlp_late_fusion."""
    fields = (("model", MFEAT_MODEL),)
    combos = (*((view,) for view in MFEAT_VIEWS), *MFEAT_PAIRS, MFEAT_VIEWS)
    return [Row(MFEAT_PRESET, mods, method, "standard", "adam", MFEAT_FAMILIES, fields)
            for mods in combos for method in mlp_methods(len(mods))]
