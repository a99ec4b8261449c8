"""Preset `msa-regression`: the MSA field's regression protocol (as the MMSA toolkit runs it).

The task is `regression` (bench/tasks/regression.py: predict the sentiment score in [-3, 3], L1 loss,
checkpoint on the validation loss, MMSA's metrics) on MOSI and MOSEI, for every modality combination:

- each single modality (text, audio, vision) with every method that takes one modality (the unimodal
  model);
- audio+vision, text+vision, audio+text and audio+vision+text with every method that takes that many.

The methods are read from the method registry: every registered method whose `tasks` include
"regression" (today the baselines unimodal, ensemble, unipre, concat and concat_lr, and AGM, MMPareto,
CGGM and G-Blend; a method that gains a regression form joins the preset without an edit here). The
training settings are the thesis's standard configuration (Adam, lr 5e-4, the profile's epochs), the
seeds the expansion's default (five).

`bench.presets` lists the presets in PRESETS; this module only builds their rows.
"""

from __future__ import annotations

from bench.plan.rows import AV, AVT, TV, Row

MSA_PRESET = "msa-regression"
MSA_TASK = "regression"
SINGLE_MODALITIES: tuple[tuple[str, ...], ...] = (("text",), ("audio",), ("vision",))
COMBINATIONS: tuple[tuple[str, ...], ...] = (AV, TV, ("text", "audio"), AVT)
FAMILIES = ("mosi", "mosei")


def regression_methods(n_modalities: int) -> list[str]:
    """Registered methods with a regression form that take `n_modalities` modalities, in table order."""
    from bench.methods import REGISTRY, method_sort_key

    return [name for name in sorted(REGISTRY, key=method_sort_key)
            if MSA_TASK in REGISTRY[name].tasks
            and REGISTRY[name].min_modalities <= n_modalities <= REGISTRY[name].max_modalities]


def msa_regression_rows() -> list[Row]:
    """The rows of `msa-regression`: every (modality combination, regression method), Adam, standard."""
    rows = []
    for mods in (*SINGLE_MODALITIES, *COMBINATIONS):
        for method in regression_methods(len(mods)):
            rows.append(Row(MSA_PRESET, mods, method, "standard", "adam", FAMILIES, (("task", MSA_TASK),)))
    return rows


# -- preset `msa-seeds`: the seed papers' systems beside concat on their own and on the thesis's model ---

SEEDS_PRESET = "msa-seeds"
SEED_SYSTEMS = ("feada", "sati")  # the seed papers' published systems with public code


def seed_system_rows() -> list[Row]:
    """`msa-seeds`: MOSI and MOSEI, regression, text+audio+vision: concat on late_fusion and on each seed
    system's own model (configuration label on_<model>), each system and each of its declared variants."""
    from bench.methods import REGISTRY

    task = (("task", MSA_TASK),)
    rows = [Row(SEEDS_PRESET, AVT, "concat", "standard", "adam", FAMILIES, task)]
    for name in SEED_SYSTEMS:
        system = REGISTRY[name]
        rows.append(Row(SEEDS_PRESET, AVT, "concat", f"on_{system.default_model}", "adam", FAMILIES, task))
        for label in ("standard", *system.variants):
            rows.append(Row(SEEDS_PRESET, AVT, name, label, "adam", FAMILIES, task))
    return rows


# -- preset `ood`: train and validate on one dataset, test on the other as well ----------------------

OOD_PRESET = "ood"
# The other family each source is tested on (bench.presets.resolve_test_dataset turns a family into the
# surrogate's domain-shifted twin with the source's feature sizes, or the real file).
OOD_TARGET = {"mosi": "mosei", "mosei": "mosi"}
OOD_BASELINES = ("concat", "ensemble", "unipre")
OOD_SEED_METHODS = ("feada", "sati", "cpsl", "s2lif")


def ood_methods() -> list[str]:
    """The baselines, every other registered method with a regression form on three modalities (the
    thesis's and the modern ones), and the seed papers' methods, in table order."""
    from bench.methods import REGISTRY, method_sort_key

    others = [m for m in regression_methods(len(AVT))
              if m not in OOD_BASELINES and m not in OOD_SEED_METHODS and not REGISTRY[m].is_baseline]
    seeds = sorted((m for m in OOD_SEED_METHODS if m in REGISTRY), key=method_sort_key)
    return [*OOD_BASELINES, *others, *seeds]


def ood_rows() -> list[Row]:
    """`ood`: MOSI -> MOSEI and MOSEI -> MOSI, single source, regression, text+audio+vision."""
    rows = []
    for source, target in OOD_TARGET.items():
        fields = (("task", MSA_TASK), ("test_dataset", target))
        rows += [Row(OOD_PRESET, AVT, method, "standard", "adam", (source,), fields) for method in ood_methods()]
    return rows
