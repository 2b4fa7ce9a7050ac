"""Every benchmark script starts (``--help``) when run as ``python benchmarks/NAME.py``.

Run that way, benchmarks/ is sys.path[0]: a script named like a package (envs.py, mujoco.py)
shadowed it and broke every other benchmark that imports esmaml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def test_no_benchmark_shadows_an_imported_package() -> None:
    import importlib.util

    for script in SCRIPTS:
        assert importlib.util.find_spec(script.stem) is None, script.stem


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_benchmark_starts(script: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
