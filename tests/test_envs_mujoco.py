"""Tests of the MuJoCo meta-tasks (gymnasium v5 HalfCheetah and Ant, CPU)."""

from __future__ import annotations

import json
import math
import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode, SyncVectorEnv

import envs

pytest.importorskip("mujoco")

from envs.mujoco import (  # needs the importorskip above
    AntDirection,
    AntForwardBackward,
    HalfCheetahForwardBackward,
    HalfCheetahGoalVelocity,
    make_mujoco_vector,
    mujoco_warnings_to_python,
)

STEPS = 150
ALLOWED_CHECKER_WARNINGS = (
    "A Box observation space minimum value is -infinity",
    "A Box observation space maximum value is infinity",
)


@pytest.fixture(autouse=True)
def _no_mujoco_log_file():
    """The reference gymnasium envs built here would otherwise append to MUJOCO_LOG.TXT."""
    with mujoco_warnings_to_python():
        yield


def run(env: gymnasium.Env, actions: np.ndarray, seed: int = 0) -> list[tuple]:
    """(obs, reward, terminated, info) per step for a fixed action sequence."""
    env.reset(seed=seed)
    out = []
    for a in actions:
        obs, r, term, _, info = env.step(a)
        out.append((obs, r, term, info))
        if term:
            break
    return out


def actions_for(env: gymnasium.Env, n: int, seed: int = 0) -> np.ndarray:
    space = env.action_space
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, (n, *space.shape)).astype(space.dtype)


@pytest.mark.parametrize("env_id", envs.MUJOCO_ENV_IDS)
def test_check_env(env_id: str) -> None:
    env = gymnasium.make(env_id)
    assert env.spec is not None and env.spec.max_episode_steps == 200
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
    unexpected = [
        str(w.message)
        for w in caught
        if not any(msg in str(w.message) for msg in ALLOWED_CHECKER_WARNINGS)
    ]
    assert unexpected == []


def test_half_cheetah_forward_backward_is_exact() -> None:
    fwd = HalfCheetahForwardBackward(task={"direction": 1.0})
    bwd = HalfCheetahForwardBackward(task={"direction": -1.0})
    ref_fwd = gymnasium.make("HalfCheetah-v5").unwrapped
    ref_bwd = gymnasium.make("HalfCheetah-v5", forward_reward_weight=-1.0).unwrapped
    actions = actions_for(fwd, STEPS)
    tf, tb, rf, rb = (run(e, actions) for e in (fwd, bwd, ref_fwd, ref_bwd))
    assert len(tf) == len(tb) == len(rf) == len(rb) == STEPS
    for a, (o1, r1, _, i1), (o2, r2, _, i2), (o3, r3, _, _), (o4, r4, _, _) in zip(
        actions, tf, tb, rf, rb, strict=True
    ):
        # the task only changes the reward: identical physics
        np.testing.assert_array_equal(o1, o2)
        np.testing.assert_array_equal(o1, o3)
        np.testing.assert_array_equal(o2, o4)
        assert r1 == r3 and r2 == r4  # bit-for-bit gymnasium's rewards
        ctrl = 0.1 * np.sum(np.square(a))  # HalfCheetahEnv.control_cost
        assert r1 == i1["x_velocity"] - ctrl
        assert r2 == -1.0 * i2["x_velocity"] - ctrl
        # same x_velocity and ctrl in both runs: the forward term flips sign exactly
        assert i1["x_velocity"] == i2["x_velocity"]
        assert i1["reward_base"] == r1


def test_half_cheetah_goal_velocity_reward() -> None:
    env = HalfCheetahGoalVelocity(task={"goal_velocity": 1.25})
    actions = actions_for(env, STEPS, seed=1)
    for a, (obs, r, term, info) in zip(actions, run(env, actions, seed=1), strict=True):
        assert not term and obs.shape == (17,)
        assert r == pytest.approx(
            -abs(info["x_velocity"] - 1.25) - 0.05 * float(np.sum(a.astype(np.float64) ** 2)),
            rel=1e-14,
            abs=1e-14,
        )
    tasks = env.sample_tasks(500, seed=0)
    v = np.array([t["goal_velocity"] for t in tasks])
    assert v.min() >= 0.0 and v.max() <= 2.0 and v.max() > 1.9
    wide = HalfCheetahGoalVelocity(max_goal_velocity=3.0).sample_tasks(500, seed=0)
    assert max(t["goal_velocity"] for t in wide) > 2.9


def test_ant_forward_backward_is_exact() -> None:
    fwd = AntForwardBackward(task={"direction": 1.0})
    bwd = AntForwardBackward(task={"direction": -1.0})
    kw = {"ctrl_cost_weight": 0.5, "contact_cost_weight": 5e-4, "healthy_reward": 1.0}
    ref_fwd = gymnasium.make("Ant-v5", **kw).unwrapped
    ref_bwd = gymnasium.make("Ant-v5", forward_reward_weight=-1.0, **kw).unwrapped
    actions = actions_for(fwd, STEPS, seed=2)
    tf, tb, rf, rb = (run(e, actions, seed=2) for e in (fwd, bwd, ref_fwd, ref_bwd))
    assert len(tf) == len(tb) == len(rf) == len(rb) > 10
    for a, (o1, r1, d1, i1), (_, r2, d2, i2), (o3, r3, d3, _), (_, r4, _, _) in zip(
        actions, tf, tb, rf, rb, strict=False
    ):
        np.testing.assert_array_equal(o1, o3)
        assert r1 == r3 and r2 == r4 and d1 == d2 == d3
        ctrl = 0.5 * np.sum(np.square(a))
        contact = -i1["reward_contact"]
        healthy = i1["reward_survive"]
        assert r1 == pytest.approx(i1["x_velocity"] + healthy - ctrl - contact, rel=1e-12)
        assert r2 == pytest.approx(-i2["x_velocity"] + healthy - ctrl - contact, rel=1e-12)


def test_ant_direction_reward() -> None:
    along_x = AntDirection(task={"direction": [1.0, 0.0]})
    fwd = AntForwardBackward(task={"direction": 1.0})
    actions = actions_for(fwd, 60, seed=3)
    for (_, r1, _, _), (_, r2, _, _) in zip(run(along_x, actions), run(fwd, actions), strict=True):
        assert r1 == r2
    t = 2.0
    env = AntDirection(task={"direction": [math.cos(t), math.sin(t)]})
    for _, r, _, info in run(env, actions):
        forward = math.cos(t) * info["x_velocity"] + math.sin(t) * info["y_velocity"]
        expected = forward + info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        assert r == pytest.approx(expected, rel=1e-12, abs=1e-12)
    tasks = env.sample_tasks(200, seed=0)
    norms = [math.hypot(*task["direction"]) for task in tasks]
    assert norms == pytest.approx([1.0] * 200)
    angles = [math.atan2(task["direction"][1], task["direction"][0]) for task in tasks]
    assert min(angles) < -2.5 and max(angles) > 2.5


def test_meta_interface_and_bad_tasks() -> None:
    env = HalfCheetahForwardBackward()
    tasks = env.sample_tasks(50, seed=0)
    assert {t["direction"] for t in tasks} == {-1.0, 1.0}
    assert tasks == env.sample_tasks(50, seed=0)
    env.set_task(tasks[3])
    assert json.loads(json.dumps(env.get_task())) == tasks[3]
    env.task = {"direction": -1.0}
    assert env.task == {"direction": -1.0}
    with pytest.raises(ValueError, match=r"missing keys \['direction'\]"):
        env.set_task({"goal_velocity": 1.0})
    with pytest.raises(ValueError, match=r"must be -1\.0 or 1\.0"):
        env.set_task({"direction": 0.5})
    with pytest.raises(ValueError, match="unit 2-vector"):
        AntDirection(task={"direction": [1.0, 1.0]})


def test_make_mujoco_vector_sets_per_env_tasks() -> None:
    tasks = [{"direction": d} for d in (1.0, -1.0, -1.0)]
    vec = make_mujoco_vector("esmaml/HalfCheetahForwardBackward-v0", 3, tasks)
    assert isinstance(vec, SyncVectorEnv) and vec.autoreset_mode == AutoresetMode.SAME_STEP
    assert list(vec.get_attr("task")) == tasks
    vec.reset(seed=[0, 0, 0])
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.uniform(-1, 1, (3, 6))
        _, r, _, _, info = vec.step(a)
        ctrl = 0.1 * np.sum(np.square(a), axis=1)
        expected = np.array([1.0, -1.0, -1.0]) * info["x_velocity"] - ctrl
        np.testing.assert_allclose(r, expected, rtol=1e-12, atol=1e-12)
    envs.set_vector_tasks(vec, [{"direction": -1.0}] * 3)
    assert list(vec.get_attr("task")) == [{"direction": -1.0}] * 3
    vec.close()
