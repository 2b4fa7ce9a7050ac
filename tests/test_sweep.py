"""esmaml sweep: the grid, the aggregation against hand-computed numbers, and a real sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from esmaml.config import ConfigError
from esmaml.sweep import Trial, aggregate, expand_grid, format_table, seed_interval, sweep

ROOT = Path(__file__).resolve().parents[1]


def test_seed_interval_by_hand() -> None:
    # values 1..5: mean 3, sd sqrt(2.5), t_{0.975, 4} = 2.7764451051977987
    interval = seed_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)
    assert interval.mean == 3.0 and interval.n == 5
    assert interval.low == pytest.approx(3 - half, rel=1e-12)
    assert interval.high == pytest.approx(3 + half, rel=1e-12)
    one = seed_interval([4.0])
    assert one.mean == 4.0 and math.isnan(one.low) and str(one) == "4 (n=1)"
    with pytest.raises(ValueError, match="non-finite"):
        seed_interval([1.0, float("nan")])


def test_expand_grid() -> None:
    assert expand_grid([]) == [()]
    assert expand_grid(["a=1,2", "b=x"]) == [("a=1", "b=x"), ("a=2", "b=x")]
    assert expand_grid(["task.params.hidden=[32,32],[]"]) == [
        ("task.params.hidden=[32,32]",),
        ("task.params.hidden=[]",),
    ]
    with pytest.raises(ConfigError, match="key=v1,v2"):
        expand_grid(["nokey"])


def fake_run(run_dir: Path, values: list[float]) -> None:
    """A run dir whose held-out post-adaptation returns are ``values`` (initial first)."""
    run_dir.mkdir(parents=True)
    rows = [
        {
            "iteration": i - 1,
            "updates": 10 * i,
            "eval_post_adaptation": -v,
            "eval_return_post_adaptation": v,
        }
        for i, v in enumerate(values)
    ]
    rows.insert(2, {"iteration": 3, "updates": 4, "meta_objective": 0.0})  # not an evaluation
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_aggregate_against_hand_computed_numbers(tmp_path: Path) -> None:
    curves = {0: [-10.0, -8.0, -4.0], 1: [-12.0, -9.0, -5.0], 2: [-11.0, -7.0, -9.0]}
    trials = []
    for seed, values in curves.items():
        fake_run(tmp_path / f"s{seed}", values)
        trials.append(Trial(("a=1",), seed, tmp_path / f"s{seed}"))
    (row,) = aggregate(trials)
    t2 = 4.302652729911275  # t_{0.975, 2}
    # initial: -10, -12, -11 -> mean -11, sd 1; last: -4, -5, -9 -> mean -6, sd sqrt(7)
    # change: 6, 7, 2 -> mean 5, sd sqrt(7)
    assert row.metric == "eval_return_post_adaptation" and row.seeds == [0, 1, 2]
    assert row.initial.mean == -11 and row.initial.high == pytest.approx(-11 + t2 / math.sqrt(3))
    assert row.last.mean == -6 and row.last.low == pytest.approx(-6 - t2 * math.sqrt(7 / 3))
    assert row.change.mean == 5 and row.change.high == pytest.approx(5 + t2 * math.sqrt(7 / 3))
    table = format_table([row])
    assert "| a=1 | eval_return_post_adaptation | 3 | -11 [" in table and "95%" in table


@pytest.mark.slow
def test_sweep_runs_seeds_on_ray_and_resumes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(ROOT)
    out = tmp_path / "sweep"
    config = "configs/nav2d_smoke.yaml"
    rows = sweep(config, [0, 1], ["iterations=2"], out=out, jobs=2)
    assert [r.point for r in rows] == ["iterations=2"] and rows[0].initial.n == 2
    record = json.loads((out / "sweep.json").read_text())
    assert len(record["trials"]) == 2 and (out / "sweep.md").is_file()
    summary = out / "iterations=2" / "seed-0" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    again = sweep(config, [0, 1], ["iterations=2"], out=out, jobs=2)  # complete: skipped
    assert summary.stat().st_mtime_ns == stamp and again == rows
