"""MuJoCo locomotion meta-tasks on gymnasium's v5 environments (CPU, one env per process slot).

Each class is a ``gymnasium.Env`` that owns one unwrapped gymnasium MuJoCo env and replaces its
reward by a task-dependent one recomputed from the step ``info`` (so the physics, observations
and termination are exactly gymnasium's). They have the learn2learn meta interface
(``sample_tasks``, ``set_task``, ``get_task``, plus a settable ``task`` property) and are
registered as ``esmaml/<ClassName>-v0`` with a 200-step horizon.

Rewards (``v_x, v_y`` = torso velocity from ``info``, ``a`` = action):

* ``HalfCheetahForwardBackward``: ``dir * v_x - ctrl_cost``, ``dir in {-1, +1}``; with
  ``dir = -1`` this is bit-for-bit ``HalfCheetah-v5`` with ``forward_reward_weight=-1.0``.
* ``HalfCheetahGoalVelocity``: ``-|v_x - v*| - 0.05 ||a||^2``, ``v* ~ U[0, 2]``.
* ``AntForwardBackward``: ``(dir * v_x + healthy) - (ctrl_cost + contact_cost)`` with the
  ProMP/learn2learn coefficients ctrl 0.5, contact 5e-4, survive 1 (gymnasium's Ant-v5 defaults).
* ``AntDirection``: ``(d . (v_x, v_y) + healthy) - (ctrl_cost + contact_cost)``, ``d`` a unit
  vector at a uniform random angle.

Vectorise with :func:`make_mujoco_vector` (gymnasium's ``SyncVectorEnv``; on 2 cores the async
variant is slower). Training steps them through :mod:`envs.mujoco_batch` instead: many copies as
rows of MuJoCo's threaded batch, with the same numbers bit for bit (docs/mujoco.md).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import gymnasium
import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from .gym_wrappers import set_vector_tasks

__all__ = [
    "AntDirection",
    "AntForwardBackward",
    "HalfCheetahForwardBackward",
    "HalfCheetahGoalVelocity",
    "MujocoMetaEnv",
    "make_mujoco_vector",
    "mujoco_warnings_to_python",
]

_DEFAULT_TASK_SEED = 0

# gymnasium's v5 XML files use this compiler attribute, deprecated in MuJoCo 4; nothing a user
# of these envs can act on.
_IGNORED_MUJOCO_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


def _forward_mujoco_warning(message: str) -> None:
    if not any(m in message for m in _IGNORED_MUJOCO_WARNINGS):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


@contextlib.contextmanager
def mujoco_warnings_to_python() -> Iterator[None]:
    """Route MuJoCo warnings to Python's ``warnings`` while building a model.

    Without a handler MuJoCo prints them and appends them to ``MUJOCO_LOG.TXT`` in the current
    directory (a stray file in whatever repository the envs run from). A handler someone else
    installed is left alone.
    """
    if mujoco.get_mju_user_warning() is not None:
        yield
        return
    mujoco.set_mju_user_warning(_forward_mujoco_warning)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(None)


class MujocoMetaEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """Base class: owns ``self.base_env`` (an unwrapped gymnasium MuJoCo env).

    Subclasses define ``base_env_cls``, ``base_env_kwargs``, ``task_keys``, ``_sample`` (task
    dicts from a numpy generator), ``_validate`` (normalised task dict) and ``task_reward``
    (scalar or batched, see there).

    Args:
        task: initial task dict (default: one sampled with seed 0).
        render_mode: passed to the MuJoCo env.
        **kwargs: overrides of the MuJoCo env's constructor arguments.
    """

    base_env_cls: type[MujocoEnv]
    base_env_kwargs: Mapping[str, Any] = {}
    task_keys: tuple[str, ...]

    def __init__(
        self,
        task: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        with mujoco_warnings_to_python():
            self.base_env = self.base_env_cls(
                render_mode=render_mode, **{**self.base_env_kwargs, **kwargs}
            )
        self.observation_space = self.base_env.observation_space
        self.action_space = self.base_env.action_space
        self.metadata = self.base_env.metadata
        self.render_mode = render_mode
        if task is None:
            task = self._sample(np.random.default_rng(_DEFAULT_TASK_SEED), 1)[0]
        self.set_task(task)

    # ------------------------------------------------------------------- meta interface
    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        """``n`` task dicts, drawn from ``seed`` or else from the env's ``np_random``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = np.random.default_rng(seed) if seed is not None else self.np_random
        return self._sample(rng, n)

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Switch the task (takes effect from the next step)."""
        if not isinstance(task, Mapping):
            raise TypeError(f"task must be a dict, got {type(task).__name__}")
        missing = [k for k in self.task_keys if k not in task]
        if missing:
            raise ValueError(
                f"task is missing keys {missing}; {type(self).__name__} tasks need keys "
                f"{list(self.task_keys)} (got {list(task)})"
            )
        for key in self.task_keys:
            try:
                finite = bool(np.isfinite(np.asarray(task[key], dtype=np.float64)).all())
            except (TypeError, ValueError):
                finite = True  # not numbers: _validate names the problem
            if not finite:
                raise ValueError(
                    f"task[{key!r}] contains NaN or inf values ({type(self).__name__}); every "
                    "task parameter must be finite"
                )
        self._task = self._validate(task)

    def get_task(self) -> dict[str, Any]:
        """The current task as a JSON-serialisable dict."""
        return {k: (list(v) if isinstance(v, list) else v) for k, v in self._task.items()}

    @property
    def task(self) -> dict[str, Any]:
        """The current task (settable, so ``SyncVectorEnv.set_attr('task', tasks)`` works)."""
        return self.get_task()

    @task.setter
    def task(self, task: Mapping[str, Any]) -> None:
        self.set_task(task)

    # ---------------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        return self.base_env.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, base_reward, terminated, truncated, info = self.base_env.step(action)
        reward = float(self.task_reward(self._task, info, np.asarray(action)))
        info["reward_base"] = base_reward
        return obs, reward, terminated, truncated, info

    def render(self) -> Any:
        return self.base_env.render()

    def close(self) -> None:
        self.base_env.close()

    # ------------------------------------------------------------------------ subclass API
    def _sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def task_reward(
        self, task: Mapping[str, Any], info: Mapping[str, Any], action: np.ndarray
    ) -> Any:
        """The task's reward from gymnasium's step ``info`` terms and the action.

        One implementation for both paths: scalars (this env's ``step``: ``task`` is a task
        dict, ``info`` gymnasium's, ``action [act_dim]``) and arrays over a leading batch dim
        (:class:`envs.mujoco_batch.MujocoMetaBatch`: task values ``[n]`` or ``[n, 2]``, info
        terms ``[n]``, ``action [n, act_dim]``), with the same operations in the same order, so
        both give the same floats.
        """
        raise NotImplementedError


def _direction_sign(task: Mapping[str, Any]) -> dict[str, Any]:
    d = float(task["direction"])
    if d not in (-1.0, 1.0):
        raise ValueError(f"task['direction'] must be -1.0 or 1.0, got {task['direction']!r}")
    return {"direction": d}


def _sample_signs(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    return [{"direction": float(s)} for s in rng.choice([-1.0, 1.0], size=n)]


class HalfCheetahForwardBackward(MujocoMetaEnv):
    """HalfCheetah-v5 running forward (``direction = +1``) or backward (``-1``), each p = 1/2.

    Reward ``direction * x_velocity - ctrl_cost`` (ctrl weight 0.1, gymnasium's default).
    """

    base_env_cls = HalfCheetahEnv
    task_keys = ("direction",)

    def _sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        return _sample_signs(rng, n)

    def _validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        return _direction_sign(task)

    def task_reward(
        self, task: Mapping[str, Any], info: Mapping[str, Any], action: np.ndarray
    ) -> Any:
        # Same operation order as HalfCheetahEnv._get_rew, so dir=-1 matches
        # forward_reward_weight=-1 exactly.
        return task["direction"] * info["x_velocity"] - (-info["reward_ctrl"])


class HalfCheetahGoalVelocity(MujocoMetaEnv):
    """HalfCheetah-v5 tracking a forward speed ``goal_velocity`` ~ U[0, max_goal_velocity].

    Reward ``-|x_velocity - goal_velocity| - 0.05 ||a||^2`` in float64 (the MuJoCo env is
    built with ``ctrl_cost_weight=0.05`` so ``info['reward_ctrl']`` reports the same term).

    Args:
        max_goal_velocity: upper end of the task range (2.0; some papers use 3.0).
    """

    base_env_cls = HalfCheetahEnv
    base_env_kwargs: Mapping[str, Any] = {"ctrl_cost_weight": 0.05}
    task_keys = ("goal_velocity",)
    ctrl_cost_weight = 0.05

    def __init__(
        self,
        task: Mapping[str, Any] | None = None,
        render_mode: str | None = None,
        max_goal_velocity: float = 2.0,
        **kwargs: Any,
    ) -> None:
        if not max_goal_velocity > 0:
            raise ValueError(f"max_goal_velocity must be > 0, got {max_goal_velocity}")
        self.max_goal_velocity = float(max_goal_velocity)
        super().__init__(task=task, render_mode=render_mode, **kwargs)

    def _sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        return [{"goal_velocity": float(v)} for v in rng.uniform(0.0, self.max_goal_velocity, n)]

    def _validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        v = float(task["goal_velocity"])
        if not math.isfinite(v):
            raise ValueError(f"task['goal_velocity'] must be finite, got {v}")
        return {"goal_velocity": v}

    def task_reward(
        self, task: Mapping[str, Any], info: Mapping[str, Any], action: np.ndarray
    ) -> Any:
        # float64 control cost: gymnasium's is float32 for float32 actions.
        squares = np.square(np.asarray(action, dtype=np.float64))
        ctrl = self.ctrl_cost_weight * np.sum(squares, axis=-1)
        return -abs(info["x_velocity"] - task["goal_velocity"]) - ctrl


_ANT_KWARGS: Mapping[str, Any] = {
    "ctrl_cost_weight": 0.5,
    "contact_cost_weight": 5e-4,
    "healthy_reward": 1.0,
}


def _ant_reward(forward: Any, info: Mapping[str, Any]) -> Any:
    # AntEnv._get_rew order: (forward + healthy) - (ctrl + contact).
    return (forward + info["reward_survive"]) - (-info["reward_ctrl"] + -info["reward_contact"])


class AntForwardBackward(MujocoMetaEnv):
    """Ant-v5 walking forward (``direction = +1``) or backward (``-1``), each p = 1/2.

    Reward ``(direction * x_velocity + healthy_reward) - (ctrl_cost + contact_cost)`` with
    ctrl 0.5, contact 5e-4, survive 1; terminates when unhealthy as Ant-v5.
    """

    base_env_cls = AntEnv
    base_env_kwargs = _ANT_KWARGS
    task_keys = ("direction",)

    def _sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        return _sample_signs(rng, n)

    def _validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        return _direction_sign(task)

    def task_reward(
        self, task: Mapping[str, Any], info: Mapping[str, Any], action: np.ndarray
    ) -> Any:
        return _ant_reward(task["direction"] * info["x_velocity"], info)


class AntDirection(MujocoMetaEnv):
    """Ant-v5 walking along a planar unit vector ``direction = (cos t, sin t)``, t ~ U[0, 2 pi).

    Reward ``(direction . (x_velocity, y_velocity) + healthy_reward) - (ctrl_cost +
    contact_cost)`` with the AntForwardBackward coefficients. Task directions must be unit
    vectors (within 1e-6).
    """

    base_env_cls = AntEnv
    base_env_kwargs = _ANT_KWARGS
    task_keys = ("direction",)

    def _sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
        angles = rng.uniform(0.0, 2 * math.pi, n)
        return [{"direction": [math.cos(t), math.sin(t)]} for t in angles]

    def _validate(self, task: Mapping[str, Any]) -> dict[str, Any]:
        d = np.asarray(task["direction"], dtype=np.float64)
        if d.shape != (2,) or not np.all(np.isfinite(d)) or abs(np.hypot(*d) - 1.0) > 1e-6:
            raise ValueError(f"task['direction'] must be a unit 2-vector: {task['direction']!r}")
        return {"direction": [float(d[0]), float(d[1])]}

    def task_reward(
        self, task: Mapping[str, Any], info: Mapping[str, Any], action: np.ndarray
    ) -> Any:
        direction = np.asarray(task["direction"], dtype=np.float64)  # [2] or [n, 2]
        dx, dy = direction[..., 0], direction[..., 1]
        return _ant_reward(dx * info["x_velocity"] + dy * info["y_velocity"], info)


def make_mujoco_vector(
    env_id: str,
    num_envs: int,
    tasks: Sequence[Mapping[str, Any]] | None = None,
    *,
    autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP,
    **kwargs: Any,
) -> SyncVectorEnv:
    """A ``SyncVectorEnv`` of ``num_envs`` copies of ``env_id``, sub-env ``i`` on ``tasks[i]``.

    Args:
        env_id: a registered id, e.g. ``'esmaml/HalfCheetahForwardBackward-v0'``.
        num_envs: number of sub-envs.
        tasks: one task dict per sub-env; ``None`` keeps each env's default task.
        autoreset_mode: defaults to SAME_STEP, as :class:`envs.BatchedMetaVectorEnv`.
        **kwargs: passed to ``gymnasium.make`` for every sub-env.

    Tasks can be changed later with :func:`envs.set_vector_tasks` (``set_attr('task', ...)``).
    """
    vec = gymnasium.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": autoreset_mode},
        **kwargs,
    )
    assert isinstance(vec, SyncVectorEnv)
    if tasks is not None:
        set_vector_tasks(vec, tasks)
    return vec
