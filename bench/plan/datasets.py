"""What the planning chain asks a dataset (bench.data.registry.spec_for): its recipe name, its modality
names and its class-label rules. A name that is neither registered nor a declared file is a ConfigError."""

from __future__ import annotations

from bench.config import ConfigError
from bench.data import DataError
from bench.data.registry import spec_for
from bench.data.spec import DatasetSpec


def dataset_spec(dataset: str) -> DatasetSpec:
    """The dataset's spec; an unknown name or an undeclared file is a ConfigError (one line)."""
    try:
        return spec_for(dataset)
    except DataError as err:
        raise ConfigError(str(err)) from err


def recipe_key(dataset: str) -> str:
    """The recipe-table name of a dataset (a surrogate and its twins: the dataset they imitate)."""
    return dataset_spec(dataset).recipe


def dataset_modalities(dataset: str) -> tuple[str, ...]:
    """The modality names a dataset declares, in its order."""
    return tuple(dataset_spec(dataset).modalities)


def label_rules(dataset: str) -> tuple[str, ...]:
    """The dataset's class-label rules, the default first."""
    return tuple(dataset_spec(dataset).labels.rules)


def default_label_rule(dataset: str) -> str:
    return label_rules(dataset)[0]


def check_label_rule(dataset: str, rule: str) -> None:
    """ConfigError when `rule` is not one of the dataset's label rules."""
    try:
        dataset_spec(dataset).check_rule(rule)
    except DataError as err:
        raise ConfigError(f"{dataset}: {err}") from err
