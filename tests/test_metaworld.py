"""Meta-World ML1 through the plug-in path (``envs.metaworld:ML1`` named in a config).

Meta-World 3.1.1 needs mujoco 3.3.0, so it runs in the overlay venv ``.venv-metaworld/`` that
``scripts/setup.sh`` builds; the tests that need it run that interpreter as a subprocess and
skip where it is absent. The rest (the adapter's error without Meta-World, the ``split``
keyword of the task interface) runs in this process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch

import esmaml
from esmaml.registry import KINDS

ROOT = Path(__file__).resolve().parents[1]
OVERLAY_PYTHON = ROOT / ".venv-metaworld" / "bin" / "python"
needs_overlay = pytest.mark.skipif(
    not OVERLAY_PYTHON.exists(),
    reason=".venv-metaworld/ is absent: Meta-World needs mujoco 3.3.0, which bash "
    "scripts/setup.sh installs in that overlay venv (scripts/setup_metaworld.sh)",
)


def overlay(*args: str, cwd: Path = ROOT, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the overlay's python on this checkout (its code first on the path)."""
    env = dict(os.environ, WANDB_MODE="disabled", WANDB_ERROR_REPORTING="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [str(OVERLAY_PYTHON), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@needs_overlay
@pytest.mark.slow
def test_ml1_reach_trains_from_the_config_and_evaluates(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cli = ("-m", "esmaml.cli")
    done = overlay(
        *cli, "train", "configs/metaworld_reach_es.yaml", "iterations=2", "progress=false",
        "--run-dir", str(run),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "env: envs.metaworld:ML1" in (run / "config.yaml").read_text()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [-1, 0, 1]
    assert rows[-1]["env_steps_total"] == 2 * rows[-1]["env_steps"] > 0
    held_out = rows[-1]["eval_return_post_adaptation"]  # ML1's test goals
    assert math.isfinite(held_out) and held_out > 0  # reach-v3's rewards are positive

    # A fresh process finds the env again from config.yaml's import path.
    done = overlay(*cli, "evaluate", str(run), "--num-tasks", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["iteration"] == 2 and result["split"] == "test"
    assert all(math.isfinite(p["return_post_adaptation"]) for p in result["curve"])


ENV_CHECK = """
import warnings, torch
import mujoco
from gymnasium.utils.env_checker import check_env
from envs import params_to_tasks, tasks_to_params
from envs.metaworld import ML1
from esmaml.rl.family import GymMetaEnv, RLFamily

assert mujoco.__version__ == "3.3.0", mujoco.__version__
env = ML1("reach-v3")
assert isinstance(env, GymMetaEnv)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    check_env(env, skip_render_check=True)
# Meta-World's own observation space: the hidden goal's zero-width dims and unbounded ones.
known = ("maximum and minimum values are equal", "infinity")
messages = [str(w.message) for w in caught]
assert all(any(k in m for k in known) for m in messages), messages

train = env.sample_tasks(50, seed=1)
assert sorted(t["index"] for t in train) == list(range(50)) and {t["test"] for t in train} == {0}
test = env.sample_tasks(3, seed=1, split="test")
assert {t["test"] for t in test} == {1}
# Through the tensors a checkpoint stores and back: the same tasks, the same episodes.
assert params_to_tasks(tasks_to_params(test)) == [{k: float(v) for k, v in t.items()} for t in test]
returns = []
for task in (test[0], params_to_tasks(tasks_to_params(test))[0], test[0]):
    env.task = task
    env.reset(seed=0)
    returns.append(sum(env.step(env.action_space.sample() * 0 + 0.5)[1] for _ in range(20)))
assert returns[0] == returns[1] == returns[2], returns
env.close()

family = RLFamily("envs.metaworld:ML1", env_params={"env_name": "reach-v3"}, horizon=5)
generator = torch.Generator().manual_seed(0)
assert family.sample_tasks(4, split="test", generator=generator)["test"].eq(1).all()
assert family.sample_tasks(4, split="train", generator=generator)["test"].eq(0).all()
print("ok")
"""


@needs_overlay
@pytest.mark.slow
def test_ml1_env_checks_tasks_and_splits() -> None:
    done = overlay("-c", ENV_CHECK)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stdout + done.stderr


def test_adapter_imports_without_metaworld_and_says_where_it_is() -> None:
    """envs.metaworld imports anywhere (configs name it); building an env without a working
    Meta-World names the overlay venv."""
    code = (
        "import envs.metaworld as m\n"
        "try:\n    m.ML1()\nexcept ImportError as e:\n    print(e)\nelse:\n    print('built')"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    try:
        import metaworld  # noqa: F401
    except ImportError:
        assert ".venv-metaworld" in done.stdout
    else:  # a Meta-World in this venv: built, or refused for its MuJoCo version
        assert done.stdout.strip() == "built" or ".venv-metaworld" in done.stdout


class _SplitGoals(gymnasium.Env):
    """A one-step env whose train and test tasks are disjoint (goals < 0 and > 0)."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self) -> None:
        self.task: dict[str, Any] = {"goal": 0.0}

    def sample_tasks(self, n: int, seed: int | None = None, split: str = "train") -> list:
        rng = np.random.default_rng(seed)
        sign = 1.0 if split == "test" else -1.0
        return [{"goal": sign * float(g)} for g in rng.uniform(0.1, 1.0, n)]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple:
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action: Any) -> tuple:
        reward = -abs(float(action[0]) - self.task["goal"])
        return np.zeros(1, np.float32), reward, True, False, {}


def test_rl_family_passes_split_to_envs_that_take_it() -> None:
    from esmaml.rl.family import RLFamily

    esmaml.register("envs", "split_goals_test", _SplitGoals)
    try:
        family = RLFamily("split_goals_test", horizon=1, normalize_observations=False)
        generator = torch.Generator().manual_seed(0)
        assert bool((family.sample_tasks(8, split="test", generator=generator)["goal"] > 0).all())
        assert bool((family.sample_tasks(8, split="train", generator=generator)["goal"] < 0).all())
    finally:
        KINDS["envs"].registered.pop("split_goals_test", None)
