"""The documentation says what the code does: hook and task signatures in docs/design.md, every capability's
contract and users in docs/plugins.md, every `bench.api` keyword in docs/api.md, the Batch / ModelOutput
fields, and the code blocks a reader copies (the model and method skeletons, the pytest pattern) load, keep
their contracts and train."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny import TAV

import bench.api as api
from bench.batch import Batch, ModelOutput
from bench.data import Dataset
from bench.methods import REGISTRY as METHODS
from bench.methods import Method
from bench.models import CAPABILITIES, LateFusionModel, ModelSpec, model_class
from bench.models import REGISTRY as MODELS
from bench.plan.resolve import make_config
from bench.tasks import Task
from bench.train import train_run

ROOT = Path(__file__).resolve().parents[1]
README, DESIGN, PLUGINS, API = (ROOT / name for name in ("README.md", "docs/design.md", "docs/plugins.md",
                                                         "docs/api.md"))
# Keywords the docs describe ahead of the code that takes them (issue 26: `plugins=[...]` in bench.api); a
# documented keyword outside this set must exist. Empty it once every documented function takes them.
PENDING_KEYWORDS: set[str] = set()

SPAN = re.compile(r"`([^`\n]+)`")
# a signature written as a call: `name(a, b=1)`, `task.name(a)`, `model.name()`, optionally `-> ...` after it
SIGNATURE = re.compile(r"^(?:(task|model)\.)?([a-z_]+)\(([^()]*)\)(?:\s*->.*)?$")
IDENTIFIER = re.compile(r"^\*{0,2}[A-Za-z_]\w*(=.*)?$")


# -- parsing the docs ----------------------------------------------------------------------------------------


def signatures(text: str) -> list[tuple[str | None, str, list[str]]]:
    """(owner, name, parameter names) of every code span written as a signature with plain parameters."""
    found = []
    for span in SPAN.findall(text):
        match = SIGNATURE.match(span.strip())
        if match is None:
            continue
        owner, name, args = match.groups()
        parts = [part.strip() for part in args.split(",") if part.strip()]
        if all(IDENTIFIER.match(part) for part in parts):
            found.append((owner, name, [part.split("=")[0].lstrip("*") for part in parts]))
    return found


def parameter_names(function: Callable[..., Any]) -> list[str]:
    """The parameters a caller passes (self / cls left out)."""
    return [p.name for p in inspect.signature(function).parameters.values() if p.name not in ("self", "cls")]


def method_hooks() -> dict[str, Callable[..., Any]]:
    """Every public hook the Method base class defines, bound so that `self` / `cls` are left out."""
    return {name: getattr(Method(), name) for name, value in vars(Method).items()
            if not name.startswith("_") and isinstance(value, (classmethod, staticmethod, type(lambda: 0)))}


def sections(text: str, heading: str) -> dict[str, str]:
    """Heading text (inside backticks) -> the text up to the next heading of this level or higher."""
    level = len(heading)
    pattern = re.compile(rf"^{re.escape(heading)} `([^`]+)`\s*$", re.MULTILINE)
    found = {}
    for match in pattern.finditer(text):
        rest = text[match.end():]
        end = re.search(rf"^#{{1,{level}}} |^\*\*[A-Z]", rest, re.MULTILINE)
        found[match.group(1)] = rest[:end.start()] if end else rest
    return found


def first_column(text: str) -> set[str]:
    """The backticked names in the first column of the markdown table rows of `text`."""
    names = set()
    for line in text.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            names.update(re.findall(r"`([A-Za-z_][\w.]*)`", cells[1]))
    return names


def code_block(path: Path, marker: str) -> str:
    """The python code block right after `<!-- docs-test: marker -->` in a document."""
    match = re.search(rf"<!-- docs-test: {marker} -->\s*```python\n(.*?)```", path.read_text(), re.DOTALL)
    assert match is not None, f"{path.name}: no code block marked {marker}"
    return match.group(1)


# -- hook, task and model signatures ---------------------------------------------------------------------------


def signature_mismatches(text: str) -> list[str]:
    """Every signature span naming a hook, a task call or a late-fusion model call that the code does not have."""
    hooks = method_hooks()
    task = Task()
    problems = []
    for owner, name, args in signatures(text):
        if owner is None and name in hooks:
            wanted = [parameter_names(hooks[name])]
            if hasattr(model_class("late_fusion"), name):  # `build(spec)`: the model's build
                wanted.append(parameter_names(getattr(model_class("late_fusion"), name)))
            if hasattr(task, name):  # `loss(outputs, targets)`: the task's
                wanted.append(parameter_names(getattr(task, name)))
            if args not in wanted:
                problems.append(f"{name}({', '.join(args)}): the code has {' or '.join(map(str, wanted))}")
        elif owner == "task" and hasattr(task, name):
            if args != parameter_names(getattr(task, name)):
                problems.append(f"task.{name}({', '.join(args)}): the code has {parameter_names(getattr(task, name))}")
        elif owner == "model" and callable(vars(LateFusionModel).get(name)):  # its own, not nn.Module's
            real = parameter_names(getattr(LateFusionModel, name))
            if len(args) != len(real):  # a model's own parameter names may differ: the count may not
                problems.append(f"model.{name}({', '.join(args)}): late_fusion's takes {real}")
    return problems


@pytest.mark.parametrize("path", [README, *sorted((ROOT / "docs").rglob("*.md"))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_signature_written_in_the_docs_is_the_codes(path: Path) -> None:
    assert signature_mismatches(path.read_text()) == []


def test_the_signature_check_catches_the_old_wrong_after_backward() -> None:
    assert signature_mismatches("`after_backward(model, batch, state) -> logs`") != []
    assert signature_mismatches("`on_epoch_end(model, data, state)`") != []
    assert signature_mismatches("`task.hits(outputs)`") != []
    assert signature_mismatches("`after_backward(model, state)` `task.hits(outputs, targets)`") == []


def test_design_gives_every_hook_and_task_call_with_its_signature() -> None:
    written = signatures(DESIGN.read_text())
    hooks = {name for owner, name, _ in written if owner is None}
    assert set(method_hooks()) <= hooks
    task_calls = {name for owner, name, _ in written if owner == "task"}
    assert {"loss", "per_sample_loss", "sample_error", "hits", "average_members", "selection",
            "output_size"} <= task_calls


def test_batch_and_model_output_fields_are_each_documented_once() -> None:
    documented = first_column(DESIGN.read_text())
    for cls in (Batch, ModelOutput):
        fields = {f"{cls.__name__}.{f.name}" for f in dataclasses.fields(cls)}
        assert {name for name in documented if name.startswith(f"{cls.__name__}.")} == fields


# -- capabilities --------------------------------------------------------------------------------------------


def built_in_users(capability: str) -> list[str]:
    """The built-in methods that require a capability."""
    return sorted(name for name, cls in METHODS.items()
                  if capability in cls.requires and cls.__module__.startswith("bench.methods."))


def test_every_capability_has_a_contract_and_names_the_methods_that_use_it() -> None:
    documented = sections(PLUGINS.read_text(), "####")
    assert set(CAPABILITIES) <= set(documented)
    for capability in CAPABILITIES:
        used_by = re.search(r"^Used by: (.*)$", documented[capability], re.MULTILINE)
        assert used_by is not None, f"{capability}: no 'Used by:' line"
        assert sorted(re.findall(r"`(\w+)`", used_by.group(1))) == built_in_users(capability), capability


# -- bench.api -------------------------------------------------------------------------------------------------


def public_api() -> dict[str, Callable[..., Any]]:
    """bench.api's functions in __all__, and any other `api.<name>` the README or the docs call."""
    named = set(api.__all__)
    for path in (README, DESIGN, PLUGINS, API):
        named.update(re.findall(r"\bapi\.([a-z_]+)\b", path.read_text()))
    return {name: getattr(api, name) for name in sorted(named)
            if inspect.isfunction(getattr(api, name, None)) and getattr(api, name).__module__ == "bench.api"}


SHARED = {"run-keywords": "Run keywords", "execution-keywords": "Execution keywords",
          "selection-keywords": "Selection keywords"}


def shared_tables(text: str) -> dict[str, set[str]]:
    """Anchor -> the keywords of that shared table."""
    tables = {}
    for anchor, title in SHARED.items():
        match = re.search(rf"^### {title}\n(.*?)(?=^#|\Z)", text, re.MULTILINE | re.DOTALL)
        assert match is not None, f"docs/api.md: no section {title!r}"
        tables[anchor] = first_column(match.group(1))
    return tables


def api_doc_problems(text: str) -> list[str]:
    """What docs/api.md gets wrong about each public function's keywords."""
    functions = public_api()
    documented = sections(text, "###")
    shared = shared_tables(text)
    problems = [f"{name}: documented, not a function of bench.api" for name in documented
                if name.startswith("api.") and name.removeprefix("api.") not in functions]
    for name, function in functions.items():
        section = documented.get(f"api.{name}")
        if section is None:
            problems.append(f"api.{name}: no section")
            continue
        own = first_column(section)
        referenced = set().union(*(shared[a] for a in shared if f"(#{a})" in section))
        params = inspect.signature(function).parameters.values()
        real = {p.name for p in params if p.kind != p.VAR_KEYWORD}
        for p in params:
            if p.kind == p.VAR_KEYWORD and f"`**{p.name}`" not in section:
                problems.append(f"api.{name}: **{p.name} not said")
        missing = sorted(real - own - referenced)
        wrong = sorted((own if len(real) < len(list(params)) else own | referenced) - real - PENDING_KEYWORDS)
        problems += [f"api.{name}: keyword {k} not documented" for k in missing]
        problems += [f"api.{name}: documents {k}, which it does not take" for k in wrong]
    consumers = {"run-keywords": api.run_plans, "execution-keywords": api.grid, "selection-keywords": api.cells}
    for anchor, consumer in consumers.items():
        unknown = sorted(shared[anchor] - set(parameter_names(consumer)) - PENDING_KEYWORDS)
        problems += [f"{SHARED[anchor]}: {k} is no keyword of api.{consumer.__name__}" for k in unknown]
    return problems


def test_the_api_doc_names_every_function_and_every_keyword() -> None:
    assert "ranking" in public_api()  # not in __all__, but the README calls it
    assert api_doc_problems(API.read_text()) == []


def test_the_api_doc_check_catches_a_missing_and_an_invented_keyword() -> None:
    text = API.read_text()
    dropped = text.replace("| `tune_metric` | `\"val_acc\"` | `val_acc` (higher is better)", "| `x` | | ", 1)
    assert "api.table: keyword tune_metric not documented" in api_doc_problems(dropped)
    invented = text.replace("| `pdf` | `False` |", "| `pdf` | `False` |\n| `dpi` | `100` |", 1)
    assert "api.plot: documents dpi, which it does not take" in api_doc_problems(invented)


# -- the code a reader copies --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plugin_loaded() -> Callable[..., Any]:
    """The context manager of docs/plugins.md's pytest pattern, as the reader would paste it."""
    namespace: dict[str, Any] = {}
    exec(compile(code_block(PLUGINS, "pytest-pattern"), "docs/plugins.md", "exec"), namespace)
    return namespace["plugin_loaded"]


@pytest.fixture(scope="module")
def skeletons(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("docs-plugins")
    files = {"model": (PLUGINS, "model-skeleton"), "method": (PLUGINS, "method-skeleton"),
             "readme": (README, "readme-method")}
    paths = {}
    for key, (doc, marker) in files.items():
        paths[key] = folder / f"docs_{key}.py"
        paths[key].write_text(code_block(doc, marker))
    return paths


def small_batch(spec: ModelSpec, size: int = 5) -> Batch:
    """Random zero-padded inputs of the spec's widths with lengths 1..T, on the CPU."""
    generator = torch.Generator().manual_seed(0)
    inputs, lengths = {}, {}
    for m in spec.modalities:
        steps = 4
        length = torch.randint(1, steps + 1, (size,), generator=generator)  # (B,)
        x = torch.randn(size, steps, spec.input_dim(m), generator=generator)  # (B, T, d)
        x[torch.arange(steps)[None, :] >= length[:, None]] = 0.0
        inputs[m], lengths[m] = x, length
    return Batch(inputs=inputs, lengths=lengths, labels=torch.zeros(size, dtype=torch.long),
                 index=torch.arange(size))


def contract_problems(model: torch.nn.Module, spec: ModelSpec) -> list[str]:
    """The capability contracts of docs/plugins.md, checked on one batch."""
    batch = small_batch(spec)
    out = model(batch)
    problems = []
    close = lambda a, b: torch.allclose(a, b, atol=1e-5)  # noqa: E731
    if tuple(out.logits.shape) != (batch.size, spec.output_size):
        problems.append(f"logits {tuple(out.logits.shape)}")
    if not close(sum(out.modality_logits.values()), out.logits):
        problems.append("modality_logits do not sum to logits")
    if any(o.requires_grad for o in out.modality_logits.values()):
        problems.append("modality_logits not detached")
    features = model.encode(batch)
    if not close(model.fuse(features), out.logits) or not all(z.requires_grad for z in features.values()):
        problems.append("fuse(encode(batch)) is not the forward's output, with the graph")
    if any(z.shape[1] != model.feature_dim(m) for m, z in features.items()):
        problems.append("feature_dim is not the features' width")
    columns = [i for cols in model.head_slices().values() for i in range(model.head.in_features)[cols]]
    if columns != list(range(model.head.in_features)):
        problems.append("head_slices do not cover the head's columns once, in order")
    zeros = model.encode(batch.with_zeroed(spec.modalities))
    if any(not close(model.encode_zeros(batch)[m], zeros[m]) for m in spec.modalities):
        problems.append("encode_zeros is not the encoding of zero inputs")
    for m in spec.modalities:
        every = {id(p) for p in model.encoders[m].parameters()}
        if {id(p) for p in model.encoder_parameters(m, include_biases=True)} != every:
            problems.append(f"encoder_parameters({m}, include_biases=True) is not the encoder's")
    return problems


def test_the_documented_model_keeps_every_contract_it_declares(plugin_loaded: Any, skeletons: dict[str, Path]) -> None:
    with plugin_loaded(skeletons["model"]) as names:
        assert names == ["model pooled_mlp"]
        cls = model_class("pooled_mlp")
        assert cls.capabilities == CAPABILITIES.keys() - {"encoder_sizes", "cpsl_parts", "feada_parts",
                                                          "feature_masks", "sati_parts"}
        for modalities in (TAV, ("text",)):
            spec = ModelSpec(modalities, tuple((m, 3 + i) for i, m in enumerate(modalities)), (), 4,
                             (("width", 6),))
            torch.manual_seed(0)
            assert contract_problems(cls.build(spec), spec) == [], modalities
    assert "pooled_mlp" not in MODELS  # the pattern unloaded it


def test_the_documented_method_and_the_readme_method_train(plugin_loaded: Any, skeletons: dict[str, Path],
                                                          tiny: Dataset) -> None:
    torch.set_num_threads(1)
    with plugin_loaded(skeletons["model"]), plugin_loaded(skeletons["method"]) as names, \
            plugin_loaded(skeletons["readme"]):
        assert names == ["method aux_heads"]
        runs = [("aux_heads", "pooled_mlp", "classification"), ("aux_heads", "late_fusion", "regression"),
                ("mymethod", "pooled_mlp", "regression")]
        for method, model, task in runs:
            cfg = make_config("synth-mosi", "smoke", method=method, model=model, task=task, modalities=TAV)
            result = train_run(cfg, dataset=tiny)
            assert result.status == "ok", (method, model, task, result.error)
            series = {row["series"] for row in result.trajectory}
            logged = {"head_acc", "grad_norm"} if method == "aux_heads" else {"norm"}
            assert logged <= series, (method, sorted(series))
    assert "aux_heads" not in METHODS and "mymethod" not in METHODS


def test_the_readme_points_a_method_author_to_the_plugin_and_api_docs() -> None:
    section = README.read_text().split("### Adding your own method", 1)[1].split("\n## ", 1)[0]
    assert "docs/plugins.md" in section and "docs/design.md" in section
    assert "docs/api.md" in README.read_text()
