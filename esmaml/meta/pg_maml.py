"""Policy-gradient MAML: the gradient-based meta-RL baseline ES-MAML is compared with.

MAML (Finn et al. 2017) on RL as learn2learn's meta-RL examples run it, on the same batched
torch environments, task samplers, policy and held-out evaluation as ES-MAML. Per iteration,
for a batch of n tasks:

1. inner step (:class:`~esmaml.adaptation.policy_gradient.PolicyGradientAdaptation`): K
   episodes of ``pi_theta = N(mu_theta(s), std^2 I)`` per task, and
   ``theta'_i = theta + alpha grad_theta J_DiCE(theta; inner episodes of task i)``;
2. Q episodes of ``pi_theta'_i`` per task (the post-adaptation queries), advantages ``A'``;
3. outer step, PPO-clip on the adapted policies (as ProMP, Rothfuss et al. 2019): for each of
   ``epochs`` passes, ``theta'_i(theta)`` is recomputed from the stored inner episodes and

       L(theta) = -(1/n) sum_i mean_{t alive} min(rho_t A'_t, clip(rho_t, 1 - eps, 1 + eps) A'_t),
       rho_t = pi_{theta'_i(theta)}(a'_t | s'_t) / pi_{theta'_i}(a'_t | s'_t) at sampling time,

   then one optimizer step on ``grad_theta L``. With one epoch, rho = 1 and the step is exactly
   MAML's policy gradient, differentiated through the inner step (second order; ``first_order``
   stops the gradient at ``theta'``).

Budget: ``n (K + Q)`` episodes per iteration (``queries`` in the metrics). The ES-MAML configs it
is compared with spend ``M (K + 1)`` (M perturbations): configs/*_pg.yaml state the match.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator, check_positive_float, check_positive_int
from esmaml.adaptation.policy_gradient import PolicyGradientAdaptation
from esmaml.meta.base import FlatThetaLearner, guarded_step
from esmaml.rl.episodes import advantages, log_prob, observation_stats, require_batched_env
from esmaml.seeding import substream
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order import draw_seed


class PGMAML(FlatThetaLearner):
    """Policy-gradient MAML with a DiCE inner step and a PPO-clip outer step.

    Args:
        family: an RL family on a torch-native batched env.
        adaptation: a :class:`PolicyGradientAdaptation` (alpha, K, the exploration std).
        optimizer: ``params -> torch.optim.Optimizer`` for the outer step (default SGD 0.01).
        generator: the run's random stream.
        meta_batch_size: tasks n per iteration.
        query_episodes: post-adaptation episodes Q per task (at least 2, for the baseline).
        epochs: PPO passes over one iteration's episodes (1: MAML's plain policy gradient).
        clip: PPO's epsilon.
        first_order: treat ``theta'`` as a constant of ``theta`` plus the inner step (FOMAML).
        init_params: initial flat meta-parameters ``[D]`` (default: the family's init).
    """

    def __init__(
        self,
        family: TaskFamily,
        adaptation: AdaptationOperator,
        optimizer: Any = None,
        generator: torch.Generator | None = None,
        *,
        meta_batch_size: int = 40,
        query_episodes: int = 20,
        epochs: int = 1,
        clip: float = 0.2,
        first_order: bool = False,
        init_params: Tensor | None = None,
    ):
        require_batched_env(family)
        if not isinstance(adaptation, PolicyGradientAdaptation):
            raise TypeError(
                "meta.algorithm=pg_maml adapts by policy gradient: set adaptation.operator="
                f"policy_gradient, got {type(adaptation).__name__}"
            )
        if adaptation.num_steps != 1:
            raise ValueError(
                f"pg_maml differentiates one inner step; adaptation.params.num_steps must be 1, "
                f"got {adaptation.num_steps}"
            )
        self.family, self.adaptation = family, adaptation
        self.meta_batch_size = check_positive_int("meta_batch_size", meta_batch_size)
        self.query_episodes = check_positive_int("query_episodes", query_episodes)
        if self.query_episodes < 2:
            raise ValueError(f"query_episodes must be >= 2 (baseline), got {query_episodes}")
        self.epochs = check_positive_int("epochs", epochs)
        self.clip = check_positive_float("clip", clip)
        if not isinstance(first_order, bool):
            raise TypeError(f"first_order must be a bool, got {first_order!r}")
        self.first_order = first_order
        self._init_theta(family, optimizer, generator, init_params)

    @property
    def tasks_per_iteration(self) -> int:
        return self.meta_batch_size

    def _adapted(self, inner: Any) -> Tensor:
        """``theta'_i(theta) [n, D]`` from the stored inner episodes (differentiable)."""
        rows = self.theta.expand(inner.actions.shape[1], -1)
        if self.first_order:
            rows = rows.detach().requires_grad_()
        adapted = self.adaptation.update(self.family, rows, inner, create_graph=True)
        if self.first_order:  # theta' = theta + alpha g(theta) with g held constant
            return self.theta + (adapted - rows).detach()
        return adapted

    def step(self, tasks: Tasks) -> dict[str, float]:
        n = next(iter(tasks.values())).shape[0]
        ids = torch.arange(n, device=self.theta.device)
        seed = draw_seed(self.generator)
        family, adaptation = self.family, self.adaptation
        inner = adaptation.sample(family, self.theta.detach().expand(n, -1), tasks, ids, seed)
        adapted = self._adapted(inner)
        query_seed = substream(seed, "query")
        outer = adaptation.sample(
            family, adapted.detach(), tasks, ids, query_seed, episodes=self.query_episodes
        )
        normalize = family.normalizer.frozen_transform(self.theta.dtype)  # type: ignore[attr-defined]
        std = adaptation.action_std
        with torch.no_grad():
            old = log_prob(family.policy, adapted.detach(), outer, std, normalize)  # type: ignore[attr-defined]
        adv = advantages(outer, gamma=adaptation.gamma, normalize=adaptation.normalize_advantages)
        steps = outer.alive.sum((0, 2)).clamp_min(1)
        grad_norm = 0.0
        for epoch in range(self.epochs):
            if epoch > 0:
                adapted = self._adapted(inner)
            ratio = torch.exp(log_prob(family.policy, adapted, outer, std, normalize) - old)  # type: ignore[attr-defined]
            clipped = ratio.clamp(1.0 - self.clip, 1.0 + self.clip)
            surrogate = torch.minimum(ratio * adv, clipped * adv).sum((0, 2)) / steps
            (gradient,) = torch.autograd.grad(-surrogate.mean(), self.theta)
            grad_norm = guarded_step(self.theta, self.optimizer, gradient, name="PG-MAML")
        # The reference's normaliser learns from the post-adaptation (query) rollouts.
        normalizer = family.normalizer  # type: ignore[attr-defined]
        if family.collect_statistics and normalizer.enabled:  # type: ignore[attr-defined]
            normalizer.observe(observation_stats(outer))
            if normalizer.mode == "legacy":
                normalizer.observe(observation_stats(inner))
        with torch.no_grad():
            self.theta.copy_(family.end_iteration(self.theta.detach()))
        post = outer.returns.mean()
        return {
            "meta_objective": -float(post),  # a loss, like ES-MAML's: minus the query return
            "grad_norm": grad_norm,
            "pre_adaptation_return": float(inner.returns.mean()),
            "post_adaptation_return": float(post),
            "queries": float(n * (adaptation.num_queries + self.query_episodes)),
        }
