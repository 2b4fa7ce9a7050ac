"""A plain gymnasium meta-RL environment: a point in the plane moving to a per-task goal.

Any ``gymnasium.Env`` is a task distribution for esmaml when it has the task interface
(``esmaml.rl.env_resolution.GymMetaEnv``): ``sample_tasks(n, seed)`` returning dicts of
numbers, and a settable ``task``. esmaml steps it through gymnasium's ``SyncVectorEnv``
(on the CPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium
import numpy as np


class PointGoal(gymnasium.Env[np.ndarray, np.ndarray]):
    """2-D point moving to a goal in [-1, 1]^2; reward -||x - goal||, the goal unobserved.

    Args:
        max_step: the largest move per step (an action in [-1, 1]^2 is scaled by it).
        task: the initial task (default: the goal (0.5, 0.5)).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's attribute
    bound = 2.0  # the point stays in [-bound, bound]^2

    def __init__(self, max_step: float = 0.1, task: Mapping[str, Any] | None = None) -> None:
        self.max_step = float(max_step)
        self.observation_space = gymnasium.spaces.Box(-self.bound, self.bound, (2,), np.float32)
        self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.task = task if task is not None else {"goal": [0.5, 0.5]}
        self._x = np.zeros(2, np.float32)

    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        """``n`` goals uniform in [-1, 1]^2, drawn from ``seed`` (else from ``np_random``)."""
        rng = np.random.default_rng(seed) if seed is not None else self.np_random
        return [{"goal": [float(g) for g in goal]} for goal in rng.uniform(-1.0, 1.0, (n, 2))]

    @property
    def task(self) -> dict[str, Any]:
        return {"goal": [float(g) for g in self._goal]}

    @task.setter
    def task(self, task: Mapping[str, Any]) -> None:
        goal = np.asarray(task["goal"], dtype=np.float64)
        if goal.shape != (2,) or not np.isfinite(goal).all():
            raise ValueError(f"task['goal'] must be 2 finite numbers, got {task['goal']!r}")
        self._goal = goal

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._x = np.zeros(2, np.float32)
        return self._x.copy(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        move = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0) * self.max_step
        self._x = np.clip(self._x + move, -self.bound, self.bound).astype(np.float32)
        distance = float(np.linalg.norm(self._x - self._goal))
        return self._x.copy(), -distance, False, False, {"distance": distance}
