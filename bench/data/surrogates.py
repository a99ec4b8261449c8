"""The one registry of built-in surrogate dataset names (no numpy: bench.config reads it too).

Every place that lists, checks or describes the surrogate names reads `SURROGATES`:
load_dataset / data_fingerprint (bench.data.loader), the dataset family (bench.config), `bench data`.

- `synth-mosi`, `synth-mosei`: the base surrogate (bench.data.synth), MMSA unaligned_50 shapes.
- `synth-mosi-aligned`, `synth-mosei-aligned`: word-aligned twins in the aligned_50 shapes (bench.data.twins).
- `synth-mosei-shift`, `synth-mosi-shift`: domain-shifted twins with the *other* dataset's feature
  sizes, for out-of-distribution tests (bench.data.twins).
"""

from __future__ import annotations

from dataclasses import dataclass

BASE, ALIGNED, SHIFT = "base", "aligned", "shift"
VARIANTS = (BASE, ALIGNED, SHIFT)


@dataclass(frozen=True)
class Surrogate:
    """One built-in surrogate name and what it imitates."""

    name: str  # the dataset name, e.g. "synth-mosei-shift"
    like: str  # label family, split sizes, class priors: "mosi" or "mosei"
    variant: str  # "base", "aligned" or "shift"
    features_like: str  # whose padded shapes / feature sizes the arrays have

    @property
    def description(self) -> str:
        if self.variant == ALIGNED:
            return f"{self.like.upper()}-like, word-aligned (aligned_50 shapes)"
        if self.variant == SHIFT:
            return (f"{self.like.upper()}-like labels, {self.features_like.upper()} feature sizes, "
                    "shifted statistics (OOD twin)")
        return f"{self.like.upper()}-like (unaligned_50 shapes)"


SURROGATES: dict[str, Surrogate] = {s.name: s for s in (
    Surrogate("synth-mosi", "mosi", BASE, "mosi"),
    Surrogate("synth-mosei", "mosei", BASE, "mosei"),
    Surrogate("synth-mosi-aligned", "mosi", ALIGNED, "mosi"),
    Surrogate("synth-mosei-aligned", "mosei", ALIGNED, "mosei"),
    Surrogate("synth-mosei-shift", "mosei", SHIFT, "mosi"),
    Surrogate("synth-mosi-shift", "mosi", SHIFT, "mosei"),
)}
SURROGATE_NAMES: tuple[str, ...] = tuple(SURROGATES)
REAL_NAMES: tuple[str, ...] = ("mosi", "mosei")


def surrogate(name: str) -> Surrogate | None:
    """The registry entry of a surrogate name, None for anything else."""
    return SURROGATES.get(str(name).strip())


def surrogate_name(like: str, variant: str = BASE) -> str:
    """The dataset name of the surrogate imitating `like` in `variant`."""
    for entry in SURROGATES.values():
        if entry.like == like and entry.variant == variant:
            return entry.name
    raise KeyError((like, variant))


def is_surrogate(name: str) -> bool:
    return surrogate(name) is not None


def names_text() -> str:
    """'synth-mosi, synth-mosei, ..., mosi, mosei' for error messages."""
    return ", ".join((*SURROGATE_NAMES, *REAL_NAMES))
