"""One place per method: a method's file states its label, order and thesis settings, and the presets,
the store and the report read them from the registry; discovery and `load_plugin` find the files."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pytest

import bench.methods
import bench.plugins
from bench import presets, store
from bench.config import ConfigError
from bench.methods import REGISTRY, ThesisSettings, load_plugin, method_order
from bench.methods.ogm import OGM
from bench.recipes import recipe
from bench.report import labels

PLUGIN = '''
from dataclasses import dataclass

from bench.methods.base import Method, ThesisSettings, register


@dataclass(frozen=True)
class DampParams:
    gamma: float = 0.1
    mode: str = "soft"
    warmup: int = 0


@register
class Damp(Method):
    name = "damp_test"
    Params = DampParams
    has_dev_set_variant = True
    display_name = "Damp (test plugin)"
    table_order = 65  # between OGM (60) and OGM-GE (70)
    thesis = ThesisSettings(params={"gamma": 0.2}, window=(0, 2), dev_ratio_every=3, sgd_lr=2e-2,
                            scheduler="none", full_epochs=7)

    @classmethod
    def thesis_params(cls, modalities):
        return {"gamma": 0.4 if "text" in modalities else 0.2}

    @classmethod
    def thesis_lr(cls, family, modalities, optimizer, step_every):
        return 3e-4 if optimizer == "adam" and family == "mosei" else None
'''


@pytest.fixture(autouse=True)
def _restore_registry(monkeypatch, tmp_path):
    """Whatever a test registers or loads is gone afterwards; presets see no real data."""
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "nothing-here"))
    registry, plugins, modules = dict(REGISTRY), dict(bench.plugins._LOADED), set(sys.modules)
    yield
    REGISTRY.clear()
    REGISTRY.update(registry)
    bench.plugins._LOADED.clear()
    bench.plugins._LOADED.update(plugins)
    for name in set(sys.modules) - modules:
        if name.startswith("bench_plugin_"):
            del sys.modules[name]


def _write(tmp_path: Path, text: str, name: str = "damp.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_every_module_of_the_methods_package_is_imported() -> None:
    found = [info.name for info in pkgutil.iter_modules(bench.methods.__path__) if not info.name.startswith("_")]
    assert {"baselines", "ogm", "agm", "pmr", "reconboost"} <= set(found)
    assert all(f"bench.methods.{name}" in sys.modules for name in found)
    builtin = {cls.__module__ for cls in REGISTRY.values() if cls.__module__.startswith("bench.methods.")}
    assert builtin <= {f"bench.methods.{name}" for name in found}


def test_the_builtin_declarations_give_the_thesis_order_and_names() -> None:
    assert labels.method_order()[:11] == ("unimodal", "ensemble", "unipre", "concat", "concat_lr", "ogm",
                                          "ogm_ge", "acc", "agm", "pmr", "reconboost")
    assert labels.method_name("unipre") == "Uni-Pre Finetuned"
    assert labels.method_name("not-a-method") == "not-a-method"
    assert labels.baseline_method() == "concat"
    assert presets.method_params("pmr", ("audio", "vision")) == {"alpha": 0.3, "ema": 0.0}
    assert presets.method_params("pmr", ("text", "vision")) == {"alpha": 0.5, "ema": 0.0}


def test_a_plugin_method_reaches_presets_labels_and_store_without_other_edits(tmp_path) -> None:
    assert load_plugin(_write(tmp_path, PLUGIN)) == ["damp_test"]

    # labels: its display name and its place in the thesis order
    assert labels.method_name("damp_test") == "Damp (test plugin)"
    order = labels.method_order()
    assert order.index("ogm") < order.index("damp_test") < order.index("ogm_ge")
    assert method_order() == list(order)

    # store: typed param columns from its Params
    types = store.param_types()
    assert (types["gamma"], types["mode"], types["warmup"]) == (pa.float64(), pa.string(), pa.int64())

    # presets: its thesis parameters, window, dev-set ratio, SGD rate, scheduler, full-profile epochs, tuned lr
    assert presets.method_params("damp_test", ("text", "vision")) == {"gamma": 0.4}
    assert presets.optimizer_lr("damp_test", "sgd", recipe("mosei")) == 2e-2
    cfg = presets.thesis_config("synth-mosi", "damp_test", ("audio", "vision"), profile="full")
    assert dict(cfg.method_params)["gamma"] == 0.2
    assert (cfg.window_start, cfg.window_end, cfg.scheduler, cfg.max_epochs, cfg.lr) == (0, 2, "none", 7, 5e-4)
    dev = presets.thesis_config("synth-mosi", "damp_test", ("audio", "vision"), config_label="dev_set")
    assert (dev.dev_set, dev.ratio_every) == (True, 3)
    assert presets.thesis_config("synth-mosei", "damp_test", ("audio", "vision")).lr == 3e-4

    # the 'all' grid: its rows, dev-set ones included, sorted among the thesis's methods
    cells = presets.expand("all", profile="smoke", datasets=("mosi",), seeds=(0,))
    mine = [c for c in cells if c.method == "damp_test"]
    assert {c.config_label for c in mine} == {"standard", "dev_set"}
    methods = list(dict.fromkeys(c.method for c in cells))
    assert methods.index("ogm") < methods.index("damp_test") < methods.index("ogm_ge")


def test_a_plugin_without_declarations_gets_the_defaults(tmp_path) -> None:
    path = _write(tmp_path, '''
        from bench.methods.base import Method, register

        @register
        class Plain(Method):
            name = "plain_test"
    ''')
    assert load_plugin(path) == ["plain_test"]
    assert labels.method_name("plain_test") == "plain_test"
    order = labels.method_order()  # no table_order: after the thesis's methods, with the other unordered ones
    assert order.index("plain_test") > max(order.index(m) for m in order if REGISTRY[m].table_order is not None)
    assert presets.method_params("plain_test", ("text", "vision")) == {}
    cfg = presets.thesis_config("synth-mosi", "plain_test", ("text", "vision"), optimizer="sgd",
                                config_label="dev_set")
    assert (cfg.lr, cfg.ratio_every, cfg.scheduler) == (recipe("mosi").get("sgd_lr"), 1, "plateau")


def test_a_subclass_keeps_behaviour_declarations_but_not_the_parents_name_or_place() -> None:
    class Variant(OGM):
        name = "ogm_variant_test"

    assert Variant.display_name == "ogm_variant_test"
    assert Variant.table_order is None and not Variant.is_reference_baseline
    assert Variant.thesis == OGM.thesis == ThesisSettings(params={"alpha": 0.5}, window=(0, 4), dev_ratio_every=5)


def test_loading_the_same_plugin_twice_returns_its_names(tmp_path) -> None:
    path = _write(tmp_path, PLUGIN)
    assert load_plugin(path) == load_plugin(str(path)) == ["damp_test"]


@pytest.mark.parametrize("text, message", [
    (None, "no such file"),
    ("X = 1\n", "registers no method"),
    ('''
        from bench.methods.base import Method, register

        @register
        class Mine(Method):
            name = "mine_test"

        @register
        class Clash(Method):
            name = "ogm"
     ''', "method name 'ogm' registered twice"),
    ("raise RuntimeError('broken on purpose')\n", "import failed: RuntimeError: broken on purpose"),
])
def test_a_bad_plugin_is_one_config_error_and_registers_nothing(tmp_path, text, message) -> None:
    path = tmp_path / "missing.py" if text is None else _write(tmp_path, text, "bad.py")
    before = dict(REGISTRY)
    with pytest.raises(ConfigError, match=message) as raised:
        load_plugin(path)
    assert "\n" not in str(raised.value) and str(path.name) in str(raised.value)
    assert REGISTRY == before
    assert not [m for m in sys.modules if m.startswith("bench_plugin_bad")]


def test_a_plugin_module_is_importable_by_its_name_for_pickling(tmp_path) -> None:
    load_plugin(_write(tmp_path, PLUGIN))
    cls = REGISTRY["damp_test"]
    assert importlib.import_module(cls.__module__) is sys.modules[cls.__module__]


def test_a_method_without_a_dev_set_variant_is_refused_by_its_declared_reason_alone() -> None:
    """`no_dev_set` is the one refusal: every method that sets it refuses a dev-set run naming its reason,
    and a method that leaves it empty (concat, AGM) is not refused."""
    from bench.methods import validate_config

    refusing = sorted(name for name, cls in REGISTRY.items() if cls.no_dev_set and not name.startswith("test_"))
    assert {"ensemble", "umt", "ume", "mmcosine", "opm", "opm_ge", "lfm"} <= set(refusing)
    for name in refusing:
        cls = REGISTRY[name]
        modalities = "text" if cls.max_modalities < 2 else "text,vision"
        task = cls.tasks[0]
        cfg = presets.thesis_config("synth-mosi", name, modalities, profile="smoke", task=task, dev_set=True)
        with pytest.raises(ConfigError, match="no dev-set variant") as caught:
            validate_config(cfg)
        assert str(caught.value) == f"{name} {cls.no_dev_set}; it has no dev-set variant (drop --dev-set)"
    for name in ("concat", "agm"):
        validate_config(presets.thesis_config("synth-mosi", name, "text,vision", profile="smoke", dev_set=True))
