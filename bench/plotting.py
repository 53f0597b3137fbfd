"""Matplotlib for the benchmarks' plots, installed into this interpreter when missing.

``pyplot()`` returns ``matplotlib.pyplot`` (Agg backend) or None when it can neither be
imported nor installed; the benchmarks then write their tables without a plot.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from types import ModuleType

SPEC = "matplotlib>=3.8,<4"  # the `bench` extra of pyproject.toml


def pyplot() -> ModuleType | None:
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        print(f"[bench] installing {SPEC} for the plots", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", SPEC], check=False, timeout=600
        )
        if done.returncode != 0:
            print("[bench] matplotlib could not be installed: no plot", flush=True)
            return None
        importlib.invalidate_caches()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
