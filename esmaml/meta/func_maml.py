"""MAML in plain torch.func: the fast gradient baseline for differentiable families.

The same meta-objective as :class:`~esmaml.meta.l2l_maml.L2LMAML` (learn2learn's MAML),

    J(theta) = (1/n) sum_i L_query(T_i, U^k(theta, T_i)),
    U(theta, T) = theta - alpha grad_theta L_support(T, theta)   (k times),

but computed on flat parameters for all n tasks at once: the inner step is
:class:`~esmaml.adaptation.gradient_descent.GradientDescentAdaptation` (``torch.func.grad`` of the
family's batched loss), and the meta-gradient is autograd through it (second order; with
``first_order`` the inner gradients are held constant). No per-task Python loop and no module
clones, hence several times faster than learn2learn on small models (results/sine.md); one step
equals learn2learn's (tests/test_func_maml.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator, check_positive_int
from esmaml.adaptation.gradient_descent import GradientDescentAdaptation
from esmaml.meta.base import FlatThetaLearner
from esmaml.tasks.base import TaskFamily, Tasks


class FuncMAML(FlatThetaLearner):
    """Second-order MAML (or FOMAML) on a differentiable family, batched over tasks.

    Args:
        family: a differentiable family (``family.differentiable``).
        adaptation: a :class:`GradientDescentAdaptation` (alpha, number of inner steps).
        optimizer: ``params -> torch.optim.Optimizer`` for the outer step (default SGD 0.01).
        generator: the run's random stream (the initial parameters).
        meta_batch_size: tasks n per iteration.
        first_order: drop the second-order terms (FOMAML).
        init_params: initial flat meta-parameters ``[D]`` (default: the family's init).
    """

    def __init__(
        self,
        family: TaskFamily,
        adaptation: AdaptationOperator,
        optimizer: Any = None,
        generator: torch.Generator | None = None,
        *,
        meta_batch_size: int = 25,
        first_order: bool = False,
        init_params: Tensor | None = None,
    ):
        if not family.differentiable:
            raise ValueError(
                f"{type(family).__name__} is not differentiable: MAML needs the gradient of its "
                "loss; use an ES-MAML meta-learner"
            )
        if not isinstance(adaptation, GradientDescentAdaptation):
            raise TypeError(
                "meta.algorithm=maml adapts by gradient descent: set adaptation.operator="
                f"gradient_descent, got {type(adaptation).__name__}"
            )
        if not isinstance(first_order, bool):
            raise TypeError(f"first_order must be a bool, got {first_order!r}")
        self.family, self.adaptation = family, adaptation
        self.meta_batch_size = check_positive_int("meta_batch_size", meta_batch_size)
        self.first_order = first_order
        self._init_theta(family, optimizer, generator, init_params)

    @property
    def tasks_per_iteration(self) -> int:
        return self.meta_batch_size

    def adapted(self, tasks: Tasks) -> Tensor:
        """``U^k(theta, T_i)`` for every task, ``[n, D]``, differentiable in theta."""
        n = next(iter(tasks.values())).shape[0]
        ids = torch.arange(n, device=self.theta.device)
        params = self.theta.expand(n, -1)
        for _ in range(self.adaptation.num_steps):
            step = self.adaptation.step(self.family, params, tasks, ids, seed=0) - params
            params = params + (step.detach() if self.first_order else step)
        return params

    def step(self, tasks: Tasks) -> dict[str, float]:
        n = next(iter(tasks.values())).shape[0]
        ids = torch.arange(n, device=self.theta.device)
        losses = self.family.loss(self.adapted(tasks), tasks, ids, phase="query")
        (gradient,) = torch.autograd.grad(losses.mean(), self.theta)
        grad_norm = self.apply_gradient(gradient, name="MAML")
        return {
            "meta_objective": float(losses.detach().mean()),
            "grad_norm": grad_norm,
            "queries": float(n * (self.adaptation.num_steps + 1)),
        }
