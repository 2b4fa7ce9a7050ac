"""A torch-native batched meta-RL environment: a point on a line moving to a per-task goal."""

from __future__ import annotations

from typing import ClassVar

import torch

from envs.core import BatchedMetaEnv


class GoalLine(BatchedMetaEnv):
    """1-D point moving to a goal on a line; reward -|x - goal|."""

    observation_dim, action_dim, max_episode_steps = 1, 1, 20
    action_low, action_high = -0.1, 0.1
    task_keys = ("goal",)
    task_shapes: ClassVar = {"goal": (1,)}
    state_shapes: ClassVar = {"x": (1,)}
    observation_low, observation_high = (-float("inf"),), (float("inf"),)

    def _sample_task_params(self, n, generator, device, dtype):
        return {"goal": torch.rand(n, 1, generator=generator, device=device, dtype=dtype) * 2 - 1}

    def _reset(self, task, batch_shape, generator):
        goal = task["goal"]
        return {"x": torch.zeros(*batch_shape, 1, dtype=goal.dtype, device=goal.device)}

    def _observe(self, state, task):
        return state["x"]

    def _step(self, state, task, action):
        x = state["x"] + action.clamp(self.action_low, self.action_high)
        reward = -(x - task["goal"]).abs().squeeze(-1)
        return {"x": x}, reward, torch.zeros_like(reward, dtype=torch.bool)
