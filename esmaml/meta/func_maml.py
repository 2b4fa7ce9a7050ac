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
from torch import Tensor, nn

from esmaml.adaptation.base import AdaptationOperator
from esmaml.adaptation.gradient_descent import GradientDescentAdaptation
from esmaml.meta.base import MetaLearner, guarded_step, load_optimizer_state, make_optimizer
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order import draw_seed, make_generator


class FuncMAML(MetaLearner):
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
        if isinstance(meta_batch_size, bool) or not isinstance(meta_batch_size, int):
            raise TypeError(f"meta_batch_size must be a positive int, got {meta_batch_size!r}")
        if meta_batch_size < 1:
            raise ValueError(f"meta_batch_size must be a positive int, got {meta_batch_size}")
        if not isinstance(first_order, bool):
            raise TypeError(f"first_order must be a bool, got {first_order!r}")
        self.family, self.adaptation = family, adaptation
        self.meta_batch_size, self.first_order = meta_batch_size, first_order
        self.generator = generator if generator is not None else make_generator(draw_seed())
        initial = family.init_params(self.generator) if init_params is None else init_params
        self.theta = nn.Parameter(initial.detach().clone().to(family.device))
        self.optimizer = make_optimizer(optimizer, self.theta)

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
        grad_norm = guarded_step(self.theta, self.optimizer, gradient, name="MAML")
        with torch.no_grad():
            self.theta.copy_(self.family.end_iteration(self.theta.detach()))
        return {
            "meta_objective": float(losses.detach().mean()),
            "grad_norm": grad_norm,
            "queries": float(n * (self.adaptation.num_steps + 1)),
        }

    def parameters_flat(self) -> Tensor:
        return self.theta.detach().clone()

    def state_dict(self) -> dict[str, Any]:
        return {"theta": self.theta.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        load_optimizer_state(self.optimizer, state["optimizer"])
