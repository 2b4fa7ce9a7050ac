"""The RL stack on MuJoCo meta-tasks: ``rollout_gym`` through gymnasium's vector API, RLFamily's
MuJoCo path and the ``esmaml train`` smoke run (gymnasium v5, CPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from torch import Tensor

pytest.importorskip("mujoco")

from envs.mujoco import make_mujoco_vector, mujoco_warnings_to_python  # needs mujoco
from esmaml.rl import MLPPolicy, ObservationNormalizer, RLFamily, RunningStats, rollout_gym

REPO = Path(__file__).resolve().parents[1]
CHEETAH = "esmaml/HalfCheetahForwardBackward-v0"
ANT = "esmaml/AntForwardBackward-v0"


@pytest.fixture(autouse=True)
def _quiet_mujoco_and_one_thread() -> Iterator[None]:
    """No MUJOCO_LOG.TXT from model warnings; one intra-op thread for the tiny policies."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with mujoco_warnings_to_python():
        yield
    torch.set_num_threads(threads)


def policy_for(env_id: str, **kwargs: Any) -> MLPPolicy:
    env = gymnasium.make(env_id, **kwargs)
    low, high = float(env.action_space.low.min()), float(env.action_space.high.max())
    policy = MLPPolicy(
        env.observation_space.shape[0], env.action_space.shape[0], (), "tanh", low, high
    )
    env.close()
    return policy


def normalizer_for(dim: int, seed: int) -> ObservationNormalizer:
    generator = torch.Generator().manual_seed(seed)
    normalizer = ObservationNormalizer(dim)
    normalizer.observe(RunningStats.from_batch(torch.randn(32, dim, generator=generator)))
    normalizer.commit()
    return normalizer


def replay_single(
    env_id: str,
    policy: MLPPolicy,
    params: Tensor,
    task: dict[str, Any],
    seed: int,
    horizon: int,
    normalizer: ObservationNormalizer,
    **kwargs: Any,
) -> tuple[float, int, list[dict[str, Any]], list[Tensor], bool]:
    """One episode in a single gymnasium env: (return, steps, infos, observations, terminated)."""
    env = gymnasium.make(env_id, **kwargs)
    env.unwrapped.set_task(task)
    obs, _ = env.reset(seed=seed)
    total, infos, seen, terminated = 0.0, [], [], False
    for _ in range(horizon):
        obs_t = torch.as_tensor(obs, dtype=params.dtype)
        seen.append(obs_t)
        action = policy.act(params[None], normalizer(obs_t)[None, None])[0, 0]
        obs, reward, terminated, truncated, info = env.step(action.numpy())
        total += float(reward)
        infos.append(info)
        if terminated or truncated:
            break
    env.close()
    return total, len(infos), infos, seen, bool(terminated)


def test_rollout_gym_matches_single_env_replay_and_flips_direction() -> None:
    policy = policy_for(CHEETAH)
    generator = torch.Generator().manual_seed(0)
    n, episodes, horizon = 3, 2, 25
    params = 0.3 * torch.randn(n, policy.num_params, generator=generator, dtype=torch.float64)
    params[1] = params[0]  # rows 0 and 1: same policy and seeds, opposite directions
    tasks = [{"direction": 1.0}, {"direction": -1.0}, {"direction": 1.0}]
    seeds = [11, 11, 12]
    normalizer = normalizer_for(policy.observation_dim, seed=1)
    made: list[int] = []

    def make(num_envs: int) -> Any:
        made.append(num_envs)
        return make_mujoco_vector(CHEETAH, num_envs)

    # 6 episodes in chunks of 4: a second, padded chunk on the same vector env.
    result = rollout_gym(
        make,
        policy,
        params,
        tasks,
        episodes=episodes,
        horizon=horizon,
        normalize=normalizer,
        seeds=seeds,
        chunk=4,
    )
    assert made == [4]
    assert result.episode_returns.shape == (n, episodes)
    assert result.episode_returns.dtype == torch.float64
    torch.testing.assert_close(result.returns, result.episode_returns.mean(1))
    velocity = np.zeros((n, episodes))
    control = np.zeros((n, episodes))
    seen: list[Tensor] = []
    for i in range(n):
        for e in range(episodes):
            total, steps, infos, observations, _ = replay_single(
                CHEETAH, policy, params[i], tasks[i], seeds[i] * 1000 + e, horizon, normalizer
            )
            assert steps == horizon  # HalfCheetah never terminates
            torch.testing.assert_close(
                result.episode_returns[i, e],
                torch.tensor(total, dtype=torch.float64),
                rtol=1e-9,
                atol=1e-9,
            )
            velocity[i, e] = sum(info["x_velocity"] for info in infos)
            control[i, e] = sum(info["reward_ctrl"] for info in infos)  # minus the cost
            seen.extend(observations)
    assert result.steps == n * episodes * horizon
    one_pass = RunningStats.from_batch(torch.stack(seen))
    assert float(result.observation_stats.count) == len(seen)
    torch.testing.assert_close(result.observation_stats.mean, one_pass.mean)
    torch.testing.assert_close(result.observation_stats.var, one_pass.var)
    # Rows 0 (+1) and 1 (-1) ran the same trajectories: only the forward term flips sign.
    plus, minus = result.episode_returns[0].numpy(), result.episode_returns[1].numpy()
    np.testing.assert_allclose(plus - minus, 2 * velocity[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(plus + minus, 2 * control[0], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(velocity[1], velocity[0], rtol=0, atol=0)
    assert np.all(np.abs(velocity[0]) > 1e-3)  # the policy does move the cheetah
    # Row 2 (other seeds) started elsewhere.
    assert not np.allclose(velocity[2], velocity[0])


def test_rollout_gym_masks_episodes_after_termination() -> None:
    # A narrow healthy band (Ant-v5's healthy_z_range) makes the Ant fall out of it within a
    # short horizon at different steps, so terminated and running episodes share vector envs.
    kwargs = {"healthy_z_range": (0.6, 1.0)}
    policy = policy_for(ANT, **kwargs)
    generator = torch.Generator().manual_seed(2)
    n, episodes, horizon = 4, 2, 30
    params = 0.5 * torch.randn(n, policy.num_params, generator=generator, dtype=torch.float64)
    tasks = [{"direction": d} for d in (1.0, -1.0, -1.0, 1.0)]
    seeds = [3, 4, 5, 6]
    normalizer = ObservationNormalizer(policy.observation_dim)  # no statistics: the identity
    result = rollout_gym(
        lambda k: make_mujoco_vector(ANT, k, **kwargs),
        policy,
        params,
        tasks,
        episodes=episodes,
        horizon=horizon,
        normalize=normalizer,
        seeds=seeds,
        chunk=8,
    )
    lengths, ended = [], []
    for i in range(n):
        for e in range(episodes):
            total, steps, _, _, terminated = replay_single(
                ANT, policy, params[i], tasks[i], seeds[i] * 1000 + e, horizon, normalizer, **kwargs
            )
            torch.testing.assert_close(
                result.episode_returns[i, e],
                torch.tensor(total, dtype=torch.float64),
                rtol=1e-9,
                atol=1e-9,
            )
            lengths.append(steps)
            ended.append(terminated)
    assert result.steps == sum(lengths)
    assert float(result.observation_stats.count) == sum(lengths)
    assert any(ended) and min(lengths) < horizon, lengths  # some terminated early ...
    assert max(lengths) > min(lengths), lengths  # ... at different steps


def test_family_mujoco_loss_shares_seeds_per_task_id() -> None:
    family = RLFamily("HalfCheetahForwardBackward", horizon=10, gym_chunk=8)
    assert family.gym_id == CHEETAH and family.num_params == (17 + 1) * 6
    tasks = family.sample_tasks(3, generator=torch.Generator().manual_seed(0))
    assert set(tasks["direction"].tolist()) <= {-1.0, 1.0}
    test_tasks = family.sample_tasks(3, split="test", generator=torch.Generator().manual_seed(0))
    assert tasks.keys() == test_tasks.keys()
    generator = torch.Generator().manual_seed(1)
    params = 0.3 * torch.randn(5, family.num_params, generator=generator)
    params[3] = params[0]
    params[4] = params[0]
    ids = torch.tensor([0, 1, 2, 0, 1])
    losses = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(5))
    assert losses.shape == (5,) and losses.dtype == torch.float32
    assert losses[3] == losses[0]  # same params, same task id: same start states
    assert losses[4] != losses[0]  # same params, another task id: other seeds
    assert family.env_steps == 5 * 10
    assert float(family.normalizer.pending.count) == 5 * 10
    # The family's seeds are the generator's draw plus the task id.
    seed = int(torch.randint(0, 2**31 - 1, (), generator=torch.Generator().manual_seed(5)))
    direction = float(tasks["direction"][0])
    total, *_ = replay_single(
        CHEETAH,
        family.policy,
        params[0],
        {"direction": direction},
        (seed + 0) * 1000,
        10,
        family.normalizer,
    )
    torch.testing.assert_close(losses[0], torch.tensor(-total, dtype=torch.float32))
    with family.frozen():
        again = family.loss(params, tasks, ids, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(again, losses, rtol=0, atol=0)
    assert float(family.normalizer.pending.count) == 5 * 10
    with pytest.raises(ValueError, match="last dim"):
        family.loss(params[:, 1:], tasks, ids)


def test_family_mujoco_horizon_beyond_the_registered_time_limit() -> None:
    # The ids are registered with a 200-step TimeLimit; a longer horizon must not be cut by it.
    assert gymnasium.spec(CHEETAH).max_episode_steps == 200
    family = RLFamily("HalfCheetahForwardBackward", horizon=230, normalize_observations=False)
    tasks = family.sample_tasks(1, generator=torch.Generator().manual_seed(0))
    params = torch.zeros(1, family.num_params)
    family.loss(params, tasks, torch.zeros(1, dtype=torch.long))
    assert family.env_steps == 230
    # A limit set in env_params is the user's: it still ends the episodes.
    capped = RLFamily(
        "HalfCheetahForwardBackward",
        env_params={"max_episode_steps": 50},
        horizon=60,
        normalize_observations=False,
    )
    capped.loss(params, tasks, torch.zeros(1, dtype=torch.long))
    assert capped.env_steps == 50
    assert RLFamily(CHEETAH, env_params={"max_episode_steps": 40}).horizon == 40


@pytest.mark.slow
def test_esmaml_train_halfcheetah_smoke_writes_env_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = Path(sys.executable).with_name("esmaml")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "esmaml.cli"]
    environment = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    completed = subprocess.run(
        [
            *command,
            "train",
            str(REPO / "configs" / "halfcheetah_fb_smoke.yaml"),
            "progress=false",
            "--run-dir",
            str(run_dir),
        ],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in rows] == [-1, 0, 1]
    rows = rows[1:]
    # 2 antithetic pairs = 4 members, each K=2 queries (z-scored: no pivot) + 1 query rollout
    # of 20 steps.
    assert [row["env_steps"] for row in rows] == [4 * 3 * 20] * 2
    assert rows[-1]["env_steps_total"] == sum(row["env_steps"] for row in rows)
    assert "eval_post_adaptation" in rows[-1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps_total"] == rows[-1]["env_steps_total"]
    assert np.isfinite(summary["eval_post_adaptation"])
    assert (run_dir / "checkpoint.pt").exists()
