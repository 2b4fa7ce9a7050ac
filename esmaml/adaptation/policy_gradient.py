"""Policy-gradient adaptation (MAML's RL inner loop): REINFORCE with a DiCE objective.

For each row (a parameter vector and its task), K episodes of the Gaussian policy
``pi_theta = N(mu_theta(s), std^2 I)`` (:mod:`esmaml.rl.episodes`), then

    theta' = theta + lr * grad_theta  mean_{k, t alive} magic(log pi_theta(a_t^k | s_t^k)) A_t^k,

``magic(x) = exp(x - stop_grad(x))`` (DiCE), ``A`` the reward-to-go minus a leave-one-out
baseline, normalised per row (:func:`esmaml.rl.episodes.advantages`). The objective's value is
the mean advantage and its gradient the REINFORCE estimate; differentiated once more (PG-MAML's
meta-gradient, ``create_graph=True``) it gives the score-function estimate of the Hessian, as in
learn2learn's meta-RL examples. Evaluated, an adapted row is the deterministic mean policy
``mu_theta'``, exactly as ES-MAML's adapted parameters are.
"""

from __future__ import annotations

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator, check_positive_float, check_positive_int
from esmaml.rl.episodes import (
    Episodes,
    advantages,
    log_prob,
    magic_box,
    require_batched_env,
    sample_episodes,
)
from esmaml.seeding import substream
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order.noise import make_generator


class PolicyGradientAdaptation(AdaptationOperator):
    """``num_steps`` REINFORCE steps of size ``lr``, each on ``num_queries`` episodes per row.

    Args:
        lr: inner step size alpha.
        num_queries: episodes K per row and step (the adaptation queries; at least 2, for the
            leave-one-out baseline).
        action_std: the Gaussian exploration's standard deviation, in action units (before the
            env clips).
        gamma: discount of the reward-to-go (1: the undiscounted return the tasks report).
        normalize_advantages: divide each row's advantages by their standard deviation.
        num_steps: adaptation steps.
    """

    def __init__(
        self,
        lr: float = 0.1,
        *,
        num_queries: int = 20,
        action_std: float = 0.05,
        gamma: float = 1.0,
        normalize_advantages: bool = True,
        num_steps: int = 1,
    ):
        self.lr = check_positive_float("lr", lr)
        self.num_queries = check_positive_int("num_queries", num_queries)
        if self.num_queries < 2:
            raise ValueError(
                f"num_queries must be >= 2 (the baseline of an episode is the mean of the "
                f"others), got {num_queries}"
            )
        self.action_std = check_positive_float("action_std", action_std)
        gamma = float(gamma)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}")
        self.gamma = gamma
        if not isinstance(normalize_advantages, bool):
            raise TypeError(f"normalize_advantages must be a bool, got {normalize_advantages!r}")
        self.normalize_advantages = normalize_advantages
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        self.num_steps = num_steps

    @property
    def queries_per_step(self) -> int:
        return self.num_queries

    def sample(
        self,
        family: TaskFamily,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        seed: int,
        episodes: int | None = None,
    ) -> Episodes:
        """``episodes`` (default K) episodes of ``pi_params`` per row (``params [N, D]``), drawn
        from ``seed``; counts the env steps into ``family.env_steps``."""
        require_batched_env(family)
        generator = make_generator(substream(seed, "rollouts"), params.device)
        result = sample_episodes(
            family.env,  # type: ignore[attr-defined]
            family.policy,  # type: ignore[attr-defined]
            params.detach(),
            {k: v[task_ids] for k, v in tasks.items()},
            episodes=self.num_queries if episodes is None else episodes,
            horizon=family.horizon,  # type: ignore[attr-defined]
            std=self.action_std,
            generator=generator,
            normalize=family.normalizer.frozen_transform(params.dtype),  # type: ignore[attr-defined]
        )
        family.env_steps += result.steps  # type: ignore[attr-defined]
        return result

    def update(
        self,
        family: TaskFamily,
        params: Tensor,
        episodes: Episodes,
        *,
        create_graph: bool = False,
    ) -> Tensor:
        """``params [N, D]`` plus ``lr`` times the DiCE gradient on ``episodes``; with
        ``create_graph`` the result stays differentiable in ``params`` (second order)."""
        normalize = family.normalizer.frozen_transform(params.dtype)  # type: ignore[attr-defined]
        logp = log_prob(family.policy, params, episodes, self.action_std, normalize)  # type: ignore[attr-defined]
        adv = advantages(episodes, gamma=self.gamma, normalize=self.normalize_advantages)
        steps = episodes.alive.sum((0, 2)).clamp_min(1)  # [N]
        objective = (magic_box(logp) * adv).sum((0, 2)) / steps  # [N]: rows are independent
        (grad,) = torch.autograd.grad(objective.sum(), params, create_graph=create_graph)
        return params + self.lr * grad

    def step(
        self, family: TaskFamily, params: Tensor, tasks: Tasks, task_ids: Tensor, seed: int
    ) -> Tensor:
        flat = params.detach().reshape(-1, params.shape[-1])
        ids = task_ids.expand(params.shape[:-1]).reshape(-1)
        with torch.enable_grad():
            rows = flat.clone().requires_grad_()
            episodes = self.sample(family, rows, tasks, ids, seed)
            adapted = self.update(family, rows, episodes)
        return adapted.detach().reshape(params.shape)
