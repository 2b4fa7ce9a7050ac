"""The batched MuJoCo meta-tasks (``envs.mujoco_batch``) against gymnasium, bit for bit."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import gymnasium
import numpy as np
import pytest

pytest.importorskip("mujoco")

from envs.mujoco import mujoco_warnings_to_python  # needs the importorskip above
from envs.mujoco_batch import BATCHED_MUJOCO_ENVS, MujocoMetaBatch

# (env, constructor kwargs, tasks of the 4 rows). The Ant's narrow healthy band makes episodes
# end at different steps, so running and terminated rows share the batch.
CASES: list[tuple[str, dict[str, Any], list[dict[str, Any]]]] = [
    ("HalfCheetahForwardBackward", {}, [{"direction": d} for d in (1.0, -1.0, -1.0, 1.0)]),
    ("HalfCheetahGoalVelocity", {}, [{"goal_velocity": v} for v in (0.0, 0.7, 1.3, 2.0)]),
    (
        "AntForwardBackward",
        {"healthy_z_range": (0.6, 1.0)},
        [{"direction": d} for d in (1.0, -1.0, 1.0, -1.0)],
    ),
    (
        "AntDirection",
        {"healthy_z_range": (0.6, 1.0)},
        [{"direction": [math.cos(t), math.sin(t)]} for t in (0.0, 1.0, 2.5, 4.0)],
    ),
]
SEEDS = [0, 7, 7_000, 123_456]


@pytest.fixture(autouse=True)
def _no_mujoco_log_file() -> Iterator[None]:
    with mujoco_warnings_to_python():
        yield


def gymnasium_trajectories(
    name: str, kwargs: dict[str, Any], tasks: list[dict[str, Any]], actions: np.ndarray
) -> list[tuple[np.ndarray, list[np.ndarray], list[float], list[bool]]]:
    """(first obs, obs per step, rewards, terminated) of each row, through gymnasium.make."""
    out = []
    for row, task in enumerate(tasks):
        env = gymnasium.make(f"esmaml/{name}-v0", max_episode_steps=10_000, **kwargs)
        env.unwrapped.set_task(task)
        first, _ = env.reset(seed=SEEDS[row])
        observations, rewards, terminations = [], [], []
        for action in actions[:, row]:
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            rewards.append(reward)
            terminations.append(terminated)
            if terminated or truncated:
                break
        env.close()
        out.append((first, observations, rewards, terminations))
    return out


@pytest.mark.parametrize(("name", "kwargs", "tasks"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_equals_gymnasium_bit_for_bit(
    name: str, kwargs: dict[str, Any], tasks: list[dict[str, Any]], threads: int
) -> None:
    steps = 60
    batch = MujocoMetaBatch(name, len(tasks), threads=threads, **kwargs)
    assert batch.threads == threads
    rng = np.random.default_rng(1)
    # float32 actions as the rollout sends them, partly outside the box: MuJoCo clamps the
    # control while the control cost uses the action as given, on both paths.
    actions = rng.uniform(
        1.2 * batch.action_low, 1.2 * batch.action_high, (steps, len(tasks), batch.action_dim)
    ).astype(np.float32)
    reference = gymnasium_trajectories(name, kwargs, tasks, actions)

    batch.set_tasks(tasks)
    first = batch.reset(SEEDS)
    for row in range(len(tasks)):
        np.testing.assert_array_equal(first[row], reference[row][0])
    alive = np.ones(len(tasks), dtype=bool)
    lengths = np.zeros(len(tasks), dtype=int)
    for t in range(steps):
        rows = np.flatnonzero(alive)
        if rows.size == 0:
            break
        # only the running rows are stepped, as the rollout engine does
        obs, reward, terminated = batch.step(actions[t, rows], ids=rows)
        assert obs.dtype == np.float64 and reward.dtype == np.float64
        for k, row in enumerate(rows):
            _, observations, rewards, terminations = reference[row]
            np.testing.assert_array_equal(obs[k], observations[t])
            assert reward[k] == rewards[t], (name, row, t)
            assert bool(terminated[k]) == terminations[t], (name, row, t)
            lengths[row] += 1
        alive[rows[terminated]] = False
    assert list(lengths) == [len(r[1]) for r in reference]
    if name.startswith("Ant"):
        assert lengths.min() < steps and lengths.max() > lengths.min(), lengths


def test_rows_are_independent_of_their_neighbours() -> None:
    """A row's trajectory is the same alone, in a batch, and stepped with other rows."""
    name, kwargs, tasks = CASES[2]
    rng = np.random.default_rng(3)
    actions = rng.uniform(-1, 1, (20, 4, 8)).astype(np.float32)
    wide = MujocoMetaBatch(name, 4, threads=2, **kwargs)
    wide.set_tasks(tasks)
    wide.reset(SEEDS)
    alone = MujocoMetaBatch(name, 1, threads=1, **kwargs)
    alone.set_tasks(tasks[2:3])
    alone.reset(SEEDS[2:3])
    for t in range(20):
        ids = np.array([1, 2]) if t % 2 else None  # row 2 with a changing set of neighbours
        stepped = np.array([1, 2]) if ids is not None else np.arange(4)
        obs, reward, _ = wide.step(actions[t, stepped], ids=ids)
        obs1, reward1, _ = alone.step(actions[t, 2:3])
        k = int(np.flatnonzero(stepped == 2)[0])
        np.testing.assert_array_equal(obs[k], obs1[0])
        assert reward[k] == reward1[0]


def test_batch_catalogue_and_bad_inputs() -> None:
    assert sorted(BATCHED_MUJOCO_ENVS) == [
        "AntDirection",
        "AntForwardBackward",
        "HalfCheetahForwardBackward",
        "HalfCheetahGoalVelocity",
    ]
    batch = MujocoMetaBatch("esmaml/HalfCheetahForwardBackward-v0", 3, threads=1)
    assert (batch.observation_dim, batch.action_dim) == (17, 6)
    with pytest.raises(ValueError, match="has no batched path"):
        MujocoMetaBatch("Navigation2D", 2)
    with pytest.raises(ValueError, match="num_sims must be a positive int"):
        MujocoMetaBatch("AntDirection", 0)
    with pytest.raises(ValueError, match="threads must be a positive int"):
        MujocoMetaBatch("AntDirection", 2, threads=0)
    with pytest.raises(RuntimeError, match="set_tasks"):
        batch.step(np.zeros((3, 6), np.float32))
    with pytest.raises(ValueError, match=r"tasks\[1\]: .*must be -1\.0 or 1\.0"):
        batch.set_tasks([{"direction": 1.0}, {"direction": 0.5}, {"direction": 1.0}])
    with pytest.raises(ValueError, match="tasks must be a list of 3 task dicts"):
        batch.set_tasks([{"direction": 1.0}])
    batch.set_tasks([{"direction": 1.0}] * 3)
    with pytest.raises(ValueError, match="seeds must hold one seed per row"):
        batch.reset([0, 1])
    batch.reset([0, 1, 2])
    with pytest.raises(ValueError, match=r"actions must have shape \(2, 6\)"):
        batch.step(np.zeros((3, 6), np.float32), ids=[0, 2])
    with pytest.raises(ValueError, match="ids must be sorted unique row indices"):
        batch.step(np.zeros((2, 6), np.float32), ids=[2, 0])
    with pytest.raises(ValueError, match="ids must be sorted unique row indices"):
        batch.step(np.zeros((1, 6), np.float32), ids=[3])
