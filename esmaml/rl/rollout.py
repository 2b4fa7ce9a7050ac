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
from esmaml.rl.policies import Policy


@dataclass(frozen=True)
class RolloutResult:
    returns: Tensor  # [N] mean return over the E episodes
    episode_returns: Tensor  # [N, E]
    steps: int  # environment steps actually taken (alive steps)
    observation_stats: RunningStats | None  # of the observations the policy saw while alive


def rollout(
    env: Any,
    policy: Policy,
    params: Tensor,
    task: Mapping[str, Tensor],
    *,
    episodes: int = 1,
    horizon: int | None = None,
    normalize: Callable[[Tensor], Tensor] = lambda obs: obs,
    generator: torch.Generator | None = None,
    initial_state: Mapping[str, Tensor] | None = None,
    observation_stats: bool = True,
    action_noise: Tensor | None = None,
) -> RolloutResult:
    """E episodes of N (params, task) pairs in a torch-native :class:`envs.BatchedMetaEnv`.

    ``action_noise`` (``[H, N, E, act_dim]``) is added to the policy's action at each step: a
    Gaussian policy whose noise the caller draws.

    ``initial_state`` (batch [N, E]) replaces the env's reset, e.g. to share start states
    between population members that share a task (common random numbers).
    ``observation_stats=False`` skips the observation statistics (``None`` in the result).
    """
    n = params.shape[0]
    horizon = horizon or env.max_episode_steps
    batch_task = {k: v.unsqueeze(1).expand(n, episodes, *v.shape[1:]) for k, v in task.items()}
    state = dict(initial_state) if initial_state is not None else env.reset(batch_task, generator)
    act = policy.bind(params)
    transform = None
    observe, step = env.observe, env.step
    # Per-step work is kept to the env and the policy; masks, returns and observation
    # statistics are reduced once over the stacked trajectory.
    observations, rewards, terminations = [], [], []
    for t in range(horizon):
        obs = observe(state, batch_task)
        if transform is None:
            transform = _frozen(normalize, obs.dtype)
        action = act(transform(obs))
        if action_noise is not None:
            action = action + action_noise[t]
        state, reward, terminated = step(state, batch_task, action)
        observations.append(obs)
        rewards.append(reward)
        terminations.append(terminated)
        if t == 0:
            observe, step = _unchecked(env)
    rewards_all = torch.stack(rewards).to(params.dtype)  # [H, N, E]
    observations_all = torch.stack(observations)  # [H, N, E, obs_dim]
    # An episode is alive before step t iff it has not terminated at a step < t, i.e. for
    # t <= its first termination (max over time returns the first maximal index).
    if horizon > 1:
        hit, first = torch.stack(terminations[:-1]).view(torch.uint8).max(0)  # [N, E]
    if horizon == 1 or not bool(hit.any()):  # alive before every step: nothing to mask
        totals = rewards_all.sum(0)
        steps = rewards_all.numel()
        alive = None
    else:
        lengths = torch.where(hit.bool(), first + 1, horizon)  # [N, E]: steps alive
        steps = int(lengths.sum())
        index = torch.arange(horizon, device=lengths.device).view(-1, *([1] * lengths.dim()))
        alive = index < lengths  # [H, N, E]: alive before step t
        totals = (rewards_all * alive.to(rewards_all.dtype)).sum(0)
    # Two-pass float64 statistics: a one-pass float32 sum of squares loses the variance of
    # observations far from zero (+26% at an offset of 1000).
    stats = RunningStats.from_batch(observations_all, alive) if observation_stats else None
    return RolloutResult(totals.mean(1), totals, steps, stats)


def _frozen(
    normalize: Callable[[Tensor], Tensor], dtype: torch.dtype
) -> Callable[[Tensor], Tensor]:
    """An :class:`ObservationNormalizer`'s transform resolved once for a whole rollout (its
    statistics are frozen within an iteration); any other callable as it is."""
    frozen = getattr(normalize, "frozen_transform", None)
    return frozen(dtype) if callable(frozen) else normalize


def _unchecked(env: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``observe`` and ``step`` without the per-call validation, for steps after the first.

    A BatchedMetaEnv's checks read metadata only (keys, shapes, dtypes, devices), which the
    first validated step fixes for the whole rollout; with ``check_finite`` on, every action
    is still checked.
    """
    from envs.core import BatchedMetaEnv

    if not isinstance(env, BatchedMetaEnv) or env.check_finite:
        return env.observe, env.step
    observe, step = env._observe, env._step
    return (
        lambda state, task: observe(dict(state), dict(task)),
        lambda state, task, action: step(dict(state), dict(task), action),
    )


def rollout_gym(
    make_vector_env: Callable[[int], Any],
    policy: Policy,
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
    transform = _frozen(normalize, params.dtype)
    vector_env = make_vector_env(min(chunk, len(jobs)))
    width = vector_env.num_envs
    try:
        for start in range(0, len(jobs), width):
            batch = jobs[start : start + width]
            padded = batch + [batch[-1]] * (width - len(batch))
            set_vector_tasks(vector_env, [tasks[i] for i, _ in padded])
            row_seeds = list(seeds) if seeds is not None else list(range(n))
            obs, _ = vector_env.reset(seed=[row_seeds[i] * 1000 + e for i, e in padded])
            _check_gym_observation(vector_env, obs, (width, policy.observation_dim))
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
                action = policy.act(params[member], transform(obs_t).unsqueeze(1))
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


def _check_gym_observation(vector_env: Any, obs: Any, expected: tuple[int, ...]) -> None:
    """A gymnasium env's reset observation against the policy's input (once per chunk): a
    wrong shape or dtype names the env, not a matmul deep inside the policy."""
    spec = getattr(vector_env, "spec", None)
    name = getattr(spec, "id", None) or type(vector_env).__name__
    array = np.asarray(obs)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name}.reset returned observations of dtype {array.dtype}; need numbers")
    if array.shape != expected:
        raise ValueError(
            f"{name}.reset returned observations of shape {array.shape}, expected {expected} "
            f"(num_envs, the observation_dim {expected[1]} of its observation_space)"
        )
