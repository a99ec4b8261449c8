"""The executors: one module per backend, each registering itself (bench.execute.backend.register_backend).

Every module of this package is imported (names starting with "_" excepted), so a new executor is one file.
"""

from __future__ import annotations

import importlib
import pkgutil

for _info in pkgutil.iter_modules(__path__):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
