"""`bench perf`: measure the harness in ratios against reference runs in the same process.

Not a test: timings on shared machines are noisy, so every figure is a ratio against a reference
measured moments before in the same process, printed with the machine, torch version and command.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import typer
from torch import nn

from bench.config import RunConfig, make_config

SECTIONS = ("overhead", "speedups", "methods", "seeds", "workers", "memory")


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or "unknown",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "python": platform.python_version(),
        "command": " ".join(["bench", *sys.argv[1:]]) if sys.argv else "bench perf",
    }


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def plain_loop(cfg: RunConfig, epochs: int) -> float:
    """A minimal PyTorch loop over the same model and batch order: train + one validation pass per epoch.

    It does the work `train_run` does for concat (train, validate each epoch, test the final model) and
    nothing else. Returns the number of training samples processed per second.
    """
    from bench.data import load_dataset
    from bench.methods import get_method
    from bench.models import model_spec
    from bench.train import SplitTensors, seed_everything

    data = load_dataset(cfg.dataset, cfg.profile)
    seed_everything(cfg.seed)
    model = get_method("concat").build(model_spec(cfg, data.feature_dims, data.num_classes), cfg, {})
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    device = torch.device("cpu")
    train = SplitTensors(data.train, cfg.modalities, device)
    valid = SplitTensors(data.valid, cfg.modalities, device)
    test = SplitTensors(data.test, cfg.modalities, device)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in train.iterate(cfg.batch_size, shuffle):
            loss = nn.functional.cross_entropy(model(batch).logits, batch.labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        _forward_all(model, valid)
    _forward_all(model, test)
    return train.size * epochs / (time.perf_counter() - started)


@torch.no_grad()
def _forward_all(model: nn.Module, split: Any) -> None:
    model.eval()
    for batch in split.iterate(512):
        model(batch)


def harness_throughput(cfg: RunConfig) -> float:
    """Training samples per second of `train_run` (validation, checkpointing and test included)."""
    from bench.data import load_dataset
    from bench.train import train_run

    data = load_dataset(cfg.dataset, cfg.profile)
    seconds, result = _timed(lambda: train_run(cfg, dataset=data))
    return data.train.size * int(result.metrics.get("epochs", cfg.max_epochs)) / seconds


def measure_overhead(dataset: str, profile: str, epochs: int, repeats: int) -> dict[str, Any]:
    """Harness vs plain loop, concat on all three modalities, alternating to share the noise."""
    cfg = make_config(dataset, profile, method="concat", modalities=("text", "audio", "vision"),
                      max_epochs=epochs, early_stopping=False)
    harness_rates, plain_rates = [], []
    harness_throughput(cfg)  # warm-up: data cache, allocator
    for _ in range(repeats):
        plain_rates.append(plain_loop(cfg, epochs))
        harness_rates.append(harness_throughput(cfg))
    harness, plain = max(harness_rates), max(plain_rates)
    return {"harness_samples_per_s": round(harness, 1), "plain_samples_per_s": round(plain, 1),
            "overhead_ratio": round(plain / harness, 3)}


def _packed_forward(encoder: Any, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """The encoder as first written: a packed sequence through the LSTM (the 'before' of the speed-up)."""
    from torch.nn.utils.rnn import pack_padded_sequence

    steps = int(lengths.max())
    packed = pack_padded_sequence(x[:, :steps], lengths.cpu(), batch_first=True, enforce_sorted=False)
    _, (h_n, _) = encoder.lstm(packed)
    return encoder.proj(h_n[-1])


@contextlib.contextmanager
def _swapped(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """Temporarily replace `owner.name` (to time the implementation a speed-up replaced)."""
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


def _agm_without_shortcuts() -> contextlib.ExitStack:
    """AGM as first written: full zeroed-input passes, and a separate eval-mode pass on the real inputs."""
    import bench.methods.agm as agm
    from bench.models import LateFusionModel

    stack = contextlib.ExitStack()
    stack.enter_context(_swapped(LateFusionModel, "encode_zeros",
                                 lambda self, batch: self.encode(batch.with_zeroed(tuple(self.modalities)))))
    stack.enter_context(_swapped(agm, "behaves_the_same_in_train_and_eval", lambda model: False))
    return stack


def measure_speedups(dataset: str, profile: str, epochs: int, repeats: int) -> dict[str, Any]:
    """Each optimisation against the code it replaced, same process and data: time ratio and result drift."""
    from bench.data import load_dataset
    from bench.models import SequenceEncoder
    from bench.train import train_run

    data = load_dataset(dataset, profile)
    cases = {
        "encoder: fused LSTM + gather vs packed sequence (concat, 3 modalities)": (
            make_config(dataset, profile, method="concat", modalities=("text", "audio", "vision"),
                        max_epochs=epochs, early_stopping=False),
            lambda: _swapped(SequenceEncoder, "forward", _packed_forward)),
        "encoder: same, audio+vision only": (
            make_config(dataset, profile, method="concat", modalities=("audio", "vision"),
                        max_epochs=epochs, early_stopping=False),
            lambda: _swapped(SequenceEncoder, "forward", _packed_forward)),
        "agm: shared zero-input pass + reused encoding vs separate passes (text+vision)": (
            make_config(dataset, profile, method="agm", modalities=("text", "vision"), max_epochs=epochs,
                        early_stopping=False),
            _agm_without_shortcuts),
    }
    out: dict[str, Any] = {}
    for label, (cfg, before) in cases.items():
        after_s, before_s = [], []
        train_run(cfg, dataset=data)  # warm-up
        for _ in range(repeats):
            with before():
                seconds, old = _timed(lambda cfg=cfg: train_run(cfg, dataset=data))
            before_s.append(seconds)
            seconds, new = _timed(lambda cfg=cfg: train_run(cfg, dataset=data))
            after_s.append(seconds)
        drift = max(abs(old.metrics[k] - new.metrics[k]) for k in new.metrics)
        out[label] = {"before_s": round(min(before_s), 2), "after_s": round(min(after_s), 2),
                      "speedup": round(min(before_s) / min(after_s), 2), "max_metric_difference": drift}
    return out


def measure_methods(dataset: str, profile: str, epochs: int, modalities: tuple[str, ...],
                    repeats: int = 2) -> dict[str, Any]:
    """Seconds per epoch of each trainable method relative to concat (same data, seed, epochs)."""
    from bench.data import load_dataset
    from bench.methods import REGISTRY, get_method
    from bench.train import train_run

    data = load_dataset(dataset, profile)
    configs: dict[str, RunConfig] = {}
    for name in sorted(REGISTRY):
        method = get_method(name)
        if name.startswith("test_") or not method.trains or method.needs(make_config(dataset, profile)):
            continue
        if not method.min_modalities <= len(modalities) <= method.max_modalities:
            continue
        configs[name] = make_config(dataset, profile, method=name, modalities=modalities, max_epochs=epochs,
                                    early_stopping=False, window_end=-1)
    timings: dict[str, list[float]] = {name: [] for name in configs}
    for round_index in range(repeats + 1):  # round 0 warms up; methods interleave so noise hits all alike
        for name, cfg in configs.items():
            seconds, result = _timed(lambda cfg=cfg: train_run(cfg, dataset=data))
            if round_index:
                timings[name].append(seconds / max(1, int(result.metrics.get("epochs", epochs))))
    per_epoch = {name: min(values) for name, values in timings.items()}
    base = per_epoch.get("concat", float("nan"))
    return {name: {"s_per_epoch": round(s, 3), "vs_concat": round(s / base, 2)} for name, s in per_epoch.items()}


def measure_seeds(dataset: str, profile: str, epochs: int, n_seeds: int) -> dict[str, Any]:
    """Wall time of an n-seed job against one seed (the seeds run one after another)."""
    from bench.data import load_dataset
    from bench.train import train_run

    data = load_dataset(dataset, profile)
    cfgs = [make_config(dataset, profile, method="concat", modalities=("text", "vision"), seed=s,
                        max_epochs=epochs, early_stopping=False) for s in range(n_seeds)]
    one, _ = _timed(lambda: train_run(cfgs[0], dataset=data))
    many, _ = _timed(lambda: [train_run(c, dataset=data) for c in cfgs])
    return {"one_seed_s": round(one, 2), f"{n_seeds}_seeds_s": round(many, 2), "ratio": round(many / one, 2)}


def measure_workers(dataset: str, profile: str, epochs: int, jobs: int) -> dict[str, Any]:
    """A small grid through the local executor with 1 and 2 workers (fresh runs directories)."""
    from bench.execute import run_jobs

    cfgs = [make_config(dataset, profile, method="concat", modalities=("text", "vision"), seed=s,
                        max_epochs=epochs, early_stopping=False) for s in range(jobs)]
    out: dict[str, Any] = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as runs_dir:
            seconds, _ = _timed(lambda w=workers, d=runs_dir: run_jobs(cfgs, Path(d), executor="local",
                                                                        workers=w, progress=False))
        out[f"{workers}_workers_s"] = round(seconds, 2)
    out["speedup"] = round(out["1_workers_s"] / out["2_workers_s"], 2)
    return out


def peak_memory_of_one_epoch(dataset: str, profile: str) -> dict[str, Any]:
    """Peak resident memory (MiB) of a fresh process that loads the data and trains one concat epoch."""
    code = (
        "import resource, torch; torch.set_num_threads(1)\n"
        "from bench.config import make_config\nfrom bench.data import load_dataset\n"
        "from bench.train import train_run\n"
        f"d = load_dataset({dataset!r}, {profile!r})\n"
        "b = sum(x.nbytes for s in (d.train, d.valid, d.test) for x in s.features.values())\n"
        f"c = make_config({dataset!r}, {profile!r}, method='concat', modalities=('text','audio','vision'),"
        " max_epochs=1)\n"
        "train_run(c, dataset=d)\n"
        "print(b, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    array_bytes, max_rss_kib = (int(v) for v in done.stdout.split()[-2:])
    return {"array_MiB": round(array_bytes / 2**20, 1), "peak_rss_MiB": round(max_rss_kib / 1024, 1),
            "peak_over_arrays": round(max_rss_kib * 1024 / array_bytes, 2)}


def perf(
    sections: str = typer.Option(",".join(SECTIONS[:5]), help=f"Comma-separated subset of {', '.join(SECTIONS)}."),
    dataset: str = typer.Option("synth-mosi", help="Dataset to measure on."),
    profile: str = typer.Option("quick", help="Data profile."),
    epochs: int = typer.Option(3, help="Epochs per timed run (early stopping off)."),
    repeats: int = typer.Option(3, help="Repeats of the overhead comparison (best of)."),
    memory_profiles: str = typer.Option("synth-mosi:full", help="dataset:profile pairs for the memory section."),
    out: Path | None = typer.Option(None, help="Also write the figures as JSON here."),
) -> None:
    """Print the harness's performance as ratios against reference runs in the same process."""
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        from bench.config import ConfigError

        raise ConfigError(f"unknown perf section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    report: dict[str, Any] = {"machine": machine_info(), "dataset": dataset, "profile": profile, "epochs": epochs}
    typer.echo(json.dumps(report["machine"]))
    runners: dict[str, Callable[[], Any]] = {
        "overhead": lambda: measure_overhead(dataset, profile, epochs, repeats),
        "speedups": lambda: measure_speedups(dataset, profile, epochs, repeats),
        "methods": lambda: {"text+vision": measure_methods(dataset, profile, epochs, ("text", "vision"), repeats),
                            "audio+vision+text": measure_methods(dataset, profile, epochs,
                                                                 ("text", "audio", "vision"), repeats)},
        "seeds": lambda: measure_seeds(dataset, profile, epochs, 5),
        "workers": lambda: measure_workers(dataset, profile, epochs, 6),
        "memory": lambda: {pair: peak_memory_of_one_epoch(*pair.split(":"))
                           for pair in memory_profiles.split(",") if pair.strip()},
    }
    for section in chosen:
        report[section] = runners[section]()
        typer.echo(f"{section}: {json.dumps(report[section])}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        typer.echo(f"written: {out}")


def register(app: typer.Typer) -> None:
    app.command("perf")(perf)
