"""Point mass with a per-task target velocity (a cheap stand-in for HalfCheetah goal velocity)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .core import BatchedMetaEnv, State, Task

__all__ = ["PointMassGoalVelocity"]


class PointMassGoalVelocity(BatchedMetaEnv):
    """1-D or 2-D point mass that must move along the first axis at a task-specific speed.

    * task: ``goal_velocity`` ``[*B]`` ~ U[0, max_goal_velocity] (default U[0, 2]);
    * state: ``pos`` and ``vel`` ``[*B, dim]``, both starting at zero (deterministic reset);
      observation = ``concat(pos, vel)`` (``2 * dim`` values);
    * dynamics (semi-implicit Euler, unit mass)::

          a    = clip(action, -1, 1)
          vel' = clip(vel + a * dt, -max_velocity, max_velocity)     dt = 0.1, max_velocity = 3
          pos' = pos + vel' * dt

    * reward ``r = -|vel'_0 - goal_velocity| - 0.05 * ||a||^2`` (the HalfCheetah goal-velocity
      reward with ``vel'_0`` as forward velocity; in 2-D the second axis is free but costs
      control); never terminates; horizon 100.
    """

    action_low = -1.0
    action_high = 1.0
    max_episode_steps = 100
    task_keys = ("goal_velocity",)
    task_shapes = {"goal_velocity": ()}  # noqa: RUF012
    state_shapes: dict[str, tuple[int, ...]]
    dt = 0.1
    max_velocity = 3.0
    ctrl_cost_weight = 0.05

    def __init__(
        self,
        dim: int = 1,
        max_goal_velocity: float = 2.0,
        *,
        max_episode_steps: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(max_episode_steps=max_episode_steps, check_finite=check_finite)
        if dim not in (1, 2):
            raise ValueError(f"dim must be 1 or 2, got {dim}")
        if not 0.0 < max_goal_velocity <= self.max_velocity:
            raise ValueError(
                f"max_goal_velocity must be in (0, {self.max_velocity}], got {max_goal_velocity}"
            )
        self.dim = dim
        self.max_goal_velocity = float(max_goal_velocity)
        self.action_dim = dim
        self.observation_dim = 2 * dim
        self.state_shapes = {"pos": (dim,), "vel": (dim,)}
        self.observation_low = (-math.inf,) * dim + (-self.max_velocity,) * dim
        self.observation_high = (math.inf,) * dim + (self.max_velocity,) * dim

    def _sample_task_params(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Task:
        u = torch.rand((n,), generator=generator, device=device, dtype=dtype)
        return {"goal_velocity": u * self.max_goal_velocity}

    def _reset(
        self, task: Task, batch_shape: torch.Size, generator: torch.Generator | None
    ) -> State:
        zeros = task["goal_velocity"].new_zeros((*batch_shape, self.dim))
        return {"pos": zeros, "vel": zeros.clone()}

    def _observe(self, state: State, task: Task) -> Tensor:
        return torch.cat([state["pos"], state["vel"]], -1)

    def _step(self, state: State, task: Task, action: Tensor) -> tuple[State, Tensor, Tensor]:
        a = action.clamp(self.action_low, self.action_high)
        vel = (state["vel"] + a * self.dt).clamp(-self.max_velocity, self.max_velocity)
        pos = state["pos"] + vel * self.dt
        ctrl = self.ctrl_cost_weight * a.square().sum(-1)
        reward = -(vel[..., 0] - task["goal_velocity"]).abs() - ctrl
        return {"pos": pos, "vel": vel}, reward, torch.zeros_like(reward, dtype=torch.bool)
