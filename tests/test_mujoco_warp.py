"""The MuJoCo Warp path (``envs.mujoco_warp``) on its CPU twin, against gymnasium.

Runs only where the mujoco-warp package is installed (it is not part of scripts/setup.sh); its
first run compiles MuJoCo Warp's kernels for the CPU (about 30 s here), hence ``slow``. MuJoCo
Warp computes in float32, so the comparisons are to float32 accuracy over a few steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")
pytest.importorskip("mujoco_warp")

from envs.mujoco import mujoco_warnings_to_python  # needs the importorskips above
from envs.mujoco_warp import MujocoWarpMetaBatch, warp_task_reward
from esmaml.rl import RLFamily

pytestmark = pytest.mark.slow

CASES: list[tuple[str, list[dict[str, Any]]]] = [
    ("HalfCheetahForwardBackward", [{"direction": d} for d in (1.0, -1.0, 1.0)]),
    ("HalfCheetahGoalVelocity", [{"goal_velocity": v} for v in (0.0, 0.9, 2.0)]),
    ("AntForwardBackward", [{"direction": d} for d in (1.0, -1.0, 1.0)]),
    ("AntDirection", [{"direction": [math.cos(t), math.sin(t)]} for t in (0.0, 2.0, 4.0)]),
]
SEEDS = [0, 5, 50]


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with mujoco_warnings_to_python():
        yield


@pytest.mark.parametrize(("name", "tasks"), CASES, ids=[c[0] for c in CASES])
def test_warp_twin_follows_gymnasium(name: str, tasks: list[dict[str, Any]]) -> None:
    # The Ant lands on its legs in its second step, where MuJoCo Warp's float32 contact solve
    # moves the torso's angular velocity by up to ~0.6 rad/s against MuJoCo's float64 one
    # (measured on this twin): it is compared over its first, contact-free step only.
    steps = 1 if name.startswith("Ant") else 3
    batch = MujocoWarpMetaBatch(name, len(tasks), device="cpu")
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, len(tasks), batch.action_dim)).astype(np.float32)
    batch.set_tasks(tasks)
    first = batch.reset(SEEDS)
    assert first.dtype == torch.float32 and first.device.type == "cpu"
    for row, task in enumerate(tasks):
        env = gymnasium.make(f"esmaml/{name}-v0")
        env.unwrapped.set_task(task)
        obs, _ = env.reset(seed=SEEDS[row])
        # the same reset draws, rounded to float32
        np.testing.assert_allclose(first[row].numpy(), obs, rtol=0, atol=1e-6)
        env.close()
    references = []
    for row, task in enumerate(tasks):
        env = gymnasium.make(f"esmaml/{name}-v0")
        env.unwrapped.set_task(task)
        env.reset(seed=SEEDS[row])
        references.append([env.step(a)[:3] for a in actions[:, row]])
        env.close()
    tolerance = 1e-3
    for t in range(steps):
        obs, reward, terminated = batch.step(torch.from_numpy(actions[t]))
        for row in range(len(tasks)):
            ref_obs, ref_reward, ref_terminated = references[row][t]
            n = batch.model.nq - batch._skip + batch.model.nv  # joint part (Ant: no contacts)
            np.testing.assert_allclose(obs[row, :n].numpy(), ref_obs[:n], atol=tolerance, rtol=0)
            assert float(reward[row]) == pytest.approx(ref_reward, abs=tolerance)
            assert bool(terminated[row]) == ref_terminated


def test_warp_task_rewards_are_the_meta_envs() -> None:
    """The torch task rewards equal envs.mujoco's task_reward on the same terms."""
    generator = torch.Generator().manual_seed(0)
    info = {
        k: torch.randn(5, generator=generator, dtype=torch.float64)
        for k in ("x_velocity", "y_velocity", "reward_ctrl", "reward_contact", "reward_survive")
    }
    action = torch.randn(5, 6, generator=generator, dtype=torch.float64)
    info["ctrl_cost_goal"] = 0.05 * action.square().sum(-1)
    angles = torch.rand(5, generator=generator, dtype=torch.float64) * 6.28
    tasks = {
        "HalfCheetahForwardBackward": {"direction": torch.tensor([1.0, -1, 1, -1, 1])},
        "HalfCheetahGoalVelocity": {"goal_velocity": torch.rand(5, dtype=torch.float64)},
        "AntForwardBackward": {"direction": torch.tensor([1.0, -1, 1, -1, 1])},
        "AntDirection": {"direction": torch.stack([angles.cos(), angles.sin()], 1)},
    }
    import envs.mujoco as meta

    for name, task in tasks.items():
        env = getattr(meta, name)()
        expected = env.task_reward(
            {k: v.numpy() for k, v in task.items()},
            {k: v.numpy() for k, v in info.items()},
            action.numpy(),
        )
        np.testing.assert_allclose(
            warp_task_reward(name, task, info).numpy(), expected, rtol=1e-12, atol=1e-12
        )


def test_family_on_the_warp_twin_matches_the_batch_over_a_short_horizon() -> None:
    results = {}
    for backend in ("warp", "batch"):
        family = RLFamily("HalfCheetahForwardBackward", horizon=4, mujoco_backend=backend)
        generator = torch.Generator().manual_seed(0)
        tasks = family.sample_tasks(2, generator=generator)
        params = 0.2 * torch.randn(3, family.num_params, generator=generator)
        ids = torch.tensor([0, 1, 0])
        loss = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(1))
        results[backend] = (loss, family.env_steps)
    assert results["warp"][1] == results["batch"][1] == 3 * 4
    torch.testing.assert_close(results["warp"][0], results["batch"][0], rtol=1e-2, atol=1e-2)
