"""The registry of declared datasets: built-in specs, surrogates, and spec files a user declares.

`spec_for(name_or_path)` is the one way from what a user typed to a `DatasetSpec`:
- a registered name ("mosi", "synth-mosei-shift", "sims", a spec file's name once loaded);
- a path: a file bound to a spec by a loaded spec file; else a registered spec whose relative file path
  (`files`, e.g. "SIMS/Processed/unaligned_39.pkl") the path ends with, or whose published SHA-256 the
  file has; else the spec file beside it, `<file stem>.spec.toml`; else a DataError in one line that
  names the spec file to write. A file is never given MOSI's rules by default.

Spec files (TOML; docs/datasets.md): every `DatasetSpec` field, flat, plus a `[labels]` table; `like =
"<name>"` starts from a registered spec and overrides the keys given (its files and hashes are not
inherited: the spec binds the files it names, relative to itself, and the data file beside it).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.data import cache

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib
from bench.data.builtin import BUILTIN_SPECS
from bench.data.safe_pickle import check_readable_file
from bench.data.spec import DatasetSpec, LabelSpec
from bench.data.surrogates import SURROGATE_SPECS
from bench.data.types import DataError

SPEC_SUFFIX = ".spec.toml"
DATASETS: dict[str, DatasetSpec] = {}
_FROM_FILES: dict[str, Path] = {}  # name -> the spec file it came from (such a name may be re-declared)
_BOUND: dict[str, Path] = {}  # resolved data file path -> the spec file that declares it


def register(spec: DatasetSpec) -> DatasetSpec:
    """Make `spec` available by its name; a name already taken is an error."""
    if spec.name in DATASETS:
        raise DataError(f"dataset {spec.name!r} is already registered")
    DATASETS[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    """Every registered name, in registration order (built-ins: mosi, mosei, sims, then the surrogates)."""
    return list(DATASETS)


def names_text() -> str:
    """'synth-mosi, ..., mosi, mosei, sims': the registered names but those of spec files, surrogates first,
    for error messages."""
    named = [n for n in DATASETS if n not in _FROM_FILES]
    synthetic = [n for n in named if DATASETS[n].synthetic]
    return ", ".join([*synthetic, *(n for n in named if n not in synthetic)])


def is_synthetic(name: str) -> bool:
    """Whether `name` is a registered generated dataset (False for paths and unknown names)."""
    spec = DATASETS.get(str(name).strip())
    return bool(spec and spec.synthetic)


def root_name(name: str) -> str:
    """The root of a registered spec's `like` chain ('synth-mosei-shift' -> 'mosei'); else `name` itself."""
    seen = set()
    while name in DATASETS and DATASETS[name].like and name not in seen:
        seen.add(name)
        name = DATASETS[name].like
    return name


def display_rank(name: str) -> int:
    """Sort key of a dataset in tables: the registration order of its root spec (MOSI, MOSEI, SIMS, ...)."""
    root = root_name(name)
    names = list(DATASETS)
    return names.index(root) if root in DATASETS else len(names)


def spec_for(name_or_path: str) -> DatasetSpec:
    """The spec of a registered name or of a data file (see the module docstring)."""
    key = str(name_or_path).strip()
    if key in DATASETS:
        return DATASETS[key]
    path = Path(key).expanduser()
    bound = _BOUND.get(_resolved(path))
    if bound is not None and bound.is_file():
        return load_spec_file(bound)  # read again: the spec file may have been edited
    by_suffix = _match_suffix(path)
    if by_suffix is not None:
        return by_suffix
    if not path.exists():
        raise DataError(f"{path}: no such file (dataset names: {names_text()}, or a path)")
    check_readable_file(path)
    beside = spec_file_beside(path)
    published = _match_sha256(path)
    if published is not None:
        return published
    if beside.is_file():
        spec = load_spec_file(beside)
        _BOUND[_resolved(path)] = beside
        return spec
    raise DataError(f"{path}: undeclared dataset file: write {beside.name} beside it (e.g. like = \"mosi\" or "
                    f"a full spec, docs/datasets.md), or name a registered dataset ({names_text()})")


def from_spec_file(spec: DatasetSpec) -> bool:
    """Whether `spec` was declared by a spec file (a user's), not built in."""
    return _FROM_FILES.get(spec.name) is not None and DATASETS.get(spec.name) == spec


def declared_file(name: str) -> Path | None:
    """The data file a spec file registered under `name` declares (None for built-ins and unknown names)."""
    spec_file = _FROM_FILES.get(name)
    if spec_file is None:
        return None
    return next((Path(data) for data, declaring in _BOUND.items() if declaring == spec_file), None)


def spec_file_beside(path: Path) -> Path:
    """`<file stem>.spec.toml` in the file's folder."""
    return path.with_name(path.stem + SPEC_SUFFIX)


def _resolved(path: Path) -> str:
    try:
        return str(path.resolve())
    except OSError:
        return str(path)


def _match_suffix(path: Path) -> DatasetSpec | None:
    """The registered spec one of whose relative file paths `path` ends with (root specs first)."""
    text = "/" + path.as_posix().lstrip("/")
    for spec in DATASETS.values():
        if any(text.endswith("/" + relative.strip("/")) for relative in spec.files.values()):
            return spec
    return None


def _match_sha256(path: Path) -> DatasetSpec | None:
    """The registered spec that publishes this file's SHA-256 (hashed once per file, then remembered)."""
    if not any(spec.published_sha256 for spec in DATASETS.values()):
        return None
    digest = cache.known_sha256(path)
    return next((s for s in DATASETS.values() if digest in s.published_sha256), None)


def published_description(sha256: str) -> str | None:
    """'MOSI unaligned_50.pkl' when the hash is a published file of a registered spec."""
    return next((s.published_sha256[sha256] for s in DATASETS.values() if sha256 in s.published_sha256), None)


# -- spec files ---------------------------------------------------------------------------------------

_TOP_KEYS = {"name", "display", "short", "table_name", "modalities", "labels", "dev_size", "profile_sizes",
             "metric_set", "recipe", "files", "published_sha256", "like", "per_modality_labels", "data",
             "version"}
_LABEL_KEYS = {"kind", "score_range", "rules", "class_names"}


def load_spec_file(path: Path | str) -> DatasetSpec:
    """Read, register and bind a TOML spec file; its data files: `data` / `files` (relative to it), else
    the file beside it of the same stem. The same name from a spec file may be declared again (an edited
    file); a built-in name may not."""
    path = Path(path).expanduser()
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise DataError(f"{path}: cannot read the dataset spec ({err})") from err
    where = f"{path}"
    unknown = sorted(set(table) - _TOP_KEYS)
    if unknown:
        raise DataError(f"{where}: unknown key(s) {', '.join(unknown)}; a spec takes {', '.join(sorted(_TOP_KEYS))}")
    spec = _spec_from_table(table, path)
    if spec.name in DATASETS and spec.name not in _FROM_FILES:
        raise DataError(f"{where}: dataset {spec.name!r} is a built-in name; give the spec another name")
    DATASETS[spec.name] = spec
    _FROM_FILES[spec.name] = path
    for data_file in _data_files(table, path):
        _BOUND[_resolved(data_file)] = path
    return spec


def spec_source(name: str) -> str:
    """Where a registered dataset spec comes from: 'built-in', or 'spec file <path>'."""
    path = _FROM_FILES.get(name)
    return f"spec file {path}" if path is not None else "built-in"


def forget_spec(name: str) -> None:
    """Unregister a dataset a spec file declared (a plugin unloaded); built-in specs stay."""
    if name in _FROM_FILES:
        DATASETS.pop(name, None)
        _FROM_FILES.pop(name, None)


def _spec_from_table(table: Mapping[str, Any], path: Path) -> DatasetSpec:
    """A spec from a TOML table: `like` starts from a registered spec, every other key overrides it."""
    name = str(table.get("name", path.name.removesuffix(SPEC_SUFFIX).removesuffix(".toml")))
    fields: dict[str, Any] = {"name": name}
    for key in ("display", "short", "table_name", "metric_set", "recipe"):
        if key in table:
            fields[key] = str(table[key])
    if "modalities" in table:
        fields["modalities"] = tuple(str(m) for m in table["modalities"])
    if "dev_size" in table:
        fields["dev_size"] = int(table["dev_size"])
    if "version" in table:
        fields["version"] = int(table["version"])
    if "profile_sizes" in table:
        fields["profile_sizes"] = {str(k): tuple(int(n) for n in v) for k, v in table["profile_sizes"].items()}
    for key in ("files", "published_sha256"):  # never inherited: a spec file declares its own files
        fields[key] = {str(k): str(v) for k, v in table.get(key, {}).items()}
    if "per_modality_labels" in table:
        fields["per_modality_labels"] = {str(k): str(v) for k, v in table["per_modality_labels"].items()}
    try:
        like = str(table.get("like", ""))
        if like:
            if like not in DATASETS:
                raise DataError(f"like = {like!r} is not a registered dataset ({', '.join(DATASETS)})")
            parent = DATASETS[like]
            if "profile_sizes" in fields:  # the profiles given override the parent's, the others stay
                fields["profile_sizes"] = {**parent.profile_sizes, **fields["profile_sizes"]}
            labels = _labels(table["labels"], parent.labels) if "labels" in table else parent.labels
            fields.setdefault("display", name)
            fields.setdefault("short", "")
            fields.setdefault("table_name", "")
            return parent.derive(labels=labels, synthetic=False, **fields)
        missing = sorted({"modalities", "labels", "dev_size", "profile_sizes"} - set(table))
        if missing:
            raise DataError(f"needs {', '.join(missing)} (or like = \"<a registered dataset>\")")
        return DatasetSpec(labels=_labels(table["labels"], None), display=fields.pop("display", name),
                           metric_set=fields.pop("metric_set", "mmsa"), recipe=fields.pop("recipe", name),
                           **fields)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None
    except (TypeError, ValueError, AttributeError) as err:
        raise DataError(f"{path}: bad value ({err})") from None


def _labels(table: Mapping[str, Any], parent: LabelSpec | None) -> LabelSpec:
    unknown = sorted(set(table) - _LABEL_KEYS)
    if unknown:
        raise DataError(f"[labels]: unknown key(s) {', '.join(unknown)}; it takes {', '.join(sorted(_LABEL_KEYS))}")
    kind = str(table.get("kind", parent.kind if parent else "scores"))
    if parent is not None and parent.kind != kind:
        parent = None  # scores -> classes (or back): nothing of the parent's labels applies
    default_range = parent.score_range if parent else None
    score_range = table.get("score_range", default_range) if kind == "scores" else None
    rules = tuple(str(r) for r in table.get("rules", parent.rules if parent else ()))
    if kind == "classes" and not rules:
        rules = ("given",)
    names = table.get("class_names", parent.class_names if parent and "rules" not in table else {})
    bounds = None if score_range is None else (float(score_range[0]), float(score_range[1]))
    class_names = {str(k): tuple(str(n) for n in v) for k, v in names.items()}
    return LabelSpec(kind=kind, score_range=bounds, rules=rules, class_names=class_names)


def _data_files(table: Mapping[str, Any], path: Path) -> list[Path]:
    """The data files a spec file declares (`data`, `files`, relative to it), else the pickle beside it."""
    folder = path.parent
    named = [table["data"]] if "data" in table else []
    named += list(table.get("files", {}).values())
    if named:
        return [folder / str(n) for n in named]
    stem = path.name.removesuffix(SPEC_SUFFIX)
    return [folder / f"{stem}.pkl"]


def write_spec_file(path: Path | str, **keys: Any) -> Path:
    """Write a minimal spec file (flat keys; a `labels` dict becomes the [labels] table), e.g. like = "mosi"."""
    path = Path(path)
    lines, tables = [], []
    for key, value in keys.items():
        if isinstance(value, Mapping):
            tables.append(f"\n[{key}]\n" + "".join(f"{_toml_key(k)} = {_toml(v)}\n" for k, v in value.items()))
        else:
            lines.append(f"{key} = {_toml(value)}\n")
    path.write_text("".join(lines) + "".join(tables), encoding="utf-8")
    return path


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml(key)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


for _spec in (*BUILTIN_SPECS, *SURROGATE_SPECS):
    register(_spec)
