"""The MuJoCo meta-tasks batched: many models stepped by MuJoCo's threaded ``mujoco.batch``.

:class:`MujocoMetaBatch` holds ``num_sims`` copies of one meta-task of :mod:`envs.mujoco`
(HalfCheetahForwardBackward, HalfCheetahGoalVelocity, AntForwardBackward, AntDirection) as
the state rows of one ``mujoco.batch.Batch``: a control step is one ``Batch.step`` call of
``frame_skip`` substeps on ``threads`` threads (the calling thread included), and the caller
applies its policy to all the observations at once between calls (see
:func:`esmaml.rl.rollout_mujoco.rollout_mujoco`).

Semantics are gymnasium v5's, to the bit. For the same reset seed and the same actions a
simulation's observations, rewards and terminations equal those of the gymnasium env
(``gymnasium.make('esmaml/<Name>-v0')``), which ``tests/test_envs_mujoco_batch.py`` checks
with ``==``:

* reset: ``mj_resetData``, then ``qpos = init_qpos + U(-s, s)`` and ``qvel = init_qvel + s *
  N(0, 1)`` drawn from ``gymnasium.utils.seeding.np_random(seed)`` in gymnasium's order, then
  ``mj_forward``;
* step: ``ctrl = action``, ``frame_skip`` calls of ``mj_step`` (``mujoco.batch`` is
  bit-identical to a loop over one ``MjData`` per simulation, at any thread count), and for
  the Ant ``mj_rnePostConstraint`` after the step, as gymnasium's ``_step_mujoco_simulation``
  (the contact forces ``cfrc_ext`` of the observation and the contact cost come from it; a
  force sensor computing them inside the step gives other values, because gymnasium's call
  sees the state after the last substep's integration). The batch keeps one ``MjData`` per Ant
  simulation (``persistent=True``) for that call;
* velocities ``(x_after - x_before) / dt`` (HalfCheetah: ``qpos[0]``; Ant: the main body's
  ``xpos[:2]``, one substep behind the state as with ``mj_step``);
* gymnasium's reward terms with numpy's arithmetic on the same dtypes (a float32 action
  gives a float32 control cost, as gymnasium's), and the task reward from the meta-env's own
  :meth:`~envs.mujoco.MujocoMetaEnv.task_reward`, which takes arrays;
* Ant termination ``not (finite(qpos, qvel) and z_min <= qpos[2] <= z_max)`` when
  ``terminate_when_unhealthy``. There is no truncation: the caller owns the horizon.

Every simulation's arithmetic is its own: no result depends on the other rows of the batch,
on which rows are stepped together, or on the thread count.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import mujoco
import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.utils import seeding
from mujoco.batch import Batch

from . import mujoco as meta_envs
from .mujoco import MujocoMetaEnv, mujoco_warnings_to_python

__all__ = ["BATCHED_MUJOCO_ENVS", "MetaTaskConstants", "MujocoMetaBatch", "default_threads"]

BATCHED_MUJOCO_ENVS: dict[str, type[MujocoMetaEnv]] = {
    cls.__name__: cls
    for cls in (
        meta_envs.HalfCheetahForwardBackward,
        meta_envs.HalfCheetahGoalVelocity,
        meta_envs.AntForwardBackward,
        meta_envs.AntDirection,
    )
}


def default_threads() -> int:
    """The cores given to this process: a Ray actor's assigned CPUs, else the CPU affinity.

    ``OMP_NUM_THREADS`` is not consulted: it sizes torch's intra-op pool (often 1 here, see
    the README), while the physics threads run only between policy calls.
    """
    ray = sys.modules.get("ray")  # only if this process already uses Ray
    if ray is not None and ray.is_initialized():
        try:
            context = ray.get_runtime_context()
            if context.worker.mode == ray.WORKER_MODE:
                cpus = context.get_assigned_resources().get("CPU")
                if cpus:
                    return max(1, int(cpus))
        except Exception:  # an API change in Ray must not break the env
            pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _env_class(env: str | type[MujocoMetaEnv]) -> type[MujocoMetaEnv]:
    if isinstance(env, type) and issubclass(env, MujocoMetaEnv):
        if env.__name__ not in BATCHED_MUJOCO_ENVS:
            raise ValueError(
                f"env={env.__name__} has no batched path; batched: {sorted(BATCHED_MUJOCO_ENVS)}"
            )
        return env
    if not isinstance(env, str):
        raise TypeError(f"env must be a MuJoCo meta-task name, got {type(env).__name__}")
    name = env.split("/", 1)[1].rsplit("-v", 1)[0] if env.startswith("esmaml/") else env
    if name not in BATCHED_MUJOCO_ENVS:
        raise ValueError(f"env={env!r} has no batched path; valid: {sorted(BATCHED_MUJOCO_ENVS)}")
    return BATCHED_MUJOCO_ENVS[name]


class MetaTaskConstants:
    """A meta-task's gymnasium constants, read from one built env (shared by the CPU batch
    and :class:`envs.mujoco_warp.MujocoWarpMetaBatch`)."""

    meta_env: MujocoMetaEnv
    model: mujoco.MjModel

    def _read_task(self, cls: type[MujocoMetaEnv], env_kwargs: dict[str, Any]) -> None:
        if env_kwargs.get("render_mode") is not None:
            raise ValueError("render_mode must be None: the batched path does not render")
        env_kwargs.pop("render_mode", None)
        with mujoco_warnings_to_python():
            self.meta_env = cls(**env_kwargs)
        base = self.meta_env.base_env
        self.name = cls.__name__
        self.model = base.model
        self.frame_skip = int(base.frame_skip)
        self.dt = base.dt  # Python float, as gymnasium divides by it
        self.init_qpos, self.init_qvel = base.init_qpos.copy(), base.init_qvel.copy()
        self.reset_noise_scale = base._reset_noise_scale
        self.ctrl_cost_weight = base._ctrl_cost_weight
        self.observation_dim = int(base.observation_space.shape[0])
        self.action_dim = int(self.model.nu)
        self.action_low = base.action_space.low.copy()
        self.action_high = base.action_space.high.copy()
        self.task_keys = self.meta_env.task_keys
        self.is_ant = isinstance(base, AntEnv)
        if not self.is_ant and not isinstance(base, HalfCheetahEnv):  # pragma: no cover
            raise TypeError(f"{self.name}: unsupported base env {type(base).__name__}")
        # leading qpos entries left out of the observation (x, or x and y)
        self._skip = (2 if self.is_ant else 1) * int(
            base._exclude_current_positions_from_observation
        )
        if self.is_ant:
            self.main_body = int(self.model.body(base._main_body).id)
            self.contact_cost_weight = base._contact_cost_weight
            self.contact_force_range = base._contact_force_range
            self.healthy_reward = base._healthy_reward
            self.healthy_z_range = base._healthy_z_range
            self.terminate_when_unhealthy = bool(base._terminate_when_unhealthy)
            self.include_cfrc_ext = bool(base._include_cfrc_ext_in_observation)

    def validated_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Task dicts, checked as the meta-env's ``set_task`` checks them, as float64 arrays
        ``{key: [n, ...]}``."""
        if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
            raise TypeError(f"tasks must be a list of task dicts, got {type(tasks).__name__}")
        checked = []
        for i, task in enumerate(tasks):
            try:
                self.meta_env.set_task(task)
            except (TypeError, ValueError) as e:
                raise type(e)(f"tasks[{i}]: {e}") from e
            checked.append(self.meta_env.get_task())
        return {k: np.array([t[k] for t in checked], dtype=np.float64) for k in self.task_keys}

    def reset_states(self, seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """``(qpos [n, nq], qvel [n, nv])``: gymnasium's reset of each seed.

        MujocoEnv.reset_model's draws, in its order, from a generator seeded as
        ``gymnasium.Env.reset(seed=...)`` seeds ``np_random``.
        """
        nq, nv, scale = self.model.nq, self.model.nv, self.reset_noise_scale
        qpos = np.empty((len(seeds), nq))
        qvel = np.empty((len(seeds), nv))
        for k, seed in enumerate(seeds):
            rng, _ = seeding.np_random(int(seed))
            qpos[k] = self.init_qpos + rng.uniform(low=-scale, high=scale, size=nq)
            qvel[k] = self.init_qvel + scale * rng.standard_normal(nv)
        return qpos, qvel


class MujocoMetaBatch(MetaTaskConstants):
    """``num_sims`` simulations of one MuJoCo meta-task, stepped together on threads.

    Args:
        env: the meta-task's name (``'HalfCheetahForwardBackward'`` or its registered id
            ``'esmaml/HalfCheetahForwardBackward-v0'``) or class.
        num_sims: number of simulations (rows).
        threads: physics threads, the calling one included (default :func:`default_threads`).
        **env_kwargs: the meta-task's constructor arguments (gymnasium's ``HalfCheetah-v5`` /
            ``Ant-v5`` options such as ``ctrl_cost_weight``, ``healthy_z_range``,
            ``reset_noise_scale``, ``exclude_current_positions_from_observation``, and the
            task options such as ``max_goal_velocity``).

    ``set_tasks`` gives each simulation its task, ``reset(seeds)`` starts episodes and
    ``step(actions)`` advances them; both take optional ``ids`` (sorted unique row indices) to
    act on some rows only, e.g. the episodes still running.
    """

    def __init__(
        self,
        env: str | type[MujocoMetaEnv],
        num_sims: int,
        *,
        threads: int | None = None,
        **env_kwargs: Any,
    ) -> None:
        cls = _env_class(env)
        if isinstance(num_sims, bool) or not isinstance(num_sims, int) or num_sims < 1:
            raise ValueError(f"num_sims must be a positive int, got {num_sims!r}")
        if threads is None:
            threads = default_threads()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive int, got {threads!r}")
        self._read_task(cls, env_kwargs)
        self.num_sims, self.threads = num_sims, threads
        if self.is_ant:
            # gymnasium's contact forces come from mj_rnePostConstraint on each env's own
            # MjData after the step: keep one per simulation (see the module docstring).
            self._scratch = mujoco.MjData(self.model)
            self.cfrc_ext = np.zeros((num_sims, self.model.nbody, 6))
        self.batch = Batch(self.model, num_sims, nthread=threads, persistent=self.is_ant)
        self._qpos, self._qvel = self.batch.bind("qpos"), self.batch.bind("qvel")
        self._ctrl = self.batch.bind("ctrl")
        self._xpos = self.batch.bind("xpos") if self.is_ant else None
        self._tasks: dict[str, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"MujocoMetaBatch({self.name}, num_sims={self.num_sims}, threads={self.threads})"

    # ------------------------------------------------------------------------------- tasks
    def set_tasks(self, tasks: Sequence[Mapping[str, Any]], ids: Any = None) -> None:
        """Give row ``ids[k]`` (default: row ``k``) the task ``tasks[k]``; takes effect at the
        next step. Tasks are validated as the meta-env's ``set_task`` does."""
        rows = self._rows(ids)
        if isinstance(tasks, Sequence) and len(tasks) != len(rows):
            raise ValueError(
                f"tasks must be a list of {len(rows)} task dicts (one per row), got {len(tasks)}"
            )
        values = self.validated_tasks(tasks)
        if self._tasks is None:
            self._tasks = {k: np.zeros((self.num_sims, *v.shape[1:])) for k, v in values.items()}
        for k, v in values.items():
            self._tasks[k][rows] = v

    def tasks_of(self, ids: Any = None) -> dict[str, np.ndarray]:
        """The rows' tasks as arrays ``{key: [n, ...]}``."""
        if self._tasks is None:
            raise RuntimeError("call set_tasks() before stepping")
        rows = self._rows(ids)
        return {k: v[rows] for k, v in self._tasks.items()}

    # ------------------------------------------------------------------------ simulation
    def reset(self, seeds: Sequence[int], ids: Any = None) -> np.ndarray:
        """Start episodes: row ``ids[k]`` as gymnasium's ``reset(seed=seeds[k])``.

        Returns:
            the rows' first observations, ``[n, observation_dim]`` float64.
        """
        rows = self._rows(ids)
        if len(seeds) != len(rows):
            raise ValueError(f"seeds must hold one seed per row ({len(rows)}), got {len(seeds)}")
        qpos, qvel = self.reset_states(seeds)
        batch_ids = None if len(rows) == self.num_sims else rows
        # mj_resetData, the state written, then mj_forward (MujocoEnv.set_state).
        self.batch.reset(batch_ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        self._qpos[rows] = qpos
        self._qvel[rows] = qvel
        self.batch.forward(batch_ids)
        if self.is_ant:
            self.cfrc_ext[rows] = 0.0  # mj_resetData's zeros; mj_forward does not compute them
        return self._observe(rows)

    def step(
        self, actions: np.ndarray, ids: Any = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One control step of the rows ``ids`` (default: all).

        Args:
            actions: ``[n, action_dim]`` (float32 actions give gymnasium's float32 control
                cost, as with ``env.step``).
            ids: sorted unique row indices, a boolean mask over the rows, or None for all.

        Returns:
            ``(observations [n, observation_dim] float64, rewards [n] float64,
            terminated [n] bool)``.
        """
        rows = self._rows(ids)
        actions = np.asarray(actions)
        if actions.shape != (len(rows), self.action_dim):
            raise ValueError(
                f"actions must have shape ({len(rows)}, {self.action_dim}) (one action per "
                f"stepped row), got {actions.shape}"
            )
        tasks = self.tasks_of(rows)
        batch_ids = None if len(rows) == self.num_sims else rows
        if self.is_ant:
            before = self._xpos[rows, self.main_body, :2].copy()
        else:
            before = self._qpos[rows, 0].copy()
        self._ctrl[rows] = actions
        self.batch.step(batch_ids, nstep=self.frame_skip)
        info: dict[str, np.ndarray] = {}
        # HalfCheetahEnv / AntEnv.control_cost row by row (numpy sums a row of a 2-D array as
        # it sums a 1-D one; the tests check the bits).
        ctrl_cost = self.ctrl_cost_weight * np.sum(np.square(actions), axis=-1)
        info["reward_ctrl"] = -ctrl_cost
        if self.is_ant:
            data, model = self._scratch, self.model
            for row in rows.tolist():
                self.batch.get_data(row, data)
                mujoco.mj_rnePostConstraint(model, data)
                self.cfrc_ext[row] = data.cfrc_ext
            velocity = (self._xpos[rows, self.main_body, :2] - before) / self.dt
            info["x_velocity"], info["y_velocity"] = velocity[:, 0], velocity[:, 1]
            low, high = self.contact_force_range
            forces = np.clip(self.cfrc_ext[rows], low, high).reshape(len(rows), -1)
            info["reward_contact"] = -(self.contact_cost_weight * np.sum(np.square(forces), axis=1))
            qpos, qvel = self._qpos[rows], self._qvel[rows]
            z_min, z_max = self.healthy_z_range
            healthy = (
                np.isfinite(qpos).all(1)
                & np.isfinite(qvel).all(1)
                & (z_min <= qpos[:, 2])
                & (qpos[:, 2] <= z_max)
            )
            info["reward_survive"] = healthy * self.healthy_reward
            terminated = ~healthy if self.terminate_when_unhealthy else np.zeros_like(healthy)
        else:
            info["x_velocity"] = (self._qpos[rows, 0] - before) / self.dt
            terminated = np.zeros(len(rows), dtype=bool)
        reward = np.asarray(self.meta_env.task_reward(tasks, info, actions), dtype=np.float64)
        return self._observe(rows), reward, terminated

    # ---------------------------------------------------------------------------- helpers
    def _observe(self, rows: np.ndarray) -> np.ndarray:
        parts = [self._qpos[rows, self._skip :], self._qvel[rows]]
        if self.is_ant and self.include_cfrc_ext:
            low, high = self.contact_force_range
            parts.append(np.clip(self.cfrc_ext[rows, 1:], low, high).reshape(len(rows), -1))
        return np.concatenate(parts, axis=1)

    def _rows(self, ids: Any) -> np.ndarray:
        """``ids`` as sorted unique int32 row indices (all rows for None)."""
        if ids is None:
            return np.arange(self.num_sims, dtype=np.int32)
        rows = np.asarray(ids)
        if rows.dtype == bool:
            if rows.shape != (self.num_sims,):
                raise ValueError(f"a boolean ids mask must have shape ({self.num_sims},)")
            return np.flatnonzero(rows).astype(np.int32)
        if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
            raise ValueError(f"ids must be a 1-D array of row indices, got {rows!r}")
        if rows.size and (
            rows[0] < 0 or rows[-1] >= self.num_sims or np.any(rows[1:] <= rows[:-1])
        ):
            raise ValueError(
                f"ids must be sorted unique row indices in [0, {self.num_sims}), got {rows!r}"
            )
        return rows.astype(np.int32)
