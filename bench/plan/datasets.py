"""What the planning chain asks a dataset: its recipe name and its class-label rules (from its spec)."""

from __future__ import annotations

from bench.config import ConfigError


def recipe_key(dataset: str) -> str:
    """The recipe-table name of a dataset (a surrogate and its twins: the dataset they imitate)."""
    from bench.config_compat import dataset_family  # replaced by the dataset spec at integration

    return dataset_family(dataset)


def dataset_modalities(dataset: str) -> tuple[str, ...]:
    """The modality names a dataset declares, in its order."""
    from bench.config import MODALITIES  # the dataset spec's names at integration

    return MODALITIES


def label_rules(dataset: str) -> tuple[str, ...]:
    """The dataset's class-label rules, the default first."""
    from bench.config_compat import label_family
    from bench.data.labels import FAMILY_RULES

    return FAMILY_RULES.get(label_family(dataset), FAMILY_RULES["mosi"])


def default_label_rule(dataset: str) -> str:
    return label_rules(dataset)[0]


def check_label_rule(dataset: str, rule: str) -> None:
    """ConfigError when `rule` is not one of the dataset's label rules."""
    rules = label_rules(dataset)
    if rule not in rules:
        raise ConfigError(f"{dataset}: label rule {rule!r} does not apply to its labels; "
                          f"choose from {', '.join(rules)}")
