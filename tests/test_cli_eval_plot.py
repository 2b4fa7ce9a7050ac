"""``esmaml evaluate`` and ``esmaml plot`` on tiny runs trained through ``esmaml train``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esmaml.cli import main
from esmaml.plotting import PlotError, default_output_dir, plot_runs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "sine.yaml"
TINY = [
    "meta.params.num_perturbations=4",
    "adaptation.params.num_queries=2",
    "adaptation.params.method=antithetic",  # pinned: the query counts below assume it
    "task.params.hidden=[8]",
    "iterations=4",
    "checkpoint.every=2",
    "evaluation.every=2",
    "evaluation.num_tasks=4",
    "task.test_pool=6",
    "progress=false",
    "wandb.mode=disabled",
]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two runs (seeds 0 and 1) side by side in one directory."""
    root = tmp_path_factory.mktemp("runs")
    dirs = []
    for seed in (0, 1):
        run_dir = root / f"seed{seed}"
        assert main(["train", str(CONFIG), *TINY, f"seed={seed}", "--run-dir", str(run_dir)]) == 0
        dirs.append(run_dir)
    return dirs


def test_evaluate_writes_a_steps_curve(runs: list[Path]) -> None:
    run_dir = runs[0]
    before = {name: (run_dir / name).read_bytes() for name in ("metrics.jsonl", "checkpoint.pt")}
    assert main(["evaluate", str(run_dir), "--steps", "0", "1", "3", "--num-tasks", "5"]) == 0
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["iteration"] == 4 and result["split"] == "test" and result["num_tasks"] == 5
    assert result["checkpoint"].endswith("checkpoint.pt")
    assert result["command"] == f"esmaml evaluate {run_dir} --steps 0 1 3 --num-tasks 5"
    curve = result["curve"]
    assert [point["steps"] for point in curve] == [0, 1, 3]
    assert curve[0]["post_adaptation"] == curve[0]["pre_adaptation"]  # 0 steps: no change
    assert len({point["pre_adaptation"] for point in curve}) == 1  # the same tasks throughout
    assert [point["queries"] for point in curve] == [0, 5 * 4, 3 * 5 * 4]  # 2 antithetic queries
    assert all(len(point["per_task"]["post"]) == 5 for point in curve)
    # Evaluating reads the run; it writes nothing but eval.json.
    assert before == {name: (run_dir / name).read_bytes() for name in before}


def test_evaluate_defaults_match_the_training_evaluation(runs: list[Path]) -> None:
    run_dir = runs[1]
    out = run_dir / "default-eval.json"
    assert main(["evaluate", str(run_dir), "--out", str(out)]) == 0
    (point,) = json.loads(out.read_text())["curve"]
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert point["steps"] == 1
    # Same checkpoint, tasks and seed as the final in-training evaluation: the same numbers.
    assert point["post_adaptation"] == last["eval_post_adaptation"]
    assert point["pre_adaptation"] == last["eval_pre_adaptation"]


def test_plot_several_runs_into_out(runs: list[Path], tmp_path: Path) -> None:
    assert main(["evaluate", str(runs[0]), "--steps", "0", "1", "2"]) == 0
    out = tmp_path / "results"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    figures = ["meta_objective", "eval_vs_iteration", "eval_vs_time", "adaptation_steps"]
    assert names == {f"{f}.{ext}" for f in figures for ext in ("png", "txt")}
    for figure in figures:
        assert (out / f"{figure}.png").read_bytes()[:8] == PNG
        caption = (out / f"{figure}.txt").read_text()
        assert f"command: esmaml plot {runs[0]} {runs[1]} --out {out}" in caption
    caption = (out / "eval_vs_iteration.txt").read_text()
    assert all(f"{run.name}: {run.resolve()}" in caption for run in runs)  # every run named
    # Only the run with an eval.json is on the adaptation-steps figure.
    steps_caption = (out / "adaptation_steps.txt").read_text()
    assert f"seed0: {runs[0].resolve()}" in steps_caption
    assert f"seed1: {runs[1].resolve()}" not in steps_caption
    assert "held-out post-adaptation loss" in steps_caption
    # A train-split evaluation is not labelled held-out.
    assert main(["evaluate", str(runs[0]), "--steps", "0", "1", "--split", "train"]) == 0
    assert main(["plot", str(runs[0]), "--out", str(tmp_path / "train")]) == 0
    train_caption = (tmp_path / "train" / "adaptation_steps.txt").read_text()
    assert "train-task post-adaptation loss" in train_caption and "held-out" not in train_caption


def test_plot_writes_beside_the_runs_by_default(runs: list[Path]) -> None:
    assert default_output_dir(runs) == runs[0].parent.resolve()
    assert default_output_dir(runs[:1]) == runs[0]
    written = plot_runs(runs[1:], command="esmaml plot seed1")
    assert {path.parent for path in written} == {runs[1]}
    assert "command: esmaml plot seed1" in (runs[1] / "eval_vs_time.txt").read_text()


def test_plot_a_run_without_evaluations(tmp_path: Path) -> None:
    """A run killed before its first evaluation still gets its meta-objective curve."""
    run_dir = tmp_path / "early"
    run_dir.mkdir()
    rows = [{"iteration": i, "time_s": 0.1 * i, "meta_objective": 4.0 - i} for i in range(3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"it')
    written = plot_runs([run_dir], command="test")
    assert [path.name for path in written] == ["meta_objective.png"]
    assert "no evaluation rows yet" in (run_dir / "meta_objective.txt").read_text()


def test_plot_needs_rows(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(PlotError, match="holds no rows"):
        plot_runs([tmp_path])


def test_evaluate_defaults_to_the_learners_own_steps(tmp_path: Path) -> None:
    """learn2learn MAML adapts with its own inner loop (meta.params.adaptation_steps): the
    default evaluation repeats the training-time one, not the config's adaptation section."""
    run_dir = tmp_path / "maml"
    # sine_maml.yaml without its adaptation section, which only restates meta.params.
    lines = (CONFIG.parent / "sine_maml.yaml").read_text().splitlines()
    start = lines.index("adaptation:")
    config = tmp_path / "maml.yaml"
    config.write_text("\n".join(lines[:start] + lines[start + 3 :]) + "\n")
    assert "adaptation:" not in config.read_text()
    overrides = [
        "iterations=2",
        "task.params.hidden=[8]",
        "meta.params.adaptation_steps=3",
        "evaluation.every=2",
        "evaluation.num_tasks=4",
        "progress=false",
        "wandb.mode=disabled",
    ]
    assert main(["train", str(config), *overrides, "--run-dir", str(run_dir)]) == 0
    assert main(["evaluate", str(run_dir)]) == 0
    (point,) = json.loads((run_dir / "eval.json").read_text())["curve"]
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    assert point["steps"] == 3
    assert point["post_adaptation"] == last["eval_post_adaptation"]


def test_train_takes_overrides_after_options(tmp_path: Path) -> None:
    """`esmaml train CONFIG --run-dir D key=value`: overrides may follow the options."""
    run_dir = tmp_path / "late"
    assert main(["train", str(CONFIG), *TINY[:4], "--run-dir", str(run_dir), *TINY[4:]]) == 0
    config = (run_dir / "config.yaml").read_text()
    assert "iterations: 4" in config and "every: 2" in config
    with pytest.raises(SystemExit) as exit_info:
        main(["train", str(CONFIG), "--run-dir", str(tmp_path / "x"), "--bogus"])
    assert exit_info.value.code == 2


def test_plot_band_is_the_mean_and_t_interval_over_seeds(runs: list[Path], tmp_path: Path) -> None:
    """`esmaml plot --band`: the two seeds form one group, a third run with another config its
    own; the band at each update is seed_interval of the seeds' held-out losses."""
    from esmaml.plotting import band_groups, band_series, load_run
    from esmaml.sweep import seed_interval

    other = tmp_path / "other"
    overrides = [*TINY, "optimizer.lr=0.5", "seed=3", "--run-dir", str(other)]
    assert main(["train", str(CONFIG), *overrides]) == 0
    out = tmp_path / "band"
    assert main(["plot", "--band", *map(str, runs), str(other), "--out", str(out)]) == 0
    assert (out / "eval_band.png").read_bytes().startswith(PNG)
    caption = (out / "eval_band.txt").read_text()
    assert "2 runs" in caption and "1 runs" in caption and "95% Student-t" in caption
    groups = band_groups([load_run(p) for p in [*runs, other]])
    assert sorted(len(members) for members in groups.values()) == [1, 2]
    pair = next(members for members in groups.values() if len(members) == 2)
    xs, intervals = band_series(pair, "eval_post_adaptation")
    assert xs == [0.0, 2.0, 4.0]  # the initial evaluation, then every 2 updates
    for x, interval in zip(xs, intervals):
        values = [
            row["eval_post_adaptation"]
            for run in pair
            for row in run.rows
            if row.get("updates") == x and "eval_post_adaptation" in row
        ]
        want = seed_interval(values)
        assert (interval.mean, interval.low, interval.high) == (want.mean, want.low, want.high)
        assert interval.low < interval.mean < interval.high


def test_plot_band_needs_configs(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"iteration": 0, "meta_objective": 1.0}\n')
    with pytest.raises(PlotError, match=r"config\.yaml"):
        from esmaml.plotting import plot_band

        plot_band([tmp_path / "run"], tmp_path, command="test")
