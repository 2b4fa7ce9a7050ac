"""The functional, batched meta-environment contract shared by every torch-native environment.

An environment object holds only constants (dimensions, bounds, physics that do not vary per task).
Everything that changes lives in plain ``dict[str, Tensor]`` values the caller owns:

* ``task``  - per-task parameters, each value ``[*B, *event_shape]``;
* ``state`` - per-environment dynamic state, each value ``[*B, *event_shape]``.

``B`` is any tuple of leading batch dims (for ES-MAML typically ``[population, tasks, episodes]``),
so one implementation serves a single episode (``B == ()``), a gymnasium vector env
(``B == (num_envs,)``) and a whole ES population. Steps never loop in Python over the batch and
never read tensor values on the host, so they run on any device without synchronising it.

Validation policy (the hot path is ``step``):

* structure, shape, dtype and device checks read tensor metadata only and are always on;
* the NaN/inf check on actions is controlled by ``check_finite`` (default ``True``). On CPU it
  is an ordinary check raising :class:`ValueError` (no device to synchronise; one numpy pass
  over the action, a few microseconds). On accelerators it uses :func:`torch._assert_async`,
  which queues a device-side assert instead of synchronising; a failure then surfaces at the
  next synchronisation as a ``RuntimeError`` and (on CUDA) poisons the context, so production
  CUDA rollouts that already guarantee finite actions (e.g. ``tanh`` policies) may set
  ``check_finite=False``. Inside ``torch.func`` transforms the value check is skipped because
  data-dependent checks cannot be traced there; metadata checks still run.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "BatchedMetaEnv",
    "Observation",
    "State",
    "Task",
    "params_to_tasks",
    "tasks_to_params",
]

Task = dict[str, Tensor]
State = dict[str, Tensor]
Observation = Tensor


def _is_functorch_tensor(t: Tensor) -> bool:
    # vmap/grad wrap tensors; data-dependent Python checks cannot run on those.
    try:
        return bool(torch._C._functorch.is_functorch_wrapped_tensor(t))
    except AttributeError:  # pragma: no cover - very old torch
        return False


def _all_finite_cpu(t: Tensor) -> bool:
    # numpy's fused isfinite is ~5x cheaper than torch's composite isfinite().all() on the
    # small actions of a step (measured here: 9 us vs 48 us for 4096x2 floats).
    try:
        return bool(np.isfinite(t.detach().numpy()).all())
    except (TypeError, RuntimeError):  # bfloat16, tensors numpy cannot view
        return bool(torch.isfinite(t).all())


def _require_finite(t: Tensor, message: str) -> None:
    """ValueError(message) when ``t`` holds NaN or inf: checked on the CPU at once, on an
    accelerator asynchronously (no host sync per step); skipped inside torch.func transforms."""
    if _is_functorch_tensor(t):
        return
    if t.device.type == "cpu":
        if not _all_finite_cpu(t):
            raise ValueError(message)
    else:
        torch._assert_async(torch.isfinite(t).all(), message)


class BatchedMetaEnv(abc.ABC):
    """Abstract batched meta-RL environment (see the module docstring for the contract).

    Subclasses set the class-level metadata below and implement ``_sample_task_params``,
    ``_reset``, ``_observe`` and ``_step``; the public methods add validation.

    Attributes:
        observation_dim: length of the observation vector.
        action_dim: length of the action vector.
        max_episode_steps: default horizon (used by the gymnasium wrappers for truncation).
        action_low / action_high: box bounds; ``step`` clips actions to them.
        task_keys: names of the task tensors.
        task_shapes: per-key event shape (trailing dims) of the task tensors.
        state_shapes: per-key event shape of the state tensors; the first key carries the
            batch shape and the floating dtype of the state.
        observation_low / observation_high: per-dimension observation bounds (``+-inf`` when
            unbounded), used for gymnasium ``Box`` spaces.
        check_finite: reject NaN/inf actions (see the module docstring for the cost model).
    """

    observation_dim: int
    action_dim: int
    max_episode_steps: int
    action_low: float
    action_high: float
    task_keys: tuple[str, ...]
    task_shapes: Mapping[str, tuple[int, ...]]
    state_shapes: Mapping[str, tuple[int, ...]]
    observation_low: tuple[float, ...]
    observation_high: tuple[float, ...]
    check_finite: bool = True

    def __init__(self, *, max_episode_steps: int | None = None, check_finite: bool = True) -> None:
        if max_episode_steps is not None:
            if int(max_episode_steps) < 1:
                raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
            self.max_episode_steps = int(max_episode_steps)
        self.check_finite = bool(check_finite)

    @property
    def name(self) -> str:
        return type(self).__name__

    def __repr__(self) -> str:
        return (
            f"{self.name}(observation_dim={self.observation_dim}, action_dim={self.action_dim}, "
            f"max_episode_steps={self.max_episode_steps})"
        )

    # ----------------------------------------------------------------------------- public API
    def sample_task_params(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Task:
        """Draw ``n`` tasks; returns a dict whose values have shape ``[n, *event_shape]``.

        Random numbers are drawn on the generator's device (CPU by default) and then moved, so a
        CPU generator gives the same tasks on every device.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        params = self._sample_task_params(n, generator, gen_device, dtype)
        target = torch.device(device) if device is not None else gen_device
        return {k: v.to(device=target, dtype=dtype) for k, v in params.items()}

    def reset(self, task: Mapping[str, Tensor], generator: torch.Generator | None = None) -> State:
        """Initial states for every task in ``task`` (batch shape = the task's batch shape).

        ``generator`` must live on the task's device when given (random draws happen there).
        """
        batch_shape = self.task_batch_shape(task)
        self._check_finite_task(task)
        ref = task[self.task_keys[0]]
        if generator is not None and generator.device.type != ref.device.type:
            raise ValueError(
                f"generator is on {generator.device} but task tensors are on {ref.device}; "
                "pass a generator created with torch.Generator(device=<task device>)"
            )
        return self._reset(dict(task), batch_shape, generator)

    def observe(self, state: Mapping[str, Tensor], task: Mapping[str, Tensor]) -> Tensor:
        """Observation ``[*B, observation_dim]`` of ``state``."""
        batch_shape = self.state_batch_shape(state)
        obs = self._observe(dict(state), dict(task))
        self._check_output(obs, "_observe", "observation", (*batch_shape, self.observation_dim))
        return obs

    def step(
        self, state: Mapping[str, Tensor], task: Mapping[str, Tensor], action: Tensor
    ) -> tuple[State, Tensor, Tensor]:
        """Advance one step: returns ``(next_state, reward [*B], terminated [*B] bool)``.

        Actions are clipped to ``[action_low, action_high]`` before use. ``state`` is not
        modified in place.
        """
        batch_shape = self.state_batch_shape(state)
        self._check_task_keys(task, "task")
        self._check_action(action, state[self._state_key], batch_shape)
        next_state, reward, terminated = self._step(dict(state), dict(task), action)
        self._check_output(reward, "_step", "reward", tuple(batch_shape))
        if not isinstance(terminated, Tensor) or terminated.dtype != torch.bool:
            got = terminated.dtype if isinstance(terminated, Tensor) else type(terminated).__name__
            raise TypeError(f"{self.name}._step must return a bool terminated tensor, got {got}")
        if terminated.shape != batch_shape:
            raise ValueError(
                f"{self.name}._step returned terminated of shape {tuple(terminated.shape)}, "
                f"expected {tuple(batch_shape)} (the batch shape)"
            )
        return next_state, reward, terminated

    def tasks_to_params(
        self,
        tasks: Sequence[Mapping[str, Any]],
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Task:
        """Like :func:`tasks_to_params`, additionally checking keys and shapes for this env."""
        for i, t in enumerate(tasks):
            self._check_task_keys(t, f"tasks[{i}]")
        params = tasks_to_params(tasks, device=device, dtype=dtype)
        params = {k: params[k] for k in self.task_keys}
        self.task_batch_shape(params)
        self._check_finite_task(params)
        return params

    def params_to_tasks(self, params: Mapping[str, Tensor]) -> list[dict[str, Any]]:
        """Like :func:`params_to_tasks`, flattening any batch shape to a list."""
        batch_shape = self.task_batch_shape(params)
        n = math.prod(batch_shape)
        flat = {
            k: params[k].expand(*batch_shape, *self.task_shapes[k]).reshape(n, *self.task_shapes[k])
            for k in self.task_keys
        }
        return params_to_tasks(flat)

    # ----------------------------------------------------------------------- shape helpers
    @property
    def _state_key(self) -> str:
        return next(iter(self.state_shapes))

    def task_batch_shape(self, task: Mapping[str, Tensor]) -> torch.Size:
        """Validate ``task`` (keys, tensor types, event shapes) and return its batch shape.

        Task values may have different but broadcastable batch shapes (e.g. one goal shared by
        all episodes as ``[P, T, 1, 2]`` with ``[P, T, E]`` states).
        """
        self._check_task_keys(task, "task")
        shapes = []
        device = None
        for k in self.task_keys:
            v = task[k]
            if not isinstance(v, Tensor):
                raise TypeError(f"task[{k!r}] must be a torch.Tensor, got {type(v).__name__}")
            if not v.is_floating_point():
                raise TypeError(f"task[{k!r}] must have a floating dtype, got {v.dtype}")
            ev = self.task_shapes[k]
            if v.dim() < len(ev) or tuple(v.shape[v.dim() - len(ev) :]) != ev:
                raise ValueError(
                    f"task[{k!r}] must have shape [*batch, {', '.join(map(str, ev))}]"
                    f" (event shape {ev}), got {tuple(v.shape)}"
                )
            if device is None:
                device = v.device
            elif v.device != device:
                raise ValueError(f"task tensors are on different devices: {device} and {v.device}")
            shapes.append(v.shape[: v.dim() - len(ev)])
        try:
            return torch.Size(torch.broadcast_shapes(*shapes))
        except RuntimeError as e:
            raise ValueError(
                f"task tensors have incompatible batch shapes {[tuple(s) for s in shapes]}"
            ) from e

    def state_batch_shape(self, state: Mapping[str, Tensor]) -> torch.Size:
        """Batch shape of ``state`` (metadata-only check of its keys)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict of tensors, got {type(state).__name__}")
        missing = [k for k in self.state_shapes if k not in state]
        if missing:
            raise ValueError(
                f"state is missing keys {missing}; {self.name} states have keys "
                f"{list(self.state_shapes)} (create one with env.reset(task))"
            )
        ref = state[self._state_key]
        ev = self.state_shapes[self._state_key]
        return ref.shape[: ref.dim() - len(ev)]

    def _check_task_keys(self, task: Mapping[str, Any], arg: str) -> None:
        if not isinstance(task, Mapping):
            raise TypeError(f"{arg} must be a dict, got {type(task).__name__}")
        missing = [k for k in self.task_keys if k not in task]
        if missing:
            raise ValueError(
                f"{arg} is missing keys {missing}; {self.name} tasks need keys "
                f"{list(self.task_keys)} (got {list(task)})"
            )

    def _check_finite_task(self, task: Mapping[str, Tensor]) -> None:
        """A NaN or inf task parameter (a goal, a velocity) would make every reward NaN; checked
        once per reset, not per step."""
        for key in self.task_keys:
            _require_finite(
                task[key],
                f"task[{key!r}] contains NaN or inf values ({self.name}); every task parameter "
                "must be finite",
            )

    def _check_output(self, value: Any, method: str, what: str, expected: tuple[int, ...]) -> None:
        """What a subclass's ``method`` returned: a floating tensor of ``expected`` shape
        (metadata, every call), and finite on the first call of each method when
        ``check_finite``: a value pass every step would cost as much as the action check again,
        and a loss that turns NaN later is caught by the meta-learner's NaN policy."""
        where = f"{self.name}.{method}"
        what = f"{'an' if what[0] in 'aeiou' else 'a'} {what}"
        if not isinstance(value, Tensor):
            raise TypeError(f"{where} must return {what} as a tensor, got {type(value).__name__}")
        if not value.is_floating_point():
            raise TypeError(f"{where} returned {what} of dtype {value.dtype}; it must be floating")
        if tuple(value.shape) != expected:
            detail = f"observation_dim {self.observation_dim}" if "observation" in what else ""
            raise ValueError(
                f"{where} returned {what} of shape {tuple(value.shape)}, expected {expected}"
                + (f" (batch shape + {detail})" if detail else " (the batch shape)")
            )
        checked = self.__dict__.setdefault("_finite_checked", set())
        if self.check_finite and method not in checked:
            _require_finite(
                value,
                f"{where} returned {what} with NaN or inf values; set check_finite=False to "
                "skip this check",
            )
            checked.add(method)

    def _check_action(self, action: Any, ref: Tensor, batch_shape: torch.Size) -> None:
        if not isinstance(action, Tensor):
            raise TypeError(f"action must be a torch.Tensor, got {type(action).__name__}")
        if action.dtype != ref.dtype:
            raise TypeError(
                f"action has dtype {action.dtype}, but this {self.name} state is {ref.dtype}; "
                f"pass a {ref.dtype} action (e.g. action.to({ref.dtype}))"
            )
        if action.device != ref.device:
            raise ValueError(
                f"action is on device {action.device}, but the state is on {ref.device}; "
                f"move it with action.to({str(ref.device)!r})"
            )
        expected = (*batch_shape, self.action_dim)
        if tuple(action.shape) != expected:
            raise ValueError(
                f"action has shape {tuple(action.shape)}, expected {expected} "
                f"(batch shape {tuple(batch_shape)} + action_dim {self.action_dim})"
            )
        if self.check_finite:
            _require_finite(
                action,
                f"action contains NaN or inf values ({self.name}.step); set check_finite=False "
                "to skip this check",
            )

    # ------------------------------------------------------------------------ subclass API
    @abc.abstractmethod
    def _sample_task_params(
        self, n: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> Task:
        """Draw ``n`` tasks on ``device`` (the generator's device)."""

    @abc.abstractmethod
    def _reset(
        self, task: Task, batch_shape: torch.Size, generator: torch.Generator | None
    ) -> State:
        """Initial state with batch shape ``batch_shape``."""

    @abc.abstractmethod
    def _observe(self, state: State, task: Task) -> Tensor:
        """Observation of an already validated state."""

    @abc.abstractmethod
    def _step(self, state: State, task: Task, action: Tensor) -> tuple[State, Tensor, Tensor]:
        """One step on validated inputs."""


def tasks_to_params(
    tasks: Sequence[Mapping[str, Any]],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Task:
    """Stack a list of JSON-style task dicts into tensors ``{key: [n, *event_shape]}``.

    Every task must have the same keys; values are numbers or (nested) lists of numbers.
    """
    if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
        raise TypeError(f"tasks must be a list of dicts, got {type(tasks).__name__}")
    if len(tasks) == 0:
        raise ValueError("tasks must be a non-empty list of dicts")
    keys = list(tasks[0])
    for i, t in enumerate(tasks):
        if not isinstance(t, Mapping):
            raise TypeError(f"tasks[{i}] must be a dict, got {type(t).__name__}")
        if set(t) != set(keys):
            raise ValueError(f"tasks[{i}] has keys {sorted(t)}, but tasks[0] has {sorted(keys)}")
    out: Task = {}
    for k in keys:
        try:
            out[k] = torch.stack([torch.as_tensor(t[k], dtype=dtype, device=device) for t in tasks])
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"task values for key {k!r} are not numbers of one shape: {e}") from e
    return out


def params_to_tasks(params: Mapping[str, Tensor]) -> list[dict[str, Any]]:
    """Inverse of :func:`tasks_to_params`: ``{key: [n, ...]}`` -> ``n`` JSON-serialisable dicts.

    Scalars become Python floats and vectors nested lists of floats.
    """
    if not params:
        raise ValueError("params must be a non-empty dict of tensors")
    ns = {k: v.shape[0] if v.dim() else None for k, v in params.items()}
    if None in ns.values() or len(set(ns.values())) != 1:
        raise ValueError(f"params values must share their leading dim n, got shapes {ns}")
    n = next(iter(ns.values()))
    host = {k: v.detach().to("cpu", torch.float64).tolist() for k, v in params.items()}
    return [{k: host[k][i] for k in params} for i in range(n)]
