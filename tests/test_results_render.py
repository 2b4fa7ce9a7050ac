"""results/*.md are exactly what the scripts render from the committed results/data/ (no
training): a table cannot drift from the data it claims to show."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    """Import scripts/NAME.py as running it would: with scripts/ on sys.path (it imports
    scripts/results_runs.py)."""
    if str(ROOT / "scripts") not in sys.path:
        sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("script", "report", "figures"),
    [
        ("sine_results", "sine.md", ["sine.png"]),
        ("rl_results", "rl.md", ["rl_main.png", "rl_normaliser.png", "rl_policy.png"]),
        ("paper_results", "paper.md", ["paper_es_vs_pg.png", "paper_low_k.png"]),
    ],
)
def test_committed_report_matches_its_data(
    script: str, report: str, figures: list[str], tmp_path: Path
) -> None:
    module = load_script(script)
    records = module.load_data(module.DATA)
    flat = [r for v in records.values() for r in (v if isinstance(v, list) else [v])]
    assert all(not r["provenance"]["dirty"] for r in flat), "data from a dirty tree"
    module.render(records, tmp_path)
    rendered = (tmp_path / report).read_text()
    assert rendered == (ROOT / "results" / report).read_text(), (
        f"results/{report} differs from what {script}.py renders from results/data/: "
        f"re-render with `.venv/bin/python scripts/{script}.py`"
    )
    for figure in figures:
        assert (tmp_path / figure).stat().st_size > 0
        assert f"]({figure})" in rendered
