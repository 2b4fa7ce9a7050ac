"""Gaussian-exploration episodes for policy-gradient learners (PG-MAML's inner and outer steps).

The deterministic policy ``mu_theta`` of an :class:`~esmaml.rl.family.RLFamily` becomes the
Gaussian policy ``pi_theta(a | s) = N(a; mu_theta(s), std^2 I)`` with a fixed ``std``: the
meta-parameters, their layout and the evaluation of the mean policy stay ES-MAML's. Actions are
sampled before the env clips them, so ``log pi`` is the density of the sampled action.

Only the torch-native batched environments are supported (an ``[N, E]`` batch steps at once).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from esmaml.rl.normalization import RunningStats
from esmaml.rl.policies import MLPPolicy

if TYPE_CHECKING:
    from envs.core import BatchedMetaEnv


@dataclass(frozen=True)
class Episodes:
    """E episodes of each of N (parameters, task) rows, stacked over time (H steps)."""

    observations: Tensor  # [H, N, E, obs_dim] raw (un-normalised) observations
    actions: Tensor  # [H, N, E, act_dim] sampled actions, before the env's clipping
    rewards: Tensor  # [H, N, E]
    alive: Tensor  # [H, N, E] bool: the episode had not terminated before step t

    @property
    def returns(self) -> Tensor:
        """``[N, E]`` undiscounted returns."""
        return (self.rewards * self.alive).sum(0)

    @property
    def steps(self) -> int:
        return int(self.alive.sum())


def require_batched_env(family: object) -> None:
    """Policy-gradient learners step an ``[N, E]`` batch of a torch-native env."""
    from esmaml.rl.family import RLFamily

    if not isinstance(family, RLFamily) or family.gym_id is not None:
        raise ValueError(
            "policy-gradient adaptation runs on task.family: rl with a torch-native batched "
            "env (task.params.env: Navigation2D, FourCorners, SixCircles, ...); gymnasium and "
            f"MuJoCo envs are not supported by it (got {type(family).__name__})"
        )
    if family.action_noise:
        raise ValueError(
            "policy-gradient adaptation explores with its own Gaussian (adaptation.params."
            f"action_std); task.params.action_noise={family.action_noise} would add a second, "
            "unmodelled noise to its actions: set task.params.action_noise to 0"
        )


@torch.no_grad()
def sample_episodes(
    env: BatchedMetaEnv,
    policy: MLPPolicy,
    params: Tensor,
    task: Mapping[str, Tensor],
    *,
    episodes: int,
    horizon: int,
    std: float,
    generator: torch.Generator,
    normalize: Callable[[Tensor], Tensor] = lambda obs: obs,
) -> Episodes:
    """``episodes`` episodes of ``pi_params`` per row (``params [N, D]``, ``task {k: [N, ...]}``),
    all N x E at once."""
    n = params.shape[0]
    task = {k: v.to(params.dtype) for k, v in task.items()}
    batch_task = {k: v.unsqueeze(1).expand(n, episodes, *v.shape[1:]) for k, v in task.items()}
    state = env.reset(batch_task, generator)
    act = policy.bind(params)
    observations, actions, rewards, terminations = [], [], [], []
    for _ in range(horizon):
        obs = env.observe(state, batch_task)
        mean = act(normalize(obs))
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        action = mean + std * noise
        state, reward, terminated = env.step(state, batch_task, action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward.to(params.dtype))
        terminations.append(terminated)
    done = torch.stack(terminations).to(torch.int32)  # [H, N, E]
    ended_before = torch.cumsum(done, 0) - done  # terminations at steps < t
    return Episodes(
        torch.stack(observations), torch.stack(actions), torch.stack(rewards), ended_before == 0
    )


def observation_stats(episodes: Episodes) -> RunningStats:
    return RunningStats.from_batch(episodes.observations, episodes.alive)


def log_prob(
    policy: MLPPolicy,
    params: Tensor,
    episodes: Episodes,
    std: float,
    normalize: Callable[[Tensor], Tensor] = lambda obs: obs,
) -> Tensor:
    """``[H, N, E]`` log-densities ``log N(a_t; mu_params(s_t), std^2 I)``, differentiable in
    ``params [N, D]`` (one batched policy call over all steps and episodes)."""
    h, n, e, obs_dim = episodes.observations.shape
    obs = normalize(episodes.observations.to(params.dtype))
    obs = obs.permute(1, 0, 2, 3).reshape(n, h * e, obs_dim)
    mean = policy.act(params, obs).reshape(n, h, e, -1).permute(1, 0, 2, 3)
    z = (episodes.actions.to(params.dtype) - mean) / std
    act_dim = mean.shape[-1]
    return -0.5 * z.square().sum(-1) - act_dim * (math.log(std) + 0.5 * math.log(2 * math.pi))


def magic_box(x: Tensor) -> Tensor:
    """DiCE's operator (Foerster et al. 2018): ``exp(x - stop_grad(x))``, value 1 and gradient
    ``grad x``; its higher derivatives are the score-function estimator's."""
    return torch.exp(x - x.detach())


def advantages(episodes: Episodes, *, gamma: float = 1.0, normalize: bool = True) -> Tensor:
    """``[H, N, E]`` advantages ``A_t = G_t - b_t`` of the reward-to-go
    ``G_t = sum_{t' >= t} gamma^(t' - t) r_t'``, with ``b_t`` the mean of ``G_t`` over the row's
    other E - 1 episodes (leave one out, so the baseline is independent of the episode: the
    policy gradient stays unbiased). ``normalize`` divides by the row's standard deviation of
    the advantages (the step then does not depend on the reward scale). Zero after an
    episode's end. Needs E >= 2."""
    rewards = episodes.rewards * episodes.alive
    h, _, e = rewards.shape
    if e < 2:
        raise ValueError(f"advantages need at least 2 episodes per row for a baseline, got {e}")
    to_go = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in range(h - 1, -1, -1):
        running = rewards[t] + gamma * running
        to_go[t] = running
    baseline = (to_go.sum(-1, keepdim=True) - to_go) / (e - 1)
    adv = (to_go - baseline) * episodes.alive
    if normalize:
        count = episodes.alive.sum((0, 2)).clamp_min(1)  # [N]
        mean = adv.sum((0, 2)) / count
        var = ((adv - mean[None, :, None]).square() * episodes.alive).sum((0, 2)) / count
        # A row whose episodes all return the same has no signal: its advantages stay 0.
        scale = torch.where(var > 0, var.rsqrt(), torch.zeros_like(var))
        adv = adv * scale[None, :, None]
    return adv
