"""The built-in dataset specs, one module each; bench.data.registry registers them in this order."""

from bench.data.builtin.mfeat import MFEAT
from bench.data.builtin.mosei import MOSEI
from bench.data.builtin.mosi import MOSI
from bench.data.builtin.sims import SIMS
from bench.data.builtin.simsv2 import SIMSV2

BUILTIN_SPECS = (MOSI, MOSEI, SIMS, SIMSV2, MFEAT)

__all__ = ["BUILTIN_SPECS", "MFEAT", "MOSEI", "MOSI", "SIMS", "SIMSV2"]
