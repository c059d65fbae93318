"""Import a script of bench/ or scripts/ as a module, for tests of its pure functions."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parent.parent


def load_bench(name: str, folder: str = "bench") -> ModuleType:
    """``<folder>/<name>.py`` (bench/ unless said) as module ``name``.  The scripts put bench/ and
    scripts/ on sys.path for their own imports: that is undone, so the test session's path stays
    its own."""
    saved = list(sys.path)
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path[:] = saved
