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

`bench.presets` lists the preset in PRESETS; this module only builds its rows.
"""

from __future__ import annotations

from bench.presets import AV, AVT, TV, _Row

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


def msa_regression_rows() -> list[_Row]:
    """The rows of `msa-regression`: every (modality combination, regression method), Adam, standard."""
    rows = []
    for mods in (*SINGLE_MODALITIES, *COMBINATIONS):
        for method in regression_methods(len(mods)):
            rows.append(_Row(MSA_PRESET, mods, method, "standard", "adam", FAMILIES, (("task", MSA_TASK),)))
    return rows
