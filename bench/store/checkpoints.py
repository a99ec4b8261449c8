"""Checkpoints: the best state_dict of an ok run (`checkpoints/<run_id>.pt`), the store's only use of torch.

torch is imported inside the functions, so importing the store (or reading results) never loads it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from bench.store.layout import PathLike, checkpoint_path


def checkpoint_bytes(state_dict: Mapping[str, Any]) -> bytes:
    """A state_dict serialised with torch.save, tensors on the CPU."""
    import torch

    sink = io.BytesIO()
    torch.save({k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in state_dict.items()}, sink)
    return sink.getvalue()


def load_checkpoint(runs_dir: PathLike, run_id: str) -> dict[str, Any]:
    """The best state_dict of a stored run (CPU tensors); FileNotFoundError when there is none."""
    import torch

    path = checkpoint_path(runs_dir, run_id)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint for run {run_id} ({path})")
    return torch.load(path, map_location="cpu", weights_only=True)


def has_checkpoint(runs_dir: PathLike, run_id: str) -> bool:
    """Whether a run has a stored checkpoint."""
    return checkpoint_path(runs_dir, run_id).is_file()
