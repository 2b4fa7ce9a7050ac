"""The batched rollout engine.

``rollout(env, policy, params [N, D], task {k: [N, ...]}, episodes=E)`` plays E episodes of each
of N (parameters, task) pairs at once: the torch-native environments step an [N, E] batch with
no Python loop over environments and no host sync inside the horizon; gymnasium environments
(MuJoCo, CPU only) go through gymnasium's vector API in chunks. Rewards after an episode ends
are masked, so a return is the sum of the per-step rewards up to termination.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esmaml.rl.normalization import RunningStats
from esmaml.rl.policies import MLPPolicy


@dataclass(frozen=True)
class RolloutResult:
    returns: Tensor  # [N] mean return over the E episodes
    episode_returns: Tensor  # [N, E]
    steps: int  # environment steps actually taken (alive steps)
    observation_stats: RunningStats


def rollout(
    env: Any,
    policy: MLPPolicy,
    params: Tensor,
    task: Mapping[str, Tensor],
    *,
    episodes: int = 1,
    horizon: int | None = None,
    normalize: Callable[[Tensor], Tensor] = lambda obs: obs,
    generator: torch.Generator | None = None,
    initial_state: Mapping[str, Tensor] | None = None,
) -> RolloutResult:
    """E episodes of N (params, task) pairs in a torch-native :class:`envs.BatchedMetaEnv`.

    ``initial_state`` (batch [N, E]) replaces the env's reset, e.g. to share start states
    between population members that share a task (common random numbers).
    """
    n = params.shape[0]
    horizon = horizon or env.max_episode_steps
    batch_task = {k: v.unsqueeze(1).expand(n, episodes, *v.shape[1:]) for k, v in task.items()}
    state = dict(initial_state) if initial_state is not None else env.reset(batch_task, generator)
    alive = torch.ones(n, episodes, dtype=torch.bool, device=params.device)
    act = policy.bind(params)
    # Per-step work is kept to the env and the policy; masks, returns and observation
    # statistics are reduced once over the stacked trajectory.
    observations, rewards, alives = [], [], []
    for _ in range(horizon):
        obs = env.observe(state, batch_task)
        state, reward, terminated = env.step(state, batch_task, act(normalize(obs)))
        observations.append(obs)
        rewards.append(reward)
        alives.append(alive)
        alive = alive & ~terminated
    alive_mask = torch.stack(alives)  # [H, N, E]: alive before each step
    totals = (torch.stack(rewards).to(params.dtype) * alive_mask).sum(0)
    steps = alive_mask.sum()
    weighted = torch.stack(observations) * alive_mask.unsqueeze(-1)
    obs_sum = weighted.sum((0, 1, 2)).double()
    obs_sq = (weighted * weighted).sum((0, 1, 2)).double()
    count = steps.double()
    mean = obs_sum / count.clamp_min(1)
    stats = RunningStats(count, mean, (obs_sq - count * mean.square()).clamp_min(0))
    return RolloutResult(totals.mean(1), totals, int(steps), stats)


def rollout_gym(
    make_vector_env: Callable[[int], Any],
    policy: MLPPolicy,
    params: Tensor,
    tasks: list[dict[str, Any]],
    *,
    episodes: int = 1,
    horizon: int,
    normalize: Callable[[Tensor], Tensor] = lambda obs: obs,
    seeds: Sequence[int] | None = None,
    chunk: int = 16,
) -> RolloutResult:
    """The same contract for gymnasium environments through gymnasium's vector API.

    ``make_vector_env(num_envs)`` returns a gymnasium vector env (SAME_STEP autoreset) of meta
    envs; rollouts run ``chunk`` environments at a time on the CPU. An episode ends at its
    first termination or truncation; later (autoreset) rewards are masked. Episode ``e`` of
    row ``i`` resets with seed ``seeds[i] * 1000 + e`` (rows with equal seeds share starts).
    """
    from envs import set_vector_tasks

    n = params.shape[0]
    jobs = [(i, e) for i in range(n) for e in range(episodes)]
    totals = torch.zeros(n, episodes, dtype=torch.float64)
    stats = RunningStats.zeros(policy.observation_dim)
    steps = 0
    vector_env = make_vector_env(min(chunk, len(jobs)))
    width = vector_env.num_envs
    try:
        for start in range(0, len(jobs), width):
            batch = jobs[start : start + width]
            padded = batch + [batch[-1]] * (width - len(batch))
            set_vector_tasks(vector_env, [tasks[i] for i, _ in padded])
            row_seeds = list(seeds) if seeds is not None else list(range(n))
            obs, _ = vector_env.reset(seed=[row_seeds[i] * 1000 + e for i, e in padded])
            alive = np.ones(width, dtype=bool)
            alive[len(batch) :] = False
            member = torch.tensor([i for i, _ in padded])
            returns = np.zeros(width)
            for _ in range(horizon):
                obs_t = torch.as_tensor(obs, dtype=params.dtype)
                mask = torch.as_tensor(alive)
                if mask.any():
                    stats = stats.merge(RunningStats.from_batch(obs_t, mask))
                steps += int(alive.sum())
                action = policy.act(params[member], normalize(obs_t).unsqueeze(1))
                obs, reward, terminated, truncated, _ = vector_env.step(action.squeeze(1).numpy())
                returns += np.where(alive, reward, 0.0)
                alive &= ~(terminated | truncated)
                if not alive.any():
                    break
            for env_index, (i, e) in enumerate(batch):
                totals[i, e] = returns[env_index]
    finally:
        vector_env.close()
    totals = totals.to(params.dtype)
    return RolloutResult(totals.mean(1), totals, steps, stats)
