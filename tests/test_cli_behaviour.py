"""``esmaml`` behaving like a good command-line tool, with real processes where it matters:
SIGINT/SIGTERM stop at an iteration boundary, print how to resume, leave a checkpoint and a
wandb run marked preempting, and ``--resume`` continues; progress off a terminal is a bounded
number of plain lines; no third-party banner on stderr; summaries speak in returns for RL; the
gymnasium registration works with gymnasium's own vector wrappers and gives sub-envs their own
tasks; the README's custom env passes gymnasium's checker; a NaN in evaluation is counted,
never printed as a bare ``nan``.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from esmaml.logging.console import Progress, print_summary
from esmaml.meta.base import Evaluation
from esmaml.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "sine.yaml"
SMALL = [
    "meta.params.num_perturbations=4",
    "adaptation.params.num_queries=2",
    "task.params.hidden=[8]",
    "checkpoint.every=100000",
    "evaluation.every=100000",
    "evaluation.num_tasks=2",
    "task.test_pool=2",
    "wandb.mode=offline",
]
TIMEOUT = 300


def esmaml(*args: str | Path, cwd: Path) -> subprocess.Popen[str]:
    """The real ``esmaml`` command (stdout and stderr pipes: not a terminal)."""
    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "WANDB_ERROR_REPORTING": "false",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "esmaml.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(process: subprocess.Popen[str], path: Path, rows: int) -> None:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= rows:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.01)
    raise TimeoutError(f"{path} did not reach {rows} rows")


def wandb_records(run_dir: Path) -> list[dict]:
    """The records of the run's offline .wandb log, read back by wandb's own reader."""
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json", str(log)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_prints_resume_line_and_resume_continues(sig: signal.Signals, tmp_path: Path):
    run_dir = tmp_path / "run"
    process = esmaml(
        "train", CONFIG, *SMALL, "iterations=100000", "--run-dir", run_dir, cwd=tmp_path
    )
    wait_for_rows(process, run_dir / "metrics.jsonl", 2)  # the initial evaluation + 1 iteration
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 128 + sig
    name = signal.Signals(sig).name
    stopped = re.search(rf"stopped by {name} after (\d+)/100000 iterations", stderr)
    assert stopped, stderr
    assert f"resume with: esmaml train --resume {run_dir}" in stderr.splitlines()
    completed = int(stopped.group(1))
    state, _ = load_checkpoint(run_dir)
    assert int(state["iteration"]) == completed >= 1
    # wandb: the run is marked preempting and closed with 128 + signal (W&B's contract for a
    # run to resume, not a crash); `wandb leet` shows those records.
    records = wandb_records(run_dir)
    assert any(r["type"] == "preempting" for r in records)
    (exit_record,) = [r for r in records if r["type"] == "exit"]
    assert exit_record["exit"]["exit_code"] == 128 + sig

    # --resume continues where it stopped; its progress (piped: plain lines) counts from there.
    total = completed + 3
    resumed = esmaml("train", "--resume", run_dir, f"iterations={total}", cwd=tmp_path)
    _, stderr = resumed.communicate(timeout=TIMEOUT)
    assert resumed.returncode == 0, stderr
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == list(range(-1, total))
    progress = re.findall(rf"sine: (\d+)/{total} it", stderr)
    assert progress and int(progress[0]) > completed and int(progress[-1]) == total
    assert "\r" not in stderr  # no redrawn bar in a log


@pytest.mark.slow
def test_non_tty_progress_prints_a_bounded_number_of_lines(tmp_path: Path) -> None:
    iterations = 60
    started = time.monotonic()
    process = esmaml(
        "train",
        CONFIG,
        *SMALL,
        f"iterations={iterations}",
        "wandb.mode=disabled",
        "--run-dir",
        tmp_path / "run",
        cwd=tmp_path,
    )
    _, stderr = process.communicate(timeout=TIMEOUT)
    elapsed = time.monotonic() - started
    assert process.returncode == 0, stderr
    lines = re.findall(rf"^sine: \d+/{iterations} it .*$", stderr, flags=re.M)
    # One per 10% of the run, plus one per 30 s that passed (however slow this machine is).
    assert 10 <= len(lines) <= 10 + math.ceil(elapsed / 30)
    assert lines[-1].startswith(f"sine: {iterations}/{iterations} it (100%)")


class Clock:
    """A clock the test moves by hand (no sleeping, no timing thresholds)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_every_tenth_and_eta_of_a_resume() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(1000, 500, True, "run", stream=stream, clock=clock)
    for _ in range(500):
        clock.now += 0.125  # exact in binary
        progress.update({"meta_objective": 1.0})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5  # 600, 700, 800, 900, 1000 of 1000
    # 100 iterations in 12.5 s since the resume, 400 left: 50 s (not 12.5 s per 600 done).
    assert lines[0].startswith("run: 600/1000 it (60%) meta_obj=1 elapsed 0:00:12 eta 0:00:50")
    assert lines[-1].endswith("eta 0:00:00")


def test_progress_line_after_30_seconds_without_one() -> None:
    stream, clock = io.StringIO(), Clock()
    progress = Progress(1000, 0, True, "run", stream=stream, clock=clock)
    for _ in range(50):
        clock.now += 1.0
        progress.update({"meta_objective": 2.0})
    assert [line.split(" it")[0] for line in stream.getvalue().splitlines()] == ["run: 30/1000"]


def test_progress_disabled_prints_nothing() -> None:
    stream = io.StringIO()
    progress = Progress(10, 0, False, "run", stream=stream)
    for _ in range(10):
        progress.update({"meta_objective": 1.0})
    progress.close()
    assert stream.getvalue() == ""


def test_learn2learn_import_prints_no_banner() -> None:
    code = "from esmaml.tasks.fewshot import import_learn2learn; import_learn2learn()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_rl_summary_prints_returns_supervised_prints_losses(
    capsys: pytest.CaptureFixture[str],
) -> None:
    rl = Evaluation(torch.tensor([-3.0, -1.0]), torch.tensor([-2.0, 0.0]), {}, {}, 4, True)
    print_summary(rl.summary(), "nav")
    out = capsys.readouterr().out
    assert "returns: higher is better" in out and "eval_return_post_adaptation" in out
    assert not re.search(r"eval_(pre|post)_adaptation ", out)
    supervised = Evaluation(torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.0]), {}, {}, 4)
    print_summary(supervised.summary(), "sine")
    out = capsys.readouterr().out
    assert "losses: lower is better" in out and "eval_post_adaptation" in out
    assert "return" not in out


def test_evaluation_with_nonfinite_tasks_reports_them() -> None:
    evaluation = Evaluation(
        torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, math.nan, 1.5]), {}, {}, 0
    )
    summary = evaluation.summary()
    assert summary["eval_nonfinite_tasks"] == 1
    assert summary["eval_post_adaptation"] == pytest.approx(1.0)  # over the finite tasks
    assert summary["eval_pre_adaptation"] == pytest.approx(2.0)  # the same tasks
    assert all(not (isinstance(v, float) and math.isnan(v)) for v in summary.values())
    assert (
        "eval_nonfinite_tasks" not in Evaluation(torch.ones(2), torch.ones(2), {}, {}, 0).summary()
    )


def test_make_vec_default_works_with_gymnasium_vector_wrappers() -> None:
    import gymnasium
    from gymnasium.wrappers.vector import NormalizeObservation

    import envs  # noqa: F401  (registers the esmaml/ ids)

    vec = NormalizeObservation(gymnasium.make_vec("esmaml/Navigation2D-v0", 4))
    vec.reset(seed=0)
    for _ in range(150):  # through truncations (horizon 100)
        obs, *_ = vec.step(np.zeros((4, 2), np.float32))
    assert obs.shape == (4, 2) and np.isfinite(obs).all()


@pytest.mark.parametrize("mode", ["sync", "async", "vector_entry_point"])
def test_make_vec_gives_each_sub_env_its_own_task_from_one_seed(mode: str) -> None:
    import gymnasium

    import envs  # noqa: F401

    def tasks(seed: int) -> list:
        vec = gymnasium.make_vec("esmaml/Navigation2D-v0", 3, vectorization_mode=mode)
        try:
            vec.reset(seed=seed)
            if mode == "vector_entry_point":
                return vec.get_tasks()
            return list(vec.get_attr("task"))
        finally:
            vec.close()

    first = tasks(7)
    assert len({json.dumps(task) for task in first}) == 3  # each sub-env its own task
    assert tasks(7) == first  # reproducible from the one seed
    assert tasks(8) != first
    single = gymnasium.make("esmaml/Navigation2D-v0")
    single.reset(seed=8)  # sync's sub-env 1 is reset with seed 7 + 1
    assert single.unwrapped.get_task() == first[1]


def test_set_task_survives_seeded_resets() -> None:
    import gymnasium

    import envs  # noqa: F401

    env = gymnasium.make("esmaml/Navigation2D-v0")
    env.unwrapped.set_task({"goal": [0.25, -0.5]})
    env.reset(seed=3)
    assert env.unwrapped.get_task() == {"goal": [0.25, -0.5]}


def test_readme_custom_env_passes_gymnasium_check_env() -> None:
    from gymnasium.utils.env_checker import check_env

    from envs import make_single_env

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    (template,) = [block for block in blocks if "class GoalLine" in block]
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(template, "README.md", "exec"), namespace)
    env = make_single_env(namespace["GoalLine"](), time_limit=True)  # type: ignore[operator]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
