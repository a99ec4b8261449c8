"""The built-in dataset specs, one module each; bench.data.registry registers them in this order."""

from bench.data.builtin.mosei import MOSEI
from bench.data.builtin.mosi import MOSI
from bench.data.builtin.sims import SIMS

BUILTIN_SPECS = (MOSI, MOSEI, SIMS)

__all__ = ["BUILTIN_SPECS", "MOSEI", "MOSI", "SIMS"]
