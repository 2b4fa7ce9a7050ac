"""ES-gradient adaptation: one zero-order gradient step per task.

    theta' = theta - alpha * g,   g = 1/K sum_k w_k p_k

with K directions p_k (Gaussian, orthogonal or DPP-selected), the values f(theta + sigma p_k)
of the adaptation loss, the pivot f(theta), and the weights of the chosen estimator and fitness
shaping (ES-MAML: z-scored values). One step costs K + 1 queries with the forward estimator on
raw values, K when the values are shaped (shaping ignores a common shift, so the pivot cancels
and is not evaluated), and 2K for antithetic.

``shape_with_pivot=True`` evaluates the pivot and shapes it together with the K values
(``s = shape(f_1..f_K, f(theta))``), as the google-research reference's MC adaptation
(``BlackboxAdaptation``) does, at K + 1 queries:

- ``method='naive'``: ``w_k = s_k / sigma``, the pivot entering only through the shaping's mean
  and spread. This is the reference's default estimator (named "antithetic" in its code,
  though it evaluates no ``-delta``); configs that say "paper defaults" use it.
- ``method='forward'``: ``w_k = (s_k - s_pivot) / sigma``, the reference's ``forward_fd``; for
  z-scores ``(f_k - f(theta)) / (sigma * std(f_1..f_K, f(theta)))``. The two differ by
  ``s_pivot / sigma * sum_k p_k``, about 31% of the step at K = 20.

Equal values (a plateau) give a zero step, as the reference returns theta unchanged when the
spread is 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from esmaml.adaptation.base import (
    AdaptationOperator,
    check_positive_float,
    check_positive_int,
    num_tasks,
    per_task_generator,
)
from esmaml.adaptation.dpp import dpp_directions
from esmaml.seeding import substream
from esmaml.tasks.base import TaskFamily, Tasks
from esmaml.zero_order.estimators import (
    check_method,
    check_shaping,
    es_gradient,
    perturb,
    shape_fitness,
)
from esmaml.zero_order.noise import sample_noise

Sampling = Literal["gaussian", "orthogonal", "dpp"]


@dataclass(frozen=True)
class ESTrace:
    """What one ES step saw, per adapted vector: directions ``[*B, K, D]``, values ``[*B, M]``,
    pivot ``[*B]`` and the estimate ``[*B, D]`` (first-order ES-MAML's Hessian needs them)."""

    directions: Tensor
    values: Tensor
    pivot: Tensor
    gradient: Tensor


class ESGradientAdaptation(AdaptationOperator):
    """ES-gradient adaptation (K queries, shaped values, step ``step_size``; the pivot f(theta)
    when the estimate uses it)."""

    def __init__(
        self,
        num_queries: int = 20,
        sigma: float = 0.1,
        step_size: float = 0.05,
        *,
        num_steps: int = 1,
        method: str = "forward",
        sampling: Sampling = "gaussian",
        shaping: str = "zscore",
        dpp_oversample: int = 5,
        dpp_bandwidth: float = 0.5,
        shape_with_pivot: bool = False,
    ):
        self.num_queries = check_positive_int("num_queries", num_queries)
        self.sigma = check_positive_float("sigma", sigma)
        self.step_size = check_positive_float("step_size", step_size)
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
        self.num_steps = num_steps
        self.method = check_method(method)
        if sampling not in ("gaussian", "orthogonal", "dpp"):
            raise ValueError(f"sampling={sampling!r} is unknown; valid: gaussian, orthogonal, dpp")
        self.sampling = sampling
        self.shaping = check_shaping(shaping)
        self.dpp_oversample = check_positive_int("dpp_oversample", dpp_oversample)
        self.dpp_bandwidth = check_positive_float("dpp_bandwidth", dpp_bandwidth)
        if not isinstance(shape_with_pivot, bool):
            raise TypeError(f"shape_with_pivot must be a bool, got {shape_with_pivot!r}")
        if shape_with_pivot and (self.method == "antithetic" or self.shaping == "none"):
            raise ValueError(
                "shape_with_pivot=True shapes the values together with the pivot: it needs "
                "method 'naive' (the reference's default) or 'forward' (its forward_fd) and "
                f"shaping 'zscore' or 'centered_rank', got method={self.method!r}, "
                f"shaping={self.shaping!r}"
            )
        self.shape_with_pivot = shape_with_pivot

    @property
    def evaluates_pivot(self) -> bool:
        """Whether a step evaluates f(theta): the forward estimator on raw values, or shaped
        together with the values (``shape_with_pivot``)."""
        return self.shape_with_pivot or (self.method == "forward" and self.shaping == "none")

    @property
    def queries_per_step(self) -> int:
        evaluations = 2 * self.num_queries if self.method == "antithetic" else self.num_queries
        return evaluations + (1 if self.evaluates_pivot else 0)

    def directions(
        self, tasks: Tasks, dim: int, seed: int, device: torch.device, dtype: torch.dtype
    ) -> Tensor:
        """``[num_tasks, K, D]``: one set of directions per task (common random numbers)."""
        generator = per_task_generator(substream(seed, "directions"), device)
        shape = (num_tasks(tasks), self.num_queries, dim)
        if self.sampling == "dpp":
            return dpp_directions(
                self.num_queries,
                dim,
                shape[:1],
                oversample=self.dpp_oversample,
                bandwidth=self.dpp_bandwidth,
                scale=self.sigma,
                generator=generator,
                device=device,
                dtype=dtype,
            )
        return sample_noise(
            shape, kind=self.sampling, generator=generator, device=device, dtype=dtype
        )

    def trace(
        self, family: TaskFamily, params: Tensor, tasks: Tasks, task_ids: Tensor, seed: int
    ) -> ESTrace:
        """Evaluate the K queries and the pivot of one step and estimate the gradient."""
        directions = self.directions(tasks, params.shape[-1], seed, params.device, params.dtype)
        directions = directions[task_ids]  # [*B, K, D]
        candidates = perturb(params, directions, self.sigma, self.method)  # [*B, M, D]
        generator = per_task_generator(substream(seed, "rollouts"), params.device)
        values = family.loss(
            candidates, tasks, task_ids.unsqueeze(-1), phase="adapt", generator=generator
        )
        if self.evaluates_pivot:
            # A fresh stream with the queries' seed: the pivot sees the same start states
            # (stochastic families draw them per task), so f(theta) cancels their noise.
            pivot_generator = per_task_generator(substream(seed, "rollouts"), params.device)
            pivot = family.loss(params, tasks, task_ids, phase="adapt", generator=pivot_generator)
        else:
            pivot = values.mean(-1)  # the estimate does not use f(theta): spend no query on it
        scored, baseline, shaping = values, pivot, self.shaping
        if self.shape_with_pivot:  # shape [values, pivot] together, then the forward weights
            joint = shape_fitness(torch.cat([values, pivot.unsqueeze(-1)], -1), self.shaping)
            scored, baseline, shaping = joint[..., :-1], joint[..., -1], "none"
        gradient = es_gradient(
            directions,
            scored,
            method=self.method,
            sigma=self.sigma,
            baseline=baseline,
            shaping=shaping,  # type: ignore[arg-type]
        )
        return ESTrace(directions, values, pivot, gradient)

    def step(
        self, family: TaskFamily, params: Tensor, tasks: Tasks, task_ids: Tensor, seed: int
    ) -> Tensor:
        return params - self.step_size * self.trace(family, params, tasks, task_ids, seed).gradient
