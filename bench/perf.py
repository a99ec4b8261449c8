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

from bench.config import ConfigError, RunConfig
from bench.data import load_dataset
from bench.execute import run_jobs
from bench.plan.deps import job_graph
from bench.plan.resolve import make_config
from bench.presets import thesis_config

SECTIONS = ("overhead", "speedups", "methods", "own-models", "seeds", "seed-stacking", "workers", "memory",
            "worker-memory", "own-models-memory")
# Sections that start fresh processes to read their memory: only on request
DEFAULT_SECTIONS = tuple(s for s in SECTIONS if s not in ("memory", "worker-memory", "own-models-memory"))
ALL_THREE = ("text", "audio", "vision")


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
    nothing else: cross-entropy, or L1 on the score for a regression config. Returns the number of
    training samples processed per second.
    """
    from bench.models import LateFusionModel, model_spec
    from bench.tasks import make_task
    from bench.train import SplitTensors, seed_everything

    data = load_dataset(cfg.dataset, cfg.profile)
    task = make_task(cfg.task, dict(cfg.task_params))
    seed_everything(cfg.seed)
    model = LateFusionModel(model_spec(cfg, data.feature_dims, task.output_size(data.num_classes)))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=True)  # the harness's kernel too
    device = torch.device("cpu")
    train = SplitTensors(data.train, cfg.modalities, device, task)
    valid = SplitTensors(data.valid, cfg.modalities, device, task)
    test = SplitTensors(data.test, cfg.modalities, device, task)
    shuffle = torch.Generator().manual_seed(cfg.seed)
    regression = cfg.task == "regression"
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for batch in train.iterate(cfg.batch_size, shuffle):
            logits = model(batch).logits
            loss = (nn.functional.l1_loss(logits.squeeze(1), batch.labels) if regression
                    else nn.functional.cross_entropy(logits, batch.labels))
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
    from bench.train import train_run

    data = load_dataset(cfg.dataset, cfg.profile)
    seconds, result = _timed(lambda: train_run(cfg, dataset=data))
    return data.train.size * int(result.metrics.get("epochs", cfg.max_epochs)) / seconds


def measure_overhead(dataset: str, profile: str, epochs: int, repeats: int) -> dict[str, Any]:
    """Harness vs plain loop, concat on all three modalities, for each task, alternating to share the noise."""
    out: dict[str, Any] = {}
    for task in ("classification", "regression"):
        cfg = make_config(dataset, profile, method="concat", modalities=("text", "audio", "vision"),
                          max_epochs=epochs, early_stopping=False, task=task)
        harness_rates, plain_rates = [], []
        harness_throughput(cfg)  # warm-up: data cache, allocator
        for _ in range(repeats):
            plain_rates.append(plain_loop(cfg, epochs))
            harness_rates.append(harness_throughput(cfg))
        harness, plain = max(harness_rates), max(plain_rates)
        out[task] = {"harness_samples_per_s": round(harness, 1), "plain_samples_per_s": round(plain, 1),
                     "overhead_ratio": round(plain / harness, 3)}
    return out


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
    import bench.train as train_module
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
    for optimizer in ("adam", "sgd"):
        cases[f"optimizer: fused {optimizer} step vs op-by-op (concat, text+vision)"] = (
            make_config(dataset, profile, method="concat", modalities=("text", "vision"), optimizer=optimizer,
                        lr=5e-4 if optimizer == "adam" else 1e-2, max_epochs=epochs, early_stopping=False),
            lambda: _swapped(train_module, "fused_optimizer_options", lambda groups: {}))
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


def own_model_methods() -> list[str]:
    """Registered trainable methods that bring their own model (FeaDA, SATI, ...), in table order."""
    from bench.methods import REGISTRY, method_sort_key
    from bench.methods.base import Method

    return [name for name in sorted(REGISTRY, key=method_sort_key)
            if not name.startswith("test_") and REGISTRY[name].trains
            and REGISTRY[name].default_model != Method.default_model]


def own_model_config(dataset: str, profile: str, method: str, epochs: int, **fields: Any) -> RunConfig:
    """The preset config of `method` on all three modalities, regression (its paper's settings from
    `paper_fields`), for `epochs` epochs with early stopping off; `fields` on top (e.g. model=...)."""

    return thesis_config(dataset, method, ALL_THREE, profile=profile, task="regression", max_epochs=epochs,
                         early_stopping=False, window_end=-1, **fields)


def measure_own_models(dataset: str, profile: str, epochs: int, repeats: int = 2) -> dict[str, Any]:
    """Seconds per epoch of each own-model method against concat on late_fusion and concat on the
    method's own model, all on the same data and seed, regression, text+audio+vision."""
    from bench.methods import get_method
    from bench.train import train_run

    data = load_dataset(dataset, profile)
    configs = {"concat": own_model_config(dataset, profile, "concat", epochs)}
    for name in own_model_methods():
        model = get_method(name).default_model
        configs[name] = own_model_config(dataset, profile, name, epochs)
        configs[f"concat on {model}"] = own_model_config(dataset, profile, "concat", epochs, model=model)
    timings: dict[str, list[float]] = {label: [] for label in configs}
    for round_index in range(repeats + 1):  # round 0 warms up; runs interleave so noise hits all alike
        for label, cfg in configs.items():
            seconds, result = _timed(lambda cfg=cfg: train_run(cfg, dataset=data))
            if result.status != "ok":
                raise RuntimeError(f"{label}: {result.error}")
            if round_index:
                timings[label].append(seconds / max(1, int(result.metrics.get("epochs", epochs))))
    per_epoch = {label: min(values) for label, values in timings.items()}
    base = per_epoch["concat"]
    return {label: {"s_per_epoch": round(s, 3), "vs_concat": round(s / base, 2),
                    "batch_size": configs[label].batch_size, "step_every": configs[label].step_every}
            for label, s in per_epoch.items()}


def measure_seeds(dataset: str, profile: str, epochs: int, n_seeds: int) -> dict[str, Any]:
    """Wall time of an n-seed job against one seed (the seeds run one after another)."""
    from bench.train import train_run

    data = load_dataset(dataset, profile)
    cfgs = [make_config(dataset, profile, method="concat", modalities=("text", "vision"), seed=s,
                        max_epochs=epochs, early_stopping=False) for s in range(n_seeds)]
    one, _ = _timed(lambda: train_run(cfgs[0], dataset=data))
    many, _ = _timed(lambda: [train_run(c, dataset=data) for c in cfgs])
    return {"one_seed_s": round(one, 2), f"{n_seeds}_seeds_s": round(many, 2), "ratio": round(many / one, 2)}


class _StackedLSTM(nn.Module):
    """n one-layer LSTMs with stacked weights, stepped in a Python loop over batched matmuls.

    Only for the `seed-stacking` measurement (what training seeds together would cost here); the
    harness trains with nn.LSTM.
    """

    def __init__(self, lstms: list[nn.LSTM]) -> None:
        super().__init__()
        self.hidden = lstms[0].hidden_size
        self.w_ih = nn.Parameter(torch.stack([m.weight_ih_l0.detach().T for m in lstms]))  # (S, D, 4H)
        self.w_hh = nn.Parameter(torch.stack([m.weight_hh_l0.detach().T for m in lstms]))  # (S, H, 4H)
        self.bias = nn.Parameter(torch.stack([(m.bias_ih_l0 + m.bias_hh_l0).detach() for m in lstms]))  # (S, 4H)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        # x: (S, B, T, D); lengths: (S, B) -> the state at each sample's last true step, (S, B, H)
        seeds, batch, steps, width = x.shape
        gates_in = torch.baddbmm(self.bias.unsqueeze(1), x.reshape(seeds, batch * steps, width), self.w_ih)
        h = c = x.new_zeros(seeds, batch, self.hidden)
        states = []
        for gates_t in gates_in.view(seeds, batch, steps, -1).unbind(2):  # unbind: one backward copy, not T
            i, f, g, o = torch.baddbmm(gates_t, h, self.w_hh).chunk(4, dim=2)  # PyTorch's gate order
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            states.append(h)
        last = (lengths - 1).clamp(min=0)[:, :, None, None].expand(seeds, batch, 1, self.hidden)
        return torch.stack(states, dim=2).gather(2, last).squeeze(2)


def _stacked_concat_epoch(models: list[nn.Module], split: Any, batch_size: int) -> tuple[Callable[[], None], float]:
    """One epoch of n concat models trained together (each its own batch order); and how far the
    stacked encoders' first outputs are from the models' own (a check that the prototype computes the same)."""
    modalities = models[0].modalities
    lstms = {m: _StackedLSTM([model.encoders[m].lstm for model in models]) for m in modalities}
    projections = {m: (torch.stack([model.encoders[m].proj.weight.detach().T for model in models]),
                       torch.stack([model.encoders[m].proj.bias.detach() for model in models]))
                   for m in modalities}
    head = (torch.stack([model.head.weight.detach().T for model in models]),
            torch.stack([model.head.bias.detach() for model in models]))
    params = [p for lstm in lstms.values() for p in lstm.parameters()]
    for tensor in [t for pair in projections.values() for t in pair] + list(head):
        params.append(tensor.requires_grad_(True))
    optimizer = torch.optim.Adam(params, lr=5e-4, fused=True)

    def features(index: torch.Tensor) -> torch.Tensor:
        # index: (S, B) rows of each seed's batch -> concatenated features (S, B, sum of out widths)
        parts = []
        for m in modalities:
            lengths = split.lengths[m][index]  # (S, B)
            x = split.features[m][index.reshape(-1), :int(lengths.max())]  # (S*B, T, D)
            state = lstms[m](x.view(*index.shape, *x.shape[1:]), lengths)
            weight, bias = projections[m]
            parts.append(torch.baddbmm(bias.unsqueeze(1), state, weight))
        return torch.cat(parts, dim=2)

    first = torch.arange(batch_size).repeat(len(models), 1)  # (S, B): the same rows for every seed
    with torch.no_grad():
        stacked = features(first)
        own = torch.stack([torch.cat(list(model.encode(split.batch(first[0])).values()), dim=1) for model in models])
    difference = float((stacked - own).abs().max())

    def epoch() -> None:
        orders = [torch.randperm(split.size, generator=torch.Generator().manual_seed(s)) for s in range(len(models))]
        for start in range(0, split.size, batch_size):
            index = torch.stack([order[start:start + batch_size] for order in orders])  # (S, B)
            logits = torch.baddbmm(head[1].unsqueeze(1), features(index), head[0])  # (S, B, K)
            # the sum of the seeds' mean losses: each seed's gradient is its own run's gradient
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), split.labels[index].flatten(),
                                               reduction="none").view(index.shape).mean(dim=1).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    return epoch, difference


def measure_seed_stacking(dataset: str, profile: str, n_seeds: int) -> dict[str, Any]:
    """What training n seeds together (stacked parameters) would cost on this machine, concat text+vision.

    - floor: each seed has its own weights and batch order, so the text encoder's input projection
      (x W_ih^T and its weight gradient, the largest matmuls of a step) cannot be shared between seeds;
      those matmuls alone for n seeds, against a whole one-seed epoch of the harness.
    - prototype: an epoch of n seeds stacked, the LSTM stepped over batched matmuls, against the same.
    """
    from bench.train import build_trainer

    data = load_dataset(dataset, profile)
    cfgs = [make_config(dataset, profile, method="concat", modalities=("text", "vision"), seed=seed,
                        max_epochs=2, early_stopping=False) for seed in range(n_seeds)]
    trainers = [build_trainer(cfg, data) for cfg in cfgs]
    trainer, batch_size = trainers[0], cfgs[0].batch_size
    trainer.train_epoch(0)  # warm-up
    one_epoch_s, _ = _timed(lambda: trainer.train_epoch(1))

    text_weight = trainer.model.encoders["text"].lstm.weight_ih_l0.detach()  # (4H, D)
    weights = [text_weight.clone().requires_grad_(True) for _ in range(n_seeds)]
    # per seed, its own batch order: a list of (B, T, D) text inputs
    batches = [[batch.inputs["text"] for batch in trainer.train_split.iterate(batch_size, torch.Generator()
                                                                                 .manual_seed(seed))]
               for seed in range(n_seeds)]

    def projections() -> None:
        for weight, inputs in zip(weights, batches, strict=True):
            for x in inputs:
                gates = x @ weight.T  # (B, T, 4H)
                gates.backward(torch.ones_like(gates))

    projections()  # warm-up
    floor_s, _ = _timed(projections)
    stacked_epoch, difference = _stacked_concat_epoch([t.model for t in trainers], trainer.train_split, batch_size)
    stacked_epoch()  # warm-up
    stacked_s, _ = _timed(stacked_epoch)
    return {"one_seed_epoch_s": round(one_epoch_s, 3), f"{n_seeds}_seeds_text_projection_s": round(floor_s, 3),
            "floor_ratio": round(floor_s / one_epoch_s, 2), f"{n_seeds}_seeds_stacked_epoch_s": round(stacked_s, 3),
            "stacked_ratio": round(stacked_s / one_epoch_s, 2), "stacked_max_feature_difference": difference}


def measure_workers(dataset: str, profile: str, epochs: int, jobs: int) -> dict[str, Any]:
    """A small grid through the local executor with 1 and 2 workers (fresh runs directories)."""

    cfgs = [make_config(dataset, profile, method="concat", modalities=("text", "vision"), seed=s,
                        max_epochs=epochs, early_stopping=False) for s in range(jobs)]
    out: dict[str, Any] = {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as runs_dir:
            seconds, _ = _timed(lambda w=workers, d=runs_dir: run_jobs(job_graph(cfgs), Path(d), "local",
                                                                        {"workers": w}, progress=False))
        out[f"{workers}_workers_s"] = round(seconds, 2)
    out["speedup"] = round(out["1_workers_s"] / out["2_workers_s"], 2)
    return out


def _fresh_process_output(code: str) -> list[str] | dict[str, str]:
    """Run `code` in a fresh Python process: its stdout words, or {"error": last stderr line}."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return done.stdout.split()


def peak_memory_of_one_epoch(dataset: str, profile: str, method: str | None = None) -> dict[str, Any]:
    """Peak resident memory (MiB) of a fresh process that loads the data and trains one epoch: of concat
    (make_config's defaults) or, with `method`, of that method's preset config (own_model_config)."""
    config = (f"make_config({dataset!r}, {profile!r}, method='concat', modalities={ALL_THREE!r}, max_epochs=1)"
              if method is None else f"own_model_config({dataset!r}, {profile!r}, {method!r}, 1)")
    code = (
        "import resource, torch; torch.set_num_threads(1)\n"
        "from bench.plan.resolve import make_config\nfrom bench.data import load_dataset\n"
        "from bench.perf import own_model_config\nfrom bench.train import train_run\n"
        f"d = load_dataset({dataset!r}, {profile!r})\n"
        "b = sum(x.nbytes for s in (d.train, d.valid, d.test) for x in s.features.values())\n"
        f"r = train_run({config}, dataset=d)\n"
        "assert r.status == 'ok', r.error\n"
        "print(b, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    words = _fresh_process_output(code)
    if isinstance(words, dict):
        return words
    array_bytes, max_rss_kib = (int(v) for v in words[-2:])
    return {"array_MiB": round(array_bytes / 2**20, 1), "peak_rss_MiB": round(max_rss_kib / 1024, 1),
            "peak_over_arrays": round(max_rss_kib * 1024 / array_bytes, 2)}


def own_models_memory(dataset: str, profile: str) -> dict[str, Any]:
    """One epoch's peak memory of concat (late_fusion) and of each own-model method, each in a fresh process."""
    return {"concat": peak_memory_of_one_epoch(dataset, profile),
            **{name: peak_memory_of_one_epoch(dataset, profile, name) for name in own_model_methods()}}


def worker_memory_over_jobs(dataset: str, profile: str, jobs: int) -> dict[str, Any]:
    """Resident memory (MiB) of a fresh process after each of `jobs` concat runs through `execute_one`,
    the path a local worker takes: it must stay flat, not grow with every job of a long grid."""
    code = (
        "import tempfile, torch; torch.set_num_threads(1)\n"
        "from bench.plan.resolve import make_config\nfrom bench.execute import default_job_fn, execute_one\n"
        "def rss():\n"
        "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS'))\n"
        "runs = tempfile.mkdtemp()\n"
        f"for seed in range({jobs}):\n"
        f"    c = make_config({dataset!r}, {profile!r}, method='concat', modalities=('text','audio','vision'),"
        " seed=seed, max_epochs=2)\n"
        "    execute_one(c, (), runs, default_job_fn(), 'cpu')\n"
        "    print(rss())\n"
    )
    words = _fresh_process_output(code)
    if isinstance(words, dict):
        return words
    rss_mib = [int(v) / 1024 for v in words[-jobs:]]
    # the first few jobs settle the allocator (one step of about 50-70 MiB); growth is read over the second half
    half = jobs // 2
    return {"after_job_1_MiB": round(rss_mib[0], 1), f"after_job_{half}_MiB": round(rss_mib[half - 1], 1),
            f"after_job_{jobs}_MiB": round(rss_mib[-1], 1),
            "growth_per_job_second_half_MiB": round((rss_mib[-1] - rss_mib[half - 1]) / (jobs - half), 1)}


def perf(
    sections: str = typer.Option(",".join(DEFAULT_SECTIONS), help=f"Comma-separated subset of {', '.join(SECTIONS)}."),
    dataset: str = typer.Option("synth-mosi", help="Dataset to measure on."),
    profile: str = typer.Option("quick", help="Data profile."),
    epochs: int = typer.Option(3, help="Epochs per timed run (early stopping off)."),
    repeats: int = typer.Option(3, help="Repeats of the overhead comparison (best of)."),
    memory_profiles: str = typer.Option("synth-mosi:full", help="dataset:profile pairs for the memory section."),
    own_memory_profiles: str = typer.Option("synth-mosei:quick",
                                            help="dataset:profile pairs for the own-models-memory section."),
    out: Path | None = typer.Option(None, help="Also write the figures as JSON here."),
) -> None:
    """Print the harness's performance as ratios against reference runs in the same process."""
    chosen = [s.strip() for s in sections.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown perf section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    report: dict[str, Any] = {"machine": machine_info(), "dataset": dataset, "profile": profile, "epochs": epochs}
    typer.echo(json.dumps(report["machine"]))
    runners: dict[str, Callable[[], Any]] = {
        "overhead": lambda: measure_overhead(dataset, profile, epochs, repeats),
        "speedups": lambda: measure_speedups(dataset, profile, epochs, repeats),
        "methods": lambda: {"text+vision": measure_methods(dataset, profile, epochs, ("text", "vision"), repeats),
                            "audio+vision+text": measure_methods(dataset, profile, epochs,
                                                                 ("text", "audio", "vision"), repeats)},
        "own-models": lambda: measure_own_models(dataset, profile, epochs, repeats),
        "own-models-memory": lambda: {pair: own_models_memory(*pair.split(":"))
                                      for pair in own_memory_profiles.split(",") if pair.strip()},
        "seeds": lambda: measure_seeds(dataset, profile, epochs, 5),
        "seed-stacking": lambda: measure_seed_stacking(dataset, profile, 5),
        "workers": lambda: measure_workers(dataset, profile, epochs, 6),
        "worker-memory": lambda: worker_memory_over_jobs(dataset, profile, 12),
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
