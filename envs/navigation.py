"""2-D point navigation meta-tasks: dense Navigation2D, sparse FourCorners and SixCircles.

All three move a point by a clipped displacement per step, ``p' = clip(p + clip(a, +-0.1), box)``,
and compute the reward from the position *after* the move.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .core import BatchedMetaEnv, State, Task

__all__ = ["FourCorners", "Navigation2D", "SixCircles"]


def _uniform(
    shape: tuple[int, ...],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    return torch.rand(shape, generator=generator, device=device, dtype=dtype) * (high - low) + low


class _PointEnv(BatchedMetaEnv):
    """Shared dynamics: ``p' = clip(p + clip(a, action_low, action_high), -bound, bound)``."""

    action_dim = 2
    action_low = -0.1
    action_high = 0.1
    position_bound: float

    def _move(self, state: State, action: Tensor) -> Tensor:
        a = action.clamp(self.action_low, self.action_high)
        return (state["pos"] + a).clamp(-self.position_bound, self.position_bound)

    def _reset(
        self, task: Task, batch_shape: torch.Size, generator: torch.Generator | None
    ) -> State:
        ref = task[self.task_keys[0]]
        # Every episode starts at the origin: no randomness, so the generator is unused.
        return {"pos": ref.new_zeros((*batch_shape, 2))}


class Navigation2D(_PointEnv):
    """Dense 2-D navigation (Finn et al. 2017; the ES-MAML convention).

    * task: ``goal`` ``[*B, 2]`` ~ U[-goal_range, goal_range]^2 (default 1.0 as in ES-MAML;
      learn2learn's Particles2D uses 0.5);
    * state: ``pos`` ``[*B, 2]``, starting at the origin; observation = ``pos``;
    * dynamics: ``p' = clip(p + clip(a, +-0.1), -1, 1)``;
    * reward ``r = -||p' - goal||^2``; terminated when ``r >= -0.01`` (within 0.1 of the goal);
    * horizon 100.
    """

    observation_dim = 2
    max_episode_steps = 100
    position_bound = 1.0
    success_threshold = 0.01
    task_keys = ("goal",)
    task_shapes = {"goal": (2,)}  # noqa: RUF012 - read-only class metadata
    state_shapes = {"pos": (2,)}  # noqa: RUF012
    observation_low = (-1.0, -1.0)
    observation_high = (1.0, 1.0)

    def __init__(
        self,
        goal_range: float = 1.0,
        *,
        max_episode_steps: int | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__(max_episode_steps=max_episode_steps, check_finite=check_finite)
        if not 0.0 < goal_range <= self.position_bound:
            raise ValueError(f"goal_range must be in (0, {self.position_bound}], got {goal_range}")
        self.goal_range = float(goal_range)

    def _sample_task_params(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Task:
        g = self.goal_range
        return {"goal": _uniform((n, 2), -g, g, generator, device, dtype)}

    def _observe(self, state: State, task: Task) -> Tensor:
        return state["pos"]

    def _step(self, state: State, task: Task, action: Tensor) -> tuple[State, Tensor, Tensor]:
        pos = self._move(state, action)
        reward = -(pos - task["goal"]).square().sum(-1)
        return {"pos": pos}, reward, reward >= -self.success_threshold


class FourCorners(_PointEnv):
    """Sparse navigation to one of four corners (ES-MAML).

    * task: ``goal`` ``[*B, 2]``, corner ``task_id mod 4`` of
      ``[(2, 2), (-2, 2), (-2, -2), (2, -2)]`` (counter-clockwise from the first quadrant; see
      :meth:`corner_goals` to build tasks from ids). ``balanced=True`` (default) draws n tasks
      as consecutive ids from a random start, like the reference's pools (train ids 0-49 give
      13/13/12/12 tasks per corner), so a pool's corners differ in count by at most one;
      ``balanced=False`` draws each id uniformly;
    * state: ``pos`` ``[*B, 2]`` from the origin; observation = ``pos``;
    * dynamics: ``p' = clip(p + clip(a, +-0.1), -5, 5)``. The ES-MAML +-0.1 step is kept: a
      corner (distance 2*sqrt(2)) is 20 steps away, well inside the horizon of 100;
    * reward ``r = -4 + max(0, 4 - d^2)`` with ``d = ||p' - goal||``: constant -4 outside the
      radius-2 disc around the goal, so the signal is sparse; never terminates.
    """

    observation_dim = 2
    max_episode_steps = 100
    position_bound = 5.0
    task_keys = ("goal",)
    task_shapes = {"goal": (2,)}  # noqa: RUF012
    state_shapes = {"pos": (2,)}  # noqa: RUF012
    observation_low = (-5.0, -5.0)
    observation_high = (5.0, 5.0)
    corners = ((2.0, 2.0), (-2.0, 2.0), (-2.0, -2.0), (2.0, -2.0))
    radius_sq = 4.0

    def __init__(
        self,
        balanced: bool = True,
        *,
        max_episode_steps: int | None = None,
        check_finite: bool = True,
    ) -> None:
        if not isinstance(balanced, bool):
            raise TypeError(f"balanced must be a bool, got {balanced!r}")
        super().__init__(max_episode_steps=max_episode_steps, check_finite=check_finite)
        self.balanced = balanced

    @classmethod
    def corner_goals(cls, task_ids: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """Goals ``[*shape, 2]`` for integer task ids ``[*shape]`` (corner ``id mod 4``)."""
        table = torch.tensor(cls.corners, dtype=dtype, device=task_ids.device)
        return table[task_ids.long().remainder(4)]

    def _sample_task_params(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Task:
        if self.balanced:
            start = torch.randint(0, 4, (), generator=generator, device=device)
            ids = start + torch.arange(n, device=device)
        else:
            ids = torch.randint(0, 4, (n,), generator=generator, device=device)
        return {"goal": self.corner_goals(ids, dtype)}

    def _observe(self, state: State, task: Task) -> Tensor:
        return state["pos"]

    def _step(self, state: State, task: Task, action: Tensor) -> tuple[State, Tensor, Tensor]:
        pos = self._move(state, action)
        d2 = (pos - task["goal"]).square().sum(-1)
        reward = (self.radius_sq - d2).clamp(min=0.0) - self.radius_sq
        return {"pos": pos}, reward, torch.zeros_like(reward, dtype=torch.bool)


class SixCircles(_PointEnv):
    """Goals on a circle with a hidden subset of correct ones (the ES-MAML "combo" task,
    google-research ``NavigationTaskCombo``).

    * goals ``g_k = sqrt(8) (cos t_k, sin t_k)`` with ``t_k = 2 pi k / num_goals``,
      ``k = 0..num_goals-1`` (the reference's class default is 6 goals, 2 correct; its shipped
      config uses 4 goals, 1 correct: configs/six_circles_hc.yaml);
    * task: ``correct`` ``[*B, num_goals]`` in {0., 1.}: exactly ``num_correct`` goals chosen
      uniformly (the reference), or with ``num_correct=None`` a uniformly random non-empty
      subset;
    * state: ``pos`` ``[*B, 2]`` from the origin and ``visited`` ``[*B, num_goals]`` in {0., 1.};
      observation = ``pos`` (the reference's; the correct subset and the visits stay hidden),
      or ``concat(pos, visited)`` with ``observe_visited=True`` (Markov in the reward);
    * dynamics: ``p' = clip(p + clip(a, +-0.1), -5, 5)``;
    * reward with ``d_k = ||p' - g_k||``::

          r = sum_{k wrong}                 1e4 * min(0, d_k^2 - 4)
            + sum_{k correct, not visited}  -4 + max(0, 4 - d_k^2)

      (wrong goals are heavily penalised within radius 2; each correct goal gives the
      FourCorners signal until visited);
    * a correct goal becomes visited when ``d_k^2 < 0.01``; the step that reaches it is still
      rewarded with the pre-step flags. Never terminates.
    """

    max_episode_steps = 100
    position_bound = 5.0
    goal_radius = math.sqrt(8.0)
    radius_sq = 4.0
    penalty = 1e4
    visit_threshold = 0.01
    task_keys = ("correct",)

    def __init__(
        self,
        num_correct: int | None = 2,
        *,
        num_goals: int = 6,
        observe_visited: bool = False,
        max_episode_steps: int | None = None,
        check_finite: bool = True,
    ) -> None:
        if isinstance(num_goals, bool) or not isinstance(num_goals, int) or num_goals < 1:
            raise ValueError(f"num_goals must be a positive int, got {num_goals!r}")
        if num_correct is not None and not 1 <= num_correct <= num_goals:
            raise ValueError(f"num_correct must be in [1, {num_goals}], got {num_correct}")
        if not isinstance(observe_visited, bool):
            raise TypeError(f"observe_visited must be a bool, got {observe_visited!r}")
        self.num_goals, self.num_correct = num_goals, num_correct
        self.observe_visited = observe_visited
        self.task_shapes = {"correct": (num_goals,)}
        self.state_shapes = {"pos": (2,), "visited": (num_goals,)}
        self.observation_dim = 2 + num_goals if observe_visited else 2
        extra = num_goals if observe_visited else 0
        self.observation_low = (-5.0, -5.0) + (0.0,) * extra
        self.observation_high = (5.0, 5.0) + (1.0,) * extra
        super().__init__(max_episode_steps=max_episode_steps, check_finite=check_finite)
        # Per (device, dtype) copy of the goal table: building it every step would copy
        # host memory to the device inside the hot loop.
        self._goal_cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    @classmethod
    def goals(
        cls, num_goals: int = 6, device: torch.device | str | None = None, dtype=torch.float32
    ) -> Tensor:
        """The goal positions ``[num_goals, 2]`` at angles ``2 pi k / num_goals``."""
        t = torch.arange(num_goals, dtype=torch.float64) * (2 * math.pi / num_goals)
        g = cls.goal_radius * torch.stack([t.cos(), t.sin()], -1)
        return g.to(device=device, dtype=dtype)

    def _sample_task_params(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Task:
        if self.num_correct is None:
            mask = torch.randint(1, 2**self.num_goals, (n, 1), generator=generator, device=device)
            bits = 2 ** torch.arange(self.num_goals, device=device)
            correct = (mask & bits) != 0
        else:
            ranks = torch.rand((n, self.num_goals), generator=generator, device=device).argsort(-1)
            correct = ranks < self.num_correct
        return {"correct": correct.to(dtype)}

    def _reset(
        self, task: Task, batch_shape: torch.Size, generator: torch.Generator | None
    ) -> State:
        ref = task["correct"]
        return {
            "pos": ref.new_zeros((*batch_shape, 2)),
            "visited": ref.new_zeros((*batch_shape, self.num_goals)),
        }

    def _observe(self, state: State, task: Task) -> Tensor:
        if not self.observe_visited:
            return state["pos"]
        return torch.cat([state["pos"], state["visited"]], -1)

    def _step(self, state: State, task: Task, action: Tensor) -> tuple[State, Tensor, Tensor]:
        pos = self._move(state, action)
        key = (pos.device, pos.dtype)
        goals = self._goal_cache.get(key)
        if goals is None:
            goals = self._goal_cache[key] = self.goals(self.num_goals, pos.device, pos.dtype)
        d2 = (pos.unsqueeze(-2) - goals).square().sum(-1)  # [*B, num_goals]
        correct = task["correct"]
        visited = state["visited"]
        wrong_term = self.penalty * (d2 - self.radius_sq).clamp(max=0.0)
        goal_term = (self.radius_sq - d2).clamp(min=0.0) - self.radius_sq
        reward = ((1.0 - correct) * wrong_term + correct * (1.0 - visited) * goal_term).sum(-1)
        reached = (d2 < self.visit_threshold).to(pos.dtype)
        visited = torch.maximum(visited, correct * reached)
        return (
            {"pos": pos, "visited": visited},
            reward,
            torch.zeros_like(reward, dtype=torch.bool),
        )
