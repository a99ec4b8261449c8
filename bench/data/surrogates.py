"""The built-in surrogates as dataset specs derived from MOSI / MOSEI, and the generator's table of them.

- `synth-mosi`, `synth-mosei`: the base surrogate (bench.data.synth), MMSA unaligned_50 shapes; specs
  derived from `mosi` / `mosei` (same labels, dev split, profile sizes and metrics; no files).
- `synth-mosi-aligned`, `synth-mosei-aligned`: word-aligned twins in the aligned_50 shapes (bench.data.twins),
  derived from the base surrogate.
- `synth-sims`, `synth-simsv2`: CH-SIMS-like surrogates (bench.data.synth) in the MMSA shapes of CH-SIMS /
  CH-SIMS v2, with per-modality labels; specs derived from `sims` / `simsv2` (SIMS metrics, no files).
- `synth-mosei-shift`, `synth-mosi-shift`: domain-shifted twins with the *other* dataset's feature
  sizes, for out-of-distribution tests (bench.data.twins); their labels are their `like`'s.

bench.data.registry registers `SURROGATE_SPECS`; everything else asks the registry (`spec.synthetic`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.data.builtin import MOSEI, MOSI, SIMS, SIMSV2
from bench.data.spec import DatasetSpec

BASE, ALIGNED, SHIFT = "base", "aligned", "shift"
VARIANTS = (BASE, ALIGNED, SHIFT)


@dataclass(frozen=True)
class Surrogate:
    """How the generator makes one surrogate name (bench.data.twins.surrogate_params reads it)."""

    name: str  # the dataset name, e.g. "synth-mosei-shift"
    like: str  # label rules, split sizes, class priors: "mosi" or "mosei"
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
    Surrogate("synth-sims", "sims", BASE, "sims"),
    Surrogate("synth-simsv2", "simsv2", BASE, "simsv2"),
)}
SURROGATE_NAMES: tuple[str, ...] = tuple(SURROGATES)
_ROOTS = {"mosi": MOSI, "mosei": MOSEI, "sims": SIMS, "simsv2": SIMSV2}


def _spec(entry: Surrogate, parent: DatasetSpec) -> DatasetSpec:
    """The spec of one surrogate: its parent's labels, sizes and metrics; generated, so no files."""
    base = entry.name.removeprefix("synth-")
    display = (f"synthetic {parent.display} surrogate" if entry.variant == BASE
               else f"synthetic {_ROOTS[entry.like].display} surrogate, {entry.description}")
    return parent.derive(
        name=entry.name, display=display, synthetic=True, files={}, published_sha256={},
        # the report's labels as they always were: 'synth-MOSI (surrogate)', column 'synth-MOSI'
        table_name=f"synth-{_ROOTS[base].short if base in _ROOTS else base.upper()} (surrogate)",
        short=f"synth-{_ROOTS[base].short}" if base in _ROOTS else entry.name,
    )


def _surrogate_specs() -> tuple[DatasetSpec, ...]:
    made: dict[str, DatasetSpec] = {}
    for entry in SURROGATES.values():
        parent = _ROOTS[entry.like] if entry.variant == BASE else made[f"synth-{entry.like}"]
        made[entry.name] = _spec(entry, parent)
    return tuple(made.values())


SURROGATE_SPECS: tuple[DatasetSpec, ...] = _surrogate_specs()


def surrogate_name(like: str, variant: str = BASE) -> str:
    """The dataset name of the surrogate imitating `like` in `variant`."""
    for entry in SURROGATES.values():
        if entry.like == like and entry.variant == variant:
            return entry.name
    raise KeyError((like, variant))
