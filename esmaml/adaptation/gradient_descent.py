"""Gradient-descent adaptation (MAML's inner loop) through torch.func: for differentiable
families, ``theta' = theta - lr * grad_theta L_adapt(theta)``, batched over [*B]."""

from __future__ import annotations

import torch
from torch import Tensor

from esmaml.adaptation.base import AdaptationOperator, check_positive_float, per_task_generator
from esmaml.seeding import substream
from esmaml.tasks.base import TaskFamily, Tasks


class GradientDescentAdaptation(AdaptationOperator):
    """``num_steps`` steps of plain gradient descent with step size ``lr``."""

    def __init__(self, lr: float = 0.01, *, num_steps: int = 1):
        self.lr = check_positive_float("lr", lr)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        self.num_steps = num_steps

    @property
    def queries_per_step(self) -> int:
        return 1  # one gradient query

    def step(
        self, family: TaskFamily, params: Tensor, tasks: Tasks, task_ids: Tensor, seed: int
    ) -> Tensor:
        if not family.differentiable:
            raise ValueError(
                f"gradient-descent adaptation needs a differentiable family; "
                f"{type(family).__name__} is not (use es_gradient or hill_climbing)"
            )
        generator = per_task_generator(substream(seed, "rollouts"), params.device)

        def total_loss(p: Tensor) -> Tensor:
            # Members are independent, so the gradient of the sum is each member's gradient.
            return family.loss(p, tasks, task_ids, phase="adapt", generator=generator).sum()

        return params - self.lr * torch.func.grad(total_loss)(params)


class IdentityAdaptation(AdaptationOperator):
    """No adaptation: U(theta, task) = theta, the non-meta baseline."""

    num_steps = 0

    @property
    def queries_per_step(self) -> int:
        return 0

    def step(
        self, family: TaskFamily, params: Tensor, tasks: Tasks, task_ids: Tensor, seed: int
    ) -> Tensor:
        return params

    def adapt(self, family, params, tasks, task_ids, seed, num_steps=None):  # type: ignore[override]
        return params
