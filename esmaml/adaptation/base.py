"""Adaptation operators U(theta, task) -> adapted parameters, batched over [*B].

An operator queries ``family.loss(..., phase='adapt')`` (support set, or adaptation rollouts)
and returns new flat parameters. Its randomness comes from ``seed`` (step k of ``adapt`` uses
``substream(seed, "step", k)``, and within a step the named substreams ``directions`` and
``rollouts``); directions are drawn per
task and gathered by ``task_ids``, so population members that share a task share the inner noise
(common random numbers, which cancel in an antithetic pair).
"""

from __future__ import annotations

import abc

import torch
from torch import Tensor

from esmaml.seeding import substream
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order.noise import make_generator


class AdaptationOperator(abc.ABC):
    """U(theta, task): one or more adaptation steps on the 'adapt' phase of a task."""

    #: Number of adaptation steps.
    num_steps: int = 1

    @property
    @abc.abstractmethod
    def queries_per_step(self) -> int:
        """Loss evaluations (or gradient queries) one step spends per adapted parameter vector."""

    @property
    def queries(self) -> int:
        """Queries one adaptation spends per parameter vector."""
        return self.num_steps * self.queries_per_step

    @abc.abstractmethod
    def step(
        self, family: TaskFamily, params: Tensor, tasks: Tasks, task_ids: Tensor, seed: int
    ) -> Tensor:
        """One adaptation step: ``params [*B, D]`` -> ``[*B, D]``."""

    def adapt(
        self,
        family: TaskFamily,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        seed: int,
        num_steps: int | None = None,
    ) -> Tensor:
        """``num_steps`` (default ``self.num_steps``) steps; fails loudly on non-finite output
        only through the caller's NaN policy (the loss of NaN parameters is NaN)."""
        steps = self.num_steps if num_steps is None else num_steps
        if steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {steps}")
        task_ids = task_ids.expand(params.shape[:-1])
        for index in range(steps):
            params = self.step(family, params, tasks, task_ids, substream(seed, "step", index))
        return params


def num_tasks(tasks: Tasks) -> int:
    return next(iter(tasks.values())).shape[0]


def per_task_generator(seed: int, device: torch.device) -> torch.Generator:
    return make_generator(seed, device)


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_positive_float(name: str, value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a positive number, got {value!r}") from None
    if not (0 < number < float("inf")):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number
