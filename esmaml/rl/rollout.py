"""The batched rollout engine.

``rollout(env, policy, params [N, D], task {k: [N, ...]}, episodes=E)`` plays E episodes of each
of N (parameters, task) pairs at once: the torch-native environments step an [N, E] batch with
no Python loop over environments and no host sync inside the horizon; gymnasium environments
(MuJoCo, CPU only) go through gymnasium's vector API in chunks. Rewards after an episode ends
are masked, so a return is the sum of the per-step rewards up to termination.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from esmaml.rl.normalization import RunningStats, pairwise_sum
from esmaml.rl.policies import Policy

#: torch's CPU elementwise kernels run a vectorised body over chunks of 2 x the vector width (at
#: most 32 floats) and a scalar loop over the remainder, and their transcendental functions
#: (sigmoid, tanh, exp, sin, cos) round differently in the two, so a row's numbers would depend
#: on where it sits in the batch. The torch-native rollout pads its rows x episodes to a multiple
#: of this, so every element of every per-step tensor goes through the vectorised body.
PAD_ELEMENTS = 64


@dataclass(frozen=True)
class RolloutResult:
    returns: Tensor  # [N] mean return over the E episodes
    episode_returns: Tensor  # [N, E]
    steps: int  # environment steps actually taken (alive steps)
    # [N * E] (episode e of row i at i * E + e): the statistics of the observations the policy
    # saw while alive, one set per episode (see RunningStats.from_rows)
    episode_observation_stats: RunningStats | None

    @property
    def observation_stats(self) -> RunningStats | None:
        """The statistics of all the episodes' observations (merged in episode order)."""
        stats = self.episode_observation_stats
        return None if stats is None else stats.reduce()


def padded_rows(rows: int, episodes: int = 1) -> int:
    """The fewest rows ``>= rows`` whose ``rows * episodes`` is a multiple of
    :data:`PAD_ELEMENTS`: then every ``[rows, episodes, k]`` tensor has no scalar remainder."""
    step = PAD_ELEMENTS // math.gcd(episodes, PAD_ELEMENTS)
    return -(-rows // step) * step


def _pad(value: Tensor, rows: int) -> Tensor:
    """``value [n, ...]`` with its last row repeated up to ``rows`` rows."""
    extra = rows - value.shape[0]
    if extra == 0:
        return value
    return torch.cat([value, value[-1:].expand(extra, *value.shape[1:])])


def episode_mean(totals: Tensor) -> Tensor:
    """``totals [N, E] -> [N]``: the mean over episodes, summed as :func:`pairwise_sum`
    (a row's mean does not depend on the other rows)."""
    return pairwise_sum(totals.transpose(0, 1)) / totals.shape[1]


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

    A row's numbers do not depend on the other rows (a population split into sub-batches gets
    the values of one batch): the batch is padded (the last row repeated) to a multiple of
    :data:`PAD_ELEMENTS` elements per feature, and returns and statistics are summed over time
    by :func:`pairwise_sum`. With several intra-op threads, a per-step tensor above torch's grain
    size (32768 elements) is split between them at boundaries that depend on its size, which
    this does not cover (see ``docs/ray.md``).
    """
    n = params.shape[0]
    horizon = horizon or env.max_episode_steps
    batch_task = {k: v.unsqueeze(1).expand(n, episodes, *v.shape[1:]) for k, v in task.items()}
    state = dict(initial_state) if initial_state is not None else env.reset(batch_task, generator)
    rows = padded_rows(n, episodes)
    if rows > n:
        params = _pad(params, rows)
        batch_task = {k: _pad(v, rows) for k, v in batch_task.items()}
        state = {k: _pad(v, rows) for k, v in state.items()}
        if action_noise is not None:
            action_noise = _pad(action_noise.transpose(0, 1), rows).transpose(0, 1)
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
    rewards_all = torch.stack(rewards)[:, :n].to(params.dtype)  # [H, N, E]
    # An episode is alive before step t iff it has not terminated at a step < t, i.e. for
    # t <= its first termination (max over time returns the first maximal index).
    if horizon > 1:
        hit, first = torch.stack(terminations[:-1])[:, :n].view(torch.uint8).max(0)  # [N, E]
    if horizon == 1 or not bool(hit.any()):  # alive before every step: nothing to mask
        totals = pairwise_sum(rewards_all)
        steps = rewards_all.numel()
        alive = None
    else:
        lengths = torch.where(hit.bool(), first + 1, horizon)  # [N, E]: steps alive
        steps = int(lengths.sum())
        index = torch.arange(horizon, device=lengths.device).view(-1, *([1] * lengths.dim()))
        alive = index < lengths  # [H, N, E]: alive before step t
        totals = pairwise_sum(rewards_all * alive.to(rewards_all.dtype))
    stats = None
    if observation_stats:
        # Two-pass float64 statistics per episode: a one-pass float32 sum of squares loses
        # the variance of observations far from zero (+26% at an offset of 1000).
        observations_all = torch.stack(observations)[:, :n]  # [H, N, E, obs_dim]
        flat = observations_all.reshape(horizon, n * episodes, -1)
        stats = RunningStats.from_rows(flat, None if alive is None else alive.reshape(horizon, -1))
    return RolloutResult(episode_mean(totals), totals, steps, stats)


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
    chunk_stats: list[RunningStats] = []  # per episode, in job order
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
            seen, masks = [], []
            for _ in range(horizon):
                obs_t = torch.as_tensor(obs, dtype=params.dtype)
                seen.append(obs_t)
                masks.append(torch.as_tensor(alive.copy()))
                steps += int(alive.sum())
                action = policy.act(params[member], transform(obs_t).unsqueeze(1))
                obs, reward, terminated, truncated, _ = vector_env.step(action.squeeze(1).numpy())
                returns += np.where(alive, reward, 0.0)
                alive &= ~(terminated | truncated)
                if not alive.any():
                    break
            for env_index, (i, e) in enumerate(batch):
                totals[i, e] = returns[env_index]
            episode = RunningStats.from_rows(torch.stack(seen), torch.stack(masks))
            chunk_stats.append(episode[: len(batch)])
    finally:
        vector_env.close()
    totals = totals.to(params.dtype)
    return RolloutResult(episode_mean(totals), totals, steps, RunningStats.cat(chunk_stats))


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
