"""Grids from a TOML file: `bench grid my-grid.toml`, `bench table my-grid.toml`, `bench ls --preset my-grid.toml`.

    datasets = ["mosi"]                            # mosi, mosei (or synth-mosi, synth-mosei)
    profile = "smoke"                              # smoke, quick, full
    plugins = ["my_method.py", "my_model.py"]      # the user's parts, relative to this file (optional)
    task = "classification"                        # any registered task (default: the methods' own)
    model = "late_fusion"                          # any registered model (default: each method's own)
    methods = ["concat", "ogm"]
    modalities = [["text", "vision"], ["audio", "vision"]]
    optimizers = ["adam"]                          # adam, sgd
    dev_set = [false]                              # or true, or [false, true]
    seeds = [0, 1]

    [params.ogm]                                   # on top of the thesis's parameters of the method
    alpha = [0.1, 0.5]                             # a list is swept, a single value is fixed

    [task_params]                                  # options of the task, for every row (swept likewise)
    [model_params]                                 # parameters of the model, for every row (swept likewise)

Every list is crossed: this file is 2 modality pairs x 2 seeds = 4 concat runs and 2 x 2 seeds x 2
alphas = 8 OGM runs. Each run gets the thesis's settings for its method, dataset and optimizer
(bench.presets.thesis_config), with the file's parameters on top; `dev_set = true` is the thesis's
development-set configuration (as in the presets, Late Concatenation never carves a dev split, so its
dev-set cell is its standard one). Optional keys: `name` (the table's name; default: the file name),
`source` (auto, synth, real), and the test-time evaluations of every run: `test_noise = [0.1, 0.5, 1.0]`
(Gaussian feature noise of these standard deviations on the test split) and `test_dataset = "mosei"`
(also test on that dataset's test split). Unknown keys, methods, parameters and wrong types are ConfigErrors naming
the file and the key.

`datasets` takes registered names and dataset spec files (`*.toml`, relative to this file). `plugins`
are loaded before anything else is read, so `methods` and `model` may name what they define; every later
command that reads the grid's runs loads them again from the rows' recorded paths.

`preset_as_file` writes a built-in preset in this form (`bench grid --show PRESET`); rows a flat file
cannot express are listed in its comments.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import itertools
import json
import math
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import presets
from bench.config import (
    OPTIMIZERS,
    PROFILES,
    SEED_LIMIT,
    ConfigError,
    canonical_modalities,
    modality_key,
    noise_levels,
)
from bench.data import DataError
from bench.params import check_value
from bench.plan.datasets import recipe_key
from bench.plan.resolve import resolved_method_params
from bench.plugins import activate
from bench.presets import (
    SOURCES,
    Cell,
    check_label_rule,
    compatible_methods,
    label_rule_fields,
    method_params,
    resolve_dataset,
    thesis_config,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

SUFFIX = ".toml"
KEYS = ("name", "plugins", "datasets", "profile", "source", "task", "model", "methods", "modalities", "optimizers",
        "dev_set", "seeds", "params", "task_params", "model_params", "test_noise", "test_dataset")
REQUIRED = ("methods", "modalities")
DEFAULT_DATASETS = ("mosi", "mosei")

Setting = tuple[tuple[str, Any], ...]  # (name, value) pairs of one cell's file parameters

# A grid past this many runs is refused unless confirmed (`bench grid --yes`, or `with confirmed():`):
# building and validating every config takes time and memory (a 10**6-run file ran out of both before a
# line was printed). From ANNOUNCE_RUNS on, the count is printed (stderr) before the configs are built.
MAX_RUNS = 10_000
ANNOUNCE_RUNS = 1_000
_CONFIRMED: contextvars.ContextVar[bool] = contextvars.ContextVar("bench_grid_confirmed", default=False)


@contextlib.contextmanager
def confirmed(yes: bool = True) -> Iterator[None]:
    """Within this block, grids larger than MAX_RUNS are built (the CLI's --yes)."""
    token = _CONFIRMED.set(bool(yes) or _CONFIRMED.get())
    try:
        yield
    finally:
        _CONFIRMED.reset(token)


@dataclass(frozen=True)
class GridSpec:
    """A grid file, validated. `profile` / `seeds` None: not in the file (the command decides)."""

    where: str  # the file, for messages
    name: str
    methods: tuple[str, ...]
    modalities: tuple[tuple[str, ...], ...]
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    profile: str | None = None
    source: str = "auto"
    task: str | None = None  # None: each method's default task (classification, or its only one)
    model: str | None = None  # None: each method's own default model; set: every method runs on it
    plugins: tuple[str, ...] = ()  # resolved paths of the plugin files the grid loads first
    # (option, (value, ...)) of the task / the model, crossed for every row
    task_params: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    model_params: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    optimizers: tuple[str, ...] = ("adam",)
    dev_set: tuple[bool, ...] = (False,)
    seeds: tuple[int, ...] | None = None
    # method -> ((parameter, (value, ...)), ...): the lists crossed for that method
    params: tuple[tuple[str, tuple[tuple[str, tuple[Any, ...]], ...]], ...] = ()
    # test-time evaluations of every run (RunConfig test_noise / test_dataset)
    test_noise: tuple[float, ...] = ()
    test_dataset: str = ""

    def settings(self, method: str) -> list[Setting]:
        """Every parameter setting of `method` (the crossing of its lists); [()] without parameters."""
        return _crossed(dict(self.params).get(method, ()))

    def part_settings(self) -> list[tuple[Setting, Setting]]:
        """Every (task options, model parameters) setting of the file's [task_params] / [model_params]."""
        return list(itertools.product(_crossed(self.task_params), _crossed(self.model_params)))

    def replace(self, **changes: Any) -> GridSpec:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class GridCell(Cell):
    """A cell of a grid file: a preset cell plus the parameter setting it sweeps.

    `config_label` (what the table's row shows) is `base_label` plus the setting, so every setting is
    its own row; a tuned table groups the settings of a cell back by `base_label`.
    """

    base_label: str = "standard"
    setting: Setting = ()
    settings_tried: int = 1  # how many settings the file gives this method


def _crossed(sweep: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Setting]:
    """The crossing of (name, values) lists as settings; [()] for no lists."""
    names = [name for name, _ in sweep]
    return [tuple(zip(names, values, strict=True)) for values in itertools.product(*(v for _, v in sweep))]


def is_grid_file(target: str) -> bool:
    """Whether a command's PRESET argument names a grid file rather than a preset."""
    return str(target).endswith(SUFFIX) or Path(target).is_file()


# -- reading -------------------------------------------------------------------------------------

def load(path: str | Path) -> GridSpec:
    """Read and validate a grid file; ConfigError naming the file (and the key) otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such grid file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file ({err.reason})") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse(data, str(path), default_name=path.stem)


def parse(data: Mapping[str, Any], where: str, default_name: str = "grid") -> GridSpec:
    """A GridSpec from the parsed TOML of `where`."""
    unknown = [key for key in data if key not in KEYS]
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; a grid file takes: {', '.join(KEYS)}")
    missing = [key for key in REQUIRED if key not in data]
    if missing:
        raise ConfigError(f"{where}: missing key {missing[0]!r} (a grid file needs {' and '.join(REQUIRED)})")
    plugins = _plugins(where, data["plugins"]) if "plugins" in data else ()
    methods = _methods(where, _strings(where, "methods", data["methods"]))
    fields: dict[str, Any] = {
        "plugins": plugins,
        "where": where, "name": _name(where, data.get("name", default_name)), "methods": methods,
        "modalities": _modality_lists(where, data["modalities"]),
        "datasets": check_datasets(where, _dataset_names(where, data.get("datasets", list(DEFAULT_DATASETS)))),
        "profile": _choice(where, "profile", data["profile"], PROFILES) if "profile" in data else None,
        "source": _choice(where, "source", data.get("source", "auto"), SOURCES),
        "task": _registered(where, "task", data["task"]) if "task" in data else None,
        "model": _registered(where, "model", data["model"]) if "model" in data else None,
        "optimizers": tuple(_choice(where, "optimizers", v, OPTIMIZERS)
                            for v in _strings(where, "optimizers", data.get("optimizers", ["adam"]))),
        "dev_set": _bools(where, data.get("dev_set", False)),
        "seeds": _seeds(where, data["seeds"]) if "seeds" in data else None,
        "params": _params(where, data.get("params", {}), methods),
        "task_params": _part_params(where, "task_params", data.get("task_params", {})),
        "model_params": _part_params(where, "model_params", data.get("model_params", {})),
        "test_noise": _noise(where, data["test_noise"]) if "test_noise" in data else (),
        "test_dataset": check_datasets(where, [_string(where, "test_dataset", data["test_dataset"])],
                                       "test_dataset")[0] if "test_dataset" in data else "",
    }
    if fields["task"] is not None:
        _check_tasks(where, methods, fields["task"])
    return GridSpec(**fields)


def _check_tasks(where: str, methods: Sequence[str], task: str) -> None:
    """Every method has a form for the grid's task (else the planner's message names the task's options)."""
    from bench.methods import get_method

    for name in methods:
        supported = tuple(get_method(name).tasks)
        if task not in supported:
            raise ConfigError(f"{where}: methods: {name} has no {task} form (it supports: {', '.join(supported)})")


def _relative(where: str, entry: str) -> Path:
    """A path named in the grid file `where`, relative to that file's folder unless absolute."""
    path = Path(entry).expanduser()
    return path if path.is_absolute() else Path(where).parent / path


def _plugins(where: str, value: Any) -> tuple[str, ...]:
    """Load every plugin file the grid names (relative to the grid file) and keep their resolved paths."""
    paths = tuple(str(_relative(where, entry).resolve()) for entry in _strings(where, "plugins", value))
    try:
        activate(list(paths))
    except ConfigError as err:
        raise ConfigError(f"{where}: plugins: {err}") from err
    return paths


def _dataset_names(where: str, value: Any) -> tuple[str, ...]:
    """datasets: registered names, or dataset spec files (`*.toml`, relative to the grid file) registered now."""
    names = []
    for entry in _strings(where, "datasets", value):
        if not entry.endswith(".toml"):
            names.append(entry)
            continue
        try:
            registered = activate([str(_relative(where, entry))])
        except ConfigError as err:
            raise ConfigError(f"{where}: datasets: {err}") from err
        names.extend(part.removeprefix("dataset ") for part in registered)
    return tuple(names)


def _registered(where: str, kind: str, value: Any) -> str:
    """A registered task or model name; an unknown one lists the registered ones and suggests a plugin."""
    from bench.models import REGISTRY as MODELS
    from bench.tasks import REGISTRY as TASKS

    known = {"task": TASKS, "model": MODELS}[kind]
    text = _string(where, kind, value)
    if text not in known:
        raise ConfigError(f"{where}: {kind}: unknown {kind} {text!r}; registered: {', '.join(sorted(known))} "
                          f"(a {kind} of your own: list its file under plugins = [...])")
    return text


def _part_params(where: str, key: str, value: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """[task_params] / [model_params]: option = value or a list of values (swept); the planner checks names."""
    if not isinstance(value, dict):
        raise _wrong(where, key, "a table of option = value(s)", value)
    sweep = []
    for name, values in value.items():
        items = _listed(where, f"{key}.{name}", values, "a value or a non-empty list of values") \
            if isinstance(values, list) else [values]
        if any(isinstance(v, dict) for v in items):
            raise _wrong(where, f"{key}.{name}", "a value or a list of values", values)
        sweep.append((str(name), tuple(items)))
    return tuple(sweep)


def _noise(where: str, value: Any) -> tuple[float, ...]:
    """test_noise: a list of standard deviations (numbers >= 0)."""

    items = _listed(where, "test_noise", value, "a list of numbers >= 0")
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in items):
        raise _wrong(where, "test_noise", "a list of numbers >= 0", value)
    try:
        return noise_levels(items)
    except ConfigError as err:
        raise ConfigError(f"{where}: test_noise: {err}") from err


def _wrong(where: str, key: str, want: str, value: Any) -> ConfigError:
    return ConfigError(f"{where}: {key}: expected {want}, got {value!r}")


def _listed(where: str, key: str, value: Any, want: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _wrong(where, key, want, value)
    if len({json.dumps(v, sort_keys=True) for v in value}) != len(value):
        raise ConfigError(f"{where}: {key}: a value is listed twice in {value!r}")
    return value


def _string(where: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _wrong(where, key, "a string", value)
    return value.strip()


def _name(where: str, value: Any) -> str:
    """The grid's name, which names its report files: a plain file name part (no path separator, no '..',
    no control character), so `bench report` never writes outside --out-dir."""
    name = _string(where, "name", value)
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if bad or name in (".", "..") or name.startswith("."):
        raise ConfigError(f"{where}: name: {name!r} is not a plain name (it names the report's files: no path "
                          "separator, no leading '.', no control character)")
    return name


def _strings(where: str, key: str, value: Any) -> tuple[str, ...]:
    items = _listed(where, key, value, "a list of strings")
    if not all(isinstance(v, str) and v.strip() for v in items):
        raise _wrong(where, key, "a list of strings", value)
    return tuple(v.strip() for v in items)


def _choice(where: str, key: str, value: Any, choices: Sequence[str]) -> str:
    text = _string(where, key, value)
    if text not in choices:
        raise ConfigError(f"{where}: {key}: unknown value {text!r}; choose from {', '.join(choices)}")
    return text


def _bools(where: str, value: Any) -> tuple[bool, ...]:
    items = [value] if isinstance(value, bool) else _listed(where, "dev_set", value, "true, false or a list of them")
    if not all(isinstance(v, bool) for v in items):
        raise _wrong(where, "dev_set", "true, false or a list of them", value)
    return tuple(items)


def _seeds(where: str, value: Any) -> tuple[int, ...]:
    want = f"a list of integers in [0, 2**32) = [0, {SEED_LIMIT - 1}]"
    items = _listed(where, "seeds", value, want)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < SEED_LIMIT for v in items):
        raise _wrong(where, "seeds", want, value)
    return tuple(items)


def _methods(where: str, names: Iterable[str]) -> tuple[str, ...]:
    from bench.methods import get_method

    for name in names:
        try:
            get_method(name)
        except ConfigError as err:
            raise ConfigError(f"{where}: methods: {err}") from err
    return tuple(names)


def _modality_lists(where: str, value: Any) -> tuple[tuple[str, ...], ...]:
    want = 'a list of modality lists, e.g. [["text", "vision"], ["audio", "vision"]]'
    items = _listed(where, "modalities", value, want)
    combos = []
    for item in items:
        if not isinstance(item, list) or not all(isinstance(m, str) for m in item):
            raise _wrong(where, "modalities", want, value)
        try:
            combos.append(canonical_modalities(item))
        except ConfigError as err:
            raise ConfigError(f"{where}: modalities: {err}") from err
    if len(set(combos)) != len(combos):
        raise ConfigError(f"{where}: modalities: a combination is listed twice in {value!r}")
    return tuple(combos)


def check_datasets(where: str, names: Sequence[str], key: str = "datasets") -> tuple[str, ...]:
    """The dataset names of a grid (registered names or declared files), or a ConfigError naming `where`
    and `key`."""
    names = tuple(names)
    for name in names:
        try:
            recipe_key(name)
        except (ConfigError, DataError) as err:
            raise ConfigError(f"{where}: {key}: {err}") from err
    return names


def _params(where: str, value: Any, methods: Sequence[str]) -> tuple[tuple[str, Any], ...]:
    """[params.<method>] tables: each parameter a value or a list of values, checked against the method."""

    if not isinstance(value, dict):
        raise _wrong(where, "params", "a table of [params.<method>] tables", value)
    found = []
    for method, table in value.items():
        key = f"params.{method}"
        _methods(where, [method])
        if method not in methods:
            raise ConfigError(f"{where}: {key}: method {method!r} is not in methods ({', '.join(methods)})")
        if not isinstance(table, dict):
            raise _wrong(where, key, "a table of parameter = value(s)", table)
        sweep = []
        for name, values in table.items():
            items = [values]
            if isinstance(values, list):
                items = _listed(where, f"{key}.{name}", values, "a value or a non-empty list of values")
            try:
                checked = tuple(check_value(method, name, v) for v in items)
            except ConfigError as err:
                raise ConfigError(f"{where}: {key}.{name}: {err}") from err
            if len({json.dumps(v, sort_keys=True) for v in checked}) != len(checked):  # 1 and 1.0 are one value
                raise ConfigError(f"{where}: {key}.{name}: a value is listed twice in {values!r}")
            sweep.append((name, checked))
        found.append((method, tuple(sweep)))
    return tuple(found)


# -- filters and expansion -----------------------------------------------------------------------

def restrict(spec: GridSpec, methods: Iterable[str] | None = None, optimizers: Iterable[str] | None = None,
             modalities: Iterable[str] | None = None, dev_set: bool | None = None) -> GridSpec:
    """The file's grid filtered as the preset flags filter a preset (--method, --optimizer, ...)."""
    keep_methods = _keep(spec, "method", spec.methods, methods)
    keep_opts = _keep(spec, "optimizer", spec.optimizers, optimizers)
    keys = {modality_key(c): c for c in spec.modalities}
    wanted = None if modalities is None else [modality_key(canonical_modalities(m)) for m in modalities]
    keep_mods = tuple(keys[k] for k in _keep(spec, "modalities", tuple(keys), wanted))
    keep_dev = spec.dev_set if dev_set is None else tuple(d for d in spec.dev_set if d == dev_set)
    if not keep_dev:
        raise ConfigError(f"{spec.where}: no cells with dev_set = {str(dev_set).lower()}")
    return spec.replace(methods=keep_methods, optimizers=keep_opts, modalities=keep_mods, dev_set=keep_dev,
                        params=tuple((m, p) for m, p in spec.params if m in keep_methods))


def on_parts(spec: GridSpec, task: str | None = None, model: str | None = None) -> GridSpec:
    """The grid with every row on `task` / `model` (the CLI's --task / --model over the file's keys); methods
    that cannot run there are left out with a note on stderr, and none left is a ConfigError."""
    if task is None and model is None:
        return spec
    if task is not None:
        _registered("--task", "task", task)
    if model is not None:
        _registered("--model", "model", model)
    task, model = task or spec.task, model or spec.model
    kept, notes = compatible_methods(spec.methods, task, model)
    if not kept:
        raise ConfigError(f"{spec.where}: no method of the grid runs on {_parts_text(task, model)}: {'; '.join(notes)}")
    if notes:
        print(f"note: {spec.where} on {_parts_text(task, model)}: left out {'; '.join(notes)}", file=sys.stderr)
    return spec.replace(methods=kept, task=task, model=model,
                        params=tuple((m, p) for m, p in spec.params if m in kept))


def _parts_text(task: str | None, model: str | None) -> str:
    return " and ".join(f"{kind} {name}" for kind, name in (("task", task), ("model", model)) if name)


def _keep(spec: GridSpec, kind: str, values: tuple[str, ...], wanted: Iterable[str] | None) -> tuple[str, ...]:
    if wanted is None:
        return values
    wanted = list(dict.fromkeys(wanted))
    bad = [w for w in wanted if w not in values]
    if bad:
        raise ConfigError(f"unknown {kind} {bad[0]!r} for {spec.where}; choose from {', '.join(values)}")
    return tuple(v for v in values if v in wanted)


def expand(spec: GridSpec, profile: str, seeds: Sequence[int], label_rule: str | None = None) -> list[GridCell]:
    """Every cell of the grid (datasets x modalities x optimizers x dev set x methods x settings), validated.

    `label_rule` (MOSEI: binned or round) applies to the datasets whose family has it.
    """
    from bench.methods import validate_config

    check_run_count(spec, seeds)
    check_label_rule(label_rule, list(spec.datasets))
    cells = []
    evaluations: dict[str, Any] = {}
    if spec.test_noise:
        evaluations["test_noise"] = spec.test_noise
    if spec.test_dataset:
        try:
            evaluations["test_dataset"] = resolve_dataset(spec.test_dataset, spec.source)
        except ConfigError as err:
            raise ConfigError(f"{spec.where}: test_dataset: {err}") from err
    evaluations.update({key: value for key, value in (("task", spec.task), ("model", spec.model)) if value})
    part_settings = spec.part_settings()
    for dataset in dict.fromkeys(resolve_dataset(name, spec.source) for name in spec.datasets):
        rule = label_rule_fields(label_rule, dataset)
        for mods, optimizer, dev, method, (task_setting, model_setting) in itertools.product(
                spec.modalities, spec.optimizers, spec.dev_set, spec.methods, part_settings):
            base = "dev_set" if dev else "standard"
            settings = spec.settings(method)
            parts = {"task_params": dict(task_setting), "model_params": dict(model_setting)}
            parts = {key: value for key, value in parts.items() if value}
            shown_parts = (*((f"task.{k}", v) for k, v in task_setting),
                           *((f"model.{k}", v) for k, v in model_setting))
            for method_setting in settings:
                setting = (*shown_parts, *method_setting)
                try:
                    configs = tuple(thesis_config(dataset, method, mods, profile=profile, optimizer=optimizer,
                                                  config_label=base, seed=seed, method_params=dict(method_setting),
                                                  **rule, **evaluations, **parts)
                                    for seed in seeds)
                    for cfg in configs:
                        validate_config(cfg)
                except ConfigError as err:
                    shown = [f"{table}: {setting_text(values)}" for table, values in (
                        ("task_params", task_setting), ("model_params", model_setting),
                        (f"params.{method}", method_setting)) if values]
                    swept = f" [{'; '.join(shown)}]" if shown else ""
                    raise ConfigError(f"{spec.where}: {method} {modality_key(mods)} on {dataset}{swept}: {err}") \
                        from err
                cells.append(GridCell(
                    table=spec.name, dataset=dataset, family=recipe_key(dataset), modalities=modality_key(mods),
                    method=method, config_label=cell_label(base, setting), optimizer=optimizer, configs=configs,
                    base_label=base, setting=setting, settings_tried=len(settings) * len(part_settings)))
    return cells


def run_count(spec: GridSpec, seeds: Sequence[int]) -> int:
    """How many runs the grid names (without the runs they depend on), from the lengths of its lists."""
    settings = sum(math.prod(len(values) for _, values in dict(spec.params).get(m, ())) for m in spec.methods)
    parts = math.prod(len(values) for _, values in (*spec.task_params, *spec.model_params))
    return (len(dict.fromkeys(spec.datasets)) * len(spec.modalities) * len(spec.optimizers) * len(spec.dev_set)
            * settings * parts * len(seeds))


def check_run_count(spec: GridSpec, seeds: Sequence[int]) -> int:
    """The run count; a ConfigError naming it past MAX_RUNS unless confirmed; printed from ANNOUNCE_RUNS on."""
    count = run_count(spec, seeds)
    if count > MAX_RUNS and not _CONFIRMED.get():
        raise ConfigError(f"{spec.where}: {count:,} runs, more than {MAX_RUNS:,}; check the lists (every list "
                          "is crossed), or pass --yes to build them")
    if count >= ANNOUNCE_RUNS:
        print(f"{spec.where}: {count:,} runs; building their configs ...", file=sys.stderr, flush=True)
    return count


def cell_label(base: str, setting: Setting) -> str:
    """'standard' / 'standard [alpha=0.1]': the configuration a table row shows."""
    return f"{base} [{setting_text(setting)}]" if setting else base


def setting_text(setting: Setting) -> str:
    """'alpha=0.1, form=shifted'."""
    return ", ".join(f"{name}={_plain(value)}" for name, value in setting)


def _plain(value: Any) -> str:
    return json.dumps(value) if isinstance(value, bool) else str(value)


# -- writing -------------------------------------------------------------------------------------

def to_toml(spec: GridSpec, comments: Sequence[str] = ()) -> str:
    """The grid file text of `spec` (comments first); `parse` of it gives `spec` back."""
    lines = [f"# {line}" if line else "#" for line in comments]
    if comments:
        lines.append("")
    if spec.plugins:
        lines.append(f"plugins = {_toml(list(spec.plugins))}")
    if spec.profile is not None:
        lines.append(f"profile = {_toml(spec.profile)}")
    lines += [f"{key} = {_toml(value)}" for key, value in (("task", spec.task), ("model", spec.model)) if value]
    lines.append(f"datasets = {_toml(list(spec.datasets))}")
    if spec.source != "auto":
        lines.append(f"source = {_toml(spec.source)}")
    lines += [f"methods = {_toml(list(spec.methods))}",
              f"modalities = {_toml([list(c) for c in spec.modalities])}",
              f"optimizers = {_toml(list(spec.optimizers))}",
              f"dev_set = {_toml(list(spec.dev_set))}"]
    if spec.seeds is not None:
        lines.append(f"seeds = {_toml(list(spec.seeds))}")
    if spec.test_noise:
        lines.append(f"test_noise = {_toml(list(spec.test_noise))}")
    if spec.test_dataset:
        lines.append(f"test_dataset = {_toml(spec.test_dataset)}")
    tables = [(f"params.{method}", sweep) for method, sweep in spec.params]
    tables += [(key, sweep) for key, sweep in (("task_params", spec.task_params), ("model_params", spec.model_params))
               if sweep]
    for table, sweep in tables:
        lines += ["", f"[{table}]"]
        lines += [f"{name} = {_toml(values[0] if len(values) == 1 else list(values))}" for name, values in sweep]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    return "[" + ", ".join(_toml(v) for v in value) + "]"


@dataclass(frozen=True)
class _Variant:
    """A method with the parameters a preset row sets beyond the thesis's, and where it has rows."""

    method: str
    setting: Setting
    contexts: tuple[tuple[str, tuple[str, ...], str, bool], ...]  # (family, modalities, optimizer, dev set)


def preset_as_file(preset: str, profile: str | None = None, datasets: Sequence[str] | None = None,
                   seeds: Sequence[int] | None = None, source: str = "auto") -> str:
    """A built-in preset as a grid file: the largest crossing of its rows a flat file can hold.

    Rows outside it (a configuration with no file key, such as step_every_4; modalities only some
    methods use; per-row parameters) are listed in the comments.
    """
    cells = presets.expand(preset, profile=profile or "quick", datasets=tuple(datasets or DEFAULT_DATASETS),
                           source=source, seeds=(0,))
    tasks = sorted({cfg.task for cell in cells for cfg in cell.configs})
    if len(tasks) > 1:
        raise ConfigError(f"preset {preset} trains the tasks {', '.join(tasks)}; a grid file takes one task "
                          "(write one file per task, or use the preset's name)")
    variants, reasons = _variants(cells)
    chosen, families, combos, optimizers, devs = _largest_crossing(variants)
    covered = {(v.method, v.setting, ctx) for v in chosen
               for ctx in itertools.product(families, combos, optimizers, devs)}
    left_out: dict[tuple[str, str, str, str], tuple[list[str], str]] = {}
    for cell in cells:
        key = (cell.modalities, cell.method, cell.config_label, cell.optimizer)
        ctx = (cell.family, canonical_modalities(cell.modalities), cell.optimizer, cell.config_label == "dev_set")
        if (cell.method, _extra_params(cell), ctx) in covered and cell.config_label in ("standard", "dev_set"):
            continue
        found = left_out.setdefault(key, ([], reasons.get(id(cell), "outside the crossing of the lists above")))
        found[0].append(cell.family)
    spec = GridSpec(
        where=f"preset {preset}", name=preset, methods=tuple(v.method for v in chosen), modalities=combos,
        datasets=tuple(f for f in DEFAULT_DATASETS if f in families), profile=profile or "quick", source=source,
        optimizers=optimizers, dev_set=devs, seeds=tuple(seeds) if seeds else (0, 1, 2, 3, 4),
        task=tasks[0] if tasks and tasks[0] != "classification" else None,
        params=tuple((v.method, tuple((n, (val,)) for n, val in v.setting)) for v in chosen if v.setting))
    comments = [f"bench grid file: preset {preset}, as `bench grid --show {preset}` writes it.",
                "Every list is crossed; each run gets the thesis's settings for its method, dataset and",
                "optimizer, with [params.<method>] on top (a list there is a sweep)."]
    if left_out:
        comments += ["", f"A flat file cannot express {len(left_out)} row(s) of {preset}; they are not in this file:"]
        comments += [f"  - {m} {meth} {label}/{opt} ({', '.join(dict.fromkeys(f))}): {why}"
                     for (m, meth, label, opt), (f, why) in left_out.items()]
    else:
        comments.append(f"This file trains exactly the runs of {preset}.")
    return to_toml(spec, comments)


def _extra_params(cell: Cell) -> Setting:
    """The parameters a preset cell sets beyond the thesis's defaults (and the method's own) for its method."""

    cfg = cell.configs[0]
    defaults = resolved_method_params(cell.method, method_params(cell.method, cfg.modalities))
    return tuple((k, v) for k, v in cfg.method_params if defaults.get(k) != v)


def _variants(cells: Sequence[Cell]) -> tuple[list[_Variant], dict[int, str]]:
    """The expressible rows grouped by (method, extra parameters); why each other cell is not expressible."""

    contexts: dict[tuple[str, Setting], dict[tuple[str, tuple[str, ...], str, bool], None]] = {}
    reasons: dict[int, str] = {}
    for cell in cells:
        if cell.config_label not in ("standard", "dev_set"):
            reasons[id(cell)] = f"configuration {cell.config_label!r} has no key in a grid file"
            continue
        cfg, setting = cell.configs[0], _extra_params(cell)
        as_file = thesis_config(cell.dataset, cell.method, cfg.modalities, profile=cfg.profile,
                                optimizer=cell.optimizer, config_label=cell.config_label, seed=cfg.seed,
                                method_params=dict(setting))
        if as_file.run_id != cfg.run_id:
            reasons[id(cell)] = "per-row settings that no grid-file key sets"
            continue
        if setting:
            reasons[id(cell)] = (f"sets {setting_text(setting)} on top of the thesis's parameters, which a file "
                                 "sets for every row of the method or for none")
        ctx = (cell.family, cfg.modalities, cell.optimizer, cell.config_label == "dev_set")
        contexts.setdefault((cell.method, setting), {})[ctx] = None
    return [_Variant(m, s, tuple(c)) for (m, s), c in contexts.items()], reasons


def _largest_crossing(variants: Sequence[_Variant]) -> tuple[list[_Variant], tuple[str, ...],
                                                             tuple[tuple[str, ...], ...], tuple[str, ...],
                                                             tuple[bool, ...]]:
    """The methods x (families, modalities, optimizers, dev set) crossing with the most preset rows.

    A method appears once (a file has one [params.<method>] table); ties keep the earlier choice.
    """
    def subsets(values: Iterable[Any]) -> list[tuple[Any, ...]]:
        items = list(dict.fromkeys(values))
        return [c for r in range(len(items), 0, -1) for c in itertools.combinations(items, r)]

    every = [ctx for v in variants for ctx in v.contexts]
    held = {v: set(v.contexts) for v in variants}
    combo_order = list(dict.fromkeys(ctx[1] for ctx in every))
    best: tuple[int, Any] = (0, ([], (), (), (), ()))
    for families in subsets(ctx[0] for ctx in every):
        for optimizers in subsets(ctx[2] for ctx in every):
            for devs in subsets(ctx[3] for ctx in every):
                outer = list(itertools.product(families, optimizers, devs))
                allowed = {v: {c for c in combo_order if all((f, c, o, d) in held[v] for f, o, d in outer)}
                           for v in variants}
                for combos in dict.fromkeys(frozenset(a) for a in allowed.values() if a):
                    chosen: dict[str, _Variant] = {}
                    for v in variants:
                        if combos <= allowed[v]:
                            chosen.setdefault(v.method, v)
                    score = len(chosen) * len(combos) * len(outer)
                    if score > best[0]:
                        ordered = tuple(c for c in combo_order if c in combos)
                        best = (score, (list(chosen.values()), families, ordered, optimizers, devs))
    if not best[0]:
        raise ConfigError("this preset has no row a grid file can express")
    return best[1]
