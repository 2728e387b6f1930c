"""
C{benchmarks/compare.py}, the comparison script, for the tests: where it
is, and the script imported as a module.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMPARE", "loadCompare"]

COMPARE = Path(__file__).resolve().parents[2] / "benchmarks" / "compare.py"


def loadCompare() -> Any:
    """
    C{benchmarks/compare.py}, imported as a module (it is a script, not
    part of the package).
    """
    name = "sockplay_benchmarks_compare"
    spec = importlib.util.spec_from_file_location(name, COMPARE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up while they are made.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module
