"""What an executor is: a `Backend` (where jobs run) registered with a frozen options dataclass.

One scheduler loop (`bench.execute.run_jobs`) drives every backend: it asks `capacity()` how many jobs
fit, `submit`s that many ready jobs, and `poll`s for finished ones; the backend only runs jobs. A new
executor is one file in `bench/execute/backends/` (every module there is imported) that registers its
opener and its options:

    @dataclass(frozen=True)
    class RayOptions(BackendOptions):
        address: str | None = option(None, help="Ray cluster address")
        max_running: int = option(8, minimum=1, help="jobs at once")

    @register_backend("ray", RayOptions, help="a Ray cluster")
    def open_ray(options: RayOptions, context: BackendContext) -> Backend: ...

Its options come from `--exec-opt key=value` (strings, converted to the field's type here) or from
`bench.api`'s `exec_opts=` mapping; no CLI or API edit is needed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Union

from bench import store
from bench.config import ConfigError, RunConfig
from bench.execute.job import JobFn

Outcome = Any  # a RunResult-like object (bench.store.ResultLike): what execute_one returns


class ExecutorError(ConnectionError):
    """The executor itself failed (a Slurm controller that cannot be reached), not the input. An OSError, so
    the CLI shows it as one line with exit 1 (bench.cli.os_error_code)."""


@dataclass(eq=False)
class Job:
    """One run handed to a backend: its config and the run ids whose checkpoints it loads.

    `worker` is the backend's label for where it runs (shown by the progress display); `claim`, `started`
    and `held_until` are the scheduler's bookkeeping.
    """

    config: RunConfig
    needs: tuple[str, ...] = ()
    worker: str = ""
    claim: store.Claim | None = None
    started: float = 0.0  # time.monotonic() when handed to the backend
    held_until: float = 0.0  # claimed by another invocation: look again after this time

    @property
    def run_id(self) -> str:
        return self.config.run_id


class Backend(Protocol):
    """Where jobs run. Only the scheduler calls these, from one thread."""

    def capacity(self) -> int:
        """How many more jobs `submit` takes now."""
        ...

    def submit(self, job: Job) -> None:
        """Start (or queue) `job`; it is reported by a later `poll`."""
        ...

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        """Finished jobs with their outcome (a failure is an outcome, never an exception); waits up to about
        `timeout` seconds when none has finished."""
        ...

    def cancel(self, job: Job | None = None) -> None:
        """Stop a submitted job (every one when None); a cancelled job is reported by no later poll."""
        ...

    def close(self, abort: bool = False) -> None:
        """Release workers and handles (abort: without waiting for running jobs)."""
        ...


@dataclass(frozen=True)
class BackendContext:
    """What every backend needs besides its options."""

    runs_dir: Path
    job_fn: JobFn
    metric_columns: tuple[str, ...] = ()  # passed to every store.failed_record the backend makes


# -- options ---------------------------------------------------------------------------------------

def option(default: Any, *, flag: str | None = None, help: str = "", minimum: float | None = None) -> Any:
    """A backend option field: its default, the CLI flag that is an alias of `--exec-opt NAME=...` (if any),
    a help line and the smallest allowed value (numbers)."""
    return field(default=default, metadata={"flag": flag, "help": help, "minimum": minimum})


@dataclass(frozen=True)
class BackendOptions:
    """Base of every backend's options dataclass (fields declared with `option`)."""

    def check(self) -> None:
        """Checks across fields; ConfigError when the combination is impossible (override as needed)."""


def option_label(fld: dataclasses.Field, value: Any = None, exec_opt: bool = False) -> str:
    """How an error names an option: its flag (`--workers 3`) or `--exec-opt name=value`."""
    flag = fld.metadata.get("flag")
    if flag and not exec_opt:
        return flag if value is None else f"{flag} {value}"
    return f"--exec-opt {fld.name}" if value is None else f"--exec-opt {fld.name}={value}"


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_types(hint: Any) -> tuple[list[type], bool]:
    """The concrete types of an annotation and whether None is allowed (`int | None` -> [int], True)."""
    if typing.get_origin(hint) in (Union, types.UnionType):
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def convert(fld: dataclasses.Field, hint: Any, value: Any, exec_opt: bool = False) -> Any:
    """`value` (often a string from the CLI) as the field's type, checked against its minimum."""
    kinds, nullable = _base_types(hint)
    name = option_label(fld, exec_opt=exec_opt)
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        if nullable:
            return None
        raise ConfigError(f"{name} needs a value")
    kind = kinds[0]
    try:
        converted = _as(kind, value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {_kind_text(kind)}, got {value!r}") from None
    minimum = fld.metadata.get("minimum")
    if minimum is not None and converted < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g}, got {value}")
    return converted


def _as(kind: type, value: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(value)
        return text in ("true", "1", "yes")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError(value)
        return int(str(value).strip()) if isinstance(value, str) else int(value)
    if kind is float:
        if isinstance(value, bool):
            raise TypeError(value)
        return float(value)
    if kind is str:
        if not isinstance(value, (str, Path)):
            raise TypeError(value)
        return str(value)
    return kind(value)


def _kind_text(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(kind, kind.__name__)


# -- the registry ----------------------------------------------------------------------------------

Opener = Callable[[Any, BackendContext], Backend]


@dataclass(frozen=True)
class BackendSpec:
    """A registered executor: its name, options dataclass, opener and a help line."""

    name: str
    options: type[BackendOptions]
    open: Opener
    help: str = ""

    def fields(self) -> dict[str, dataclasses.Field]:
        return {f.name: f for f in dataclasses.fields(self.options)}


EXECUTORS: dict[str, BackendSpec] = {}


def register_backend(name: str, options: type[BackendOptions], help: str = "") -> Callable[[Opener], Opener]:
    """Decorator: register `open(options, context) -> Backend` as executor `name` with its options class."""
    if not (dataclasses.is_dataclass(options) and issubclass(options, BackendOptions)):
        raise ValueError(f"executor {name!r}: options must be a BackendOptions dataclass")

    def add(opener: Opener) -> Opener:
        known = EXECUTORS.get(name)
        if known is not None and known.open is not opener:
            raise ValueError(f"executor name {name!r} registered twice")
        EXECUTORS[name] = BackendSpec(name, options, opener, help)
        return opener

    return add


def backend_spec(name: str) -> BackendSpec:
    """The registered executor `name`; ConfigError naming the registered ones."""
    if name not in EXECUTORS:
        raise ConfigError(f"unknown executor {name!r}; choose from {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def _declaring(name: str) -> list[BackendSpec]:
    return [spec for spec in EXECUTORS.values() if name in spec.fields()]


def resolve_options(executor: str, values: Mapping[str, Any], from_exec_opt: Iterable[str] = ()) -> BackendOptions:
    """The executor's options dataclass from `values` (name -> value, strings converted); ConfigError for an
    unknown or inapplicable name, a bad value or an impossible combination. `from_exec_opt`: the names given
    as `--exec-opt` (errors then name them that way)."""
    spec = backend_spec(executor)
    fields, hints = spec.fields(), _field_types(spec.options)
    via_exec = set(from_exec_opt)
    converted = {}
    for name, value in values.items():
        if name in fields:
            converted[name] = convert(fields[name], hints[name], value, name in via_exec)
        else:
            raise ConfigError(_inapplicable(name, value, spec, name in via_exec))
    options = spec.options(**converted)
    options.check()
    return options


def _inapplicable(name: str, value: Any, spec: BackendSpec, exec_opt: bool) -> str:
    """Why `name` is refused: it belongs to other executors (its value checked there first), or to none."""
    owners = _declaring(name)
    if not owners:
        valid = ", ".join(spec.fields()) or "none"
        return f"unknown option {name!r} for --executor {spec.name}; its options: {valid}"
    first = owners[0]
    fld = first.fields()[name]
    convert(fld, _field_types(first.options)[name], value, exec_opt)  # a bad value is the first thing to say
    where = " or ".join(f"--executor {o.name}" for o in owners)
    return f"{option_label(fld, exec_opt=exec_opt)} only applies to {where}"


def merge_options(named: Mapping[str, Any], exec_opts: Mapping[str, Any]) -> tuple[dict[str, Any], set[str]]:
    """Options given by their own flag or keyword (`named`; None = not given) and as `--exec-opt` pairs, as
    one mapping, and the names that came from `--exec-opt`. The same option given both ways with different
    values is a ConfigError."""
    merged = {k: v for k, v in named.items() if v is not None}
    for name, value in exec_opts.items():
        if name in merged and not _same(name, merged[name], value):
            fld = _declaring(name)[0].fields()[name]
            raise ConfigError(f"{option_label(fld, merged[name])} conflicts with "
                              f"{option_label(fld, value, exec_opt=True)}")
        merged.setdefault(name, value)
    return merged, {n for n in exec_opts if n not in named or named[n] is None}


def _same(name: str, a: Any, b: Any) -> bool:
    """Whether two values of option `name` are equal once converted to its type."""
    owners = _declaring(name)
    if not owners:
        return a == b
    fld, hint = owners[0].fields()[name], _field_types(owners[0].options)[name]
    return convert(fld, hint, a) == convert(fld, hint, b, exec_opt=True)


def options_help(names: Sequence[str] | None = None) -> list[str]:
    """One line per executor and option (for help texts and docs)."""
    lines = []
    for spec in EXECUTORS.values():
        if names is not None and spec.name not in names:
            continue
        lines.append(f"{spec.name}: {spec.help}")
        for fld in dataclasses.fields(spec.options):
            flag = f" (alias {fld.metadata['flag']})" if fld.metadata.get("flag") else ""
            lines.append(f"  {fld.name}={fld.default!r}{flag}: {fld.metadata.get('help', '')}")
    return lines
