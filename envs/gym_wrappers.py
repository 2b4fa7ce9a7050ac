"""gymnasium front-ends over the batched environments: one env, and one vector env.

Both run the same :class:`~envs.core.BatchedMetaEnv` dynamics (batch shape ``()`` for the single
env, ``(num_envs,)`` for the vector env), so there is one implementation of every system.

Both expose the learn2learn meta-RL interface: ``sample_tasks(n) -> list[dict]``,
``set_task(task)`` / ``set_tasks(tasks)`` and ``get_task()`` / ``get_tasks()``; task dicts hold
Python floats and lists (JSON-serialisable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from .core import BatchedMetaEnv, State, Task
from .registration import make_batched_env

__all__ = ["BatchedMetaVectorEnv", "SingleMetaEnv", "make_single_env", "set_vector_tasks"]

# Seed of the task an env holds before set_task is called, so fresh envs are reproducible.
_DEFAULT_TASK_SEED = 0


def _spaces(env: BatchedMetaEnv) -> tuple[spaces.Box, spaces.Box]:
    obs = spaces.Box(
        low=np.asarray(env.observation_low, dtype=np.float32),
        high=np.asarray(env.observation_high, dtype=np.float32),
        dtype=np.float32,
    )
    act = spaces.Box(
        low=np.float32(env.action_low),
        high=np.float32(env.action_high),
        shape=(env.action_dim,),
        dtype=np.float32,
    )
    return obs, act


def _check_render_mode(render_mode: str | None) -> None:
    if render_mode is not None:
        raise ValueError(f"render_mode must be None (these envs do not render): {render_mode!r}")


def _task_generator(seed: int | None, np_random: np.random.Generator) -> torch.Generator:
    if seed is None:
        seed = int(np_random.integers(0, 2**63 - 1))
    return torch.Generator().manual_seed(int(seed))


def _tasks_from_seeds(env: BatchedMetaEnv, seeds: Sequence[int]) -> Task:
    """One task per seed, task ``i`` drawn from a generator seeded ``seeds[i]``: the task a
    :class:`SingleMetaEnv` reset with ``seeds[i]`` holds, whatever the other seeds are."""
    drawn = [env.sample_task_params(1, torch.Generator().manual_seed(int(s))) for s in seeds]
    return {k: torch.cat([task[k] for task in drawn]) for k in env.task_keys}


def _normalise_task(task: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    return {k: np.asarray(task[k], dtype=np.float64).tolist() for k in keys}


def _copy_task(task: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in task.items()}


def _parse_autoreset_mode(mode: AutoresetMode | str) -> AutoresetMode:
    """Accept the enum, its values ('SameStep') or its names in any case ('same_step')."""
    if isinstance(mode, AutoresetMode):
        return mode
    if isinstance(mode, str):
        for m in AutoresetMode:
            if mode in (m.value, m.name) or mode.upper() == m.name:
                return m
    valid = [m.name.lower() for m in AutoresetMode]
    raise ValueError(f"autoreset_mode must be one of {valid} (or an AutoresetMode), got {mode!r}")


def _check_vector_seed(seed: Any, num_envs: int) -> int | list[int | None] | None:
    """``seed`` of a vector env's reset: None, an int, or one int (or None) per sub-env."""
    if seed is None:
        return None
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    if not isinstance(seed, (list, tuple)):
        raise TypeError(
            f"seed must be an int, a list of {num_envs} ints (one per sub-env) or None, "
            f"got {type(seed).__name__}"
        )
    if len(seed) != num_envs:
        raise ValueError(
            f"seed must hold one entry per sub-env ({num_envs}), got {len(seed)}: {list(seed)!r}"
        )
    for i, s in enumerate(seed):
        if s is None:
            continue
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"seed[{i}] must be an int in [0, 2**64) or None, got {s!r}")
        if not 0 <= s < 2**64:  # the range torch.Generator.manual_seed takes
            raise ValueError(f"seed[{i}] must be an int in [0, 2**64) or None, got {s!r}")
    return [None if s is None else int(s) for s in seed]


def _to_numpy(t: Tensor, dtype: np.dtype | type | None = None) -> np.ndarray:
    # np.array copies: returned arrays never alias the env's state tensors.
    return np.array(t.detach().cpu().numpy(), dtype=dtype, copy=True)


def _as_action(action: Any, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``action`` as a tensor of the env's dtype; TypeError for anything but numbers."""
    if isinstance(action, Tensor):
        if action.is_complex() or action.dtype == torch.bool:
            raise TypeError(f"action must be a real number tensor, got dtype {action.dtype}")
        return action.to(device, dtype)
    try:
        array = np.asarray(action)
    except (TypeError, ValueError):  # e.g. ragged lists
        array = None
    if array is None or array.dtype.kind not in "iuf":
        shown = repr(action) if len(repr(action)) <= 60 else f"a {type(action).__name__}"
        raise TypeError(
            f"action must be numbers (a tensor, numpy array, float or list of floats), got {shown}"
        )
    return torch.as_tensor(array, dtype=dtype, device=device)


class SingleMetaEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """One environment (``gymnasium.Env``) running a batched env with batch shape ``()``.

    Args:
        env: a :class:`BatchedMetaEnv` or the name of one (``'Navigation2D'``).
        task: the task. Without one, the env holds a default task: drawn with seed 0, and
            again from the seed of each seeded ``reset`` (from the entropy-drawn seed of an
            unseeded first reset) until ``set_task`` is called. So the sub-envs of
            ``make_vec(..., vectorization_mode='sync')``, reset with seed ``s`` (sub-env ``i``
            gets ``s + i``), each get their own task from that one seed.
        max_episode_steps: truncation horizon (default: the env's ``max_episode_steps``).
        time_limit: truncate internally at ``max_episode_steps``. ``gymnasium.make`` builds
            the env with ``time_limit=False`` and lets its ``TimeLimit`` wrapper truncate.
        device, dtype: where and in which precision the dynamics run (CPU float32 default).
        render_mode: must be ``None``.
        **env_kwargs: constructor arguments of the named env (e.g. ``goal_range=0.5``).

    Observations are float32 numpy arrays; actions a tensor or anything ``np.asarray`` accepts
    with shape ``(action_dim,)``, cast to ``dtype``. ``reset(seed=s)`` seeds the torch
    generator used for initial states; ``reset(options={'task': {...}})`` also switches the task.
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        env: str | BatchedMetaEnv,
        *,
        task: Mapping[str, Any] | None = None,
        max_episode_steps: int | None = None,
        time_limit: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        _check_render_mode(render_mode)
        self.batched_env = make_batched_env(env, **env_kwargs)
        self.max_episode_steps = int(max_episode_steps or self.batched_env.max_episode_steps)
        self.time_limit = bool(time_limit)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.render_mode = render_mode
        self.observation_space, self.action_space = _spaces(self.batched_env)
        self._generator = torch.Generator(device=self.device)
        self._generator_seeded = False
        self._state: State | None = None
        self._elapsed = 0
        self.set_task(task if task is not None else self._default_task(_DEFAULT_TASK_SEED))
        self._task_is_default = task is None

    def _default_task(self, seed: int) -> dict[str, Any]:
        return self.batched_env.params_to_tasks(_tasks_from_seeds(self.batched_env, [seed]))[0]

    # ------------------------------------------------------------------- meta interface
    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        """``n`` task dicts, drawn from ``seed`` or else from the env's ``np_random``."""
        gen = _task_generator(seed, self.np_random)
        return self.batched_env.params_to_tasks(self.batched_env.sample_task_params(n, gen))

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Switch the task; the running episode continues with it (call ``reset`` to restart)."""
        params = self.batched_env.tasks_to_params([task], device=self.device, dtype=self.dtype)
        self._task: Task = {k: v[0] for k, v in params.items()}
        self._task_is_default = False
        # Keep the caller's float64 values so get_task() returns what was set, not its
        # float32 rounding.
        self._task_dict = _normalise_task(task, self.batched_env.task_keys)

    def get_task(self) -> dict[str, Any]:
        """The current task as a JSON-serialisable dict (as given to ``set_task``)."""
        return _copy_task(self._task_dict)

    @property
    def task(self) -> dict[str, Any]:
        """The current task (settable, so ``SyncVectorEnv.set_attr('task', tasks)`` works)."""
        return self.get_task()

    @task.setter
    def task(self, task: Mapping[str, Any]) -> None:
        self.set_task(task)

    @property
    def task_params(self) -> Task:
        """The current task as tensors with batch shape ``()``."""
        return dict(self._task)

    @property
    def state(self) -> State | None:
        """The current dynamic state (tensors with batch shape ``()``), ``None`` before reset.

        Settable to replay or compare trajectories from a given state.
        """
        return None if self._state is None else dict(self._state)

    @state.setter
    def state(self, state: Mapping[str, Tensor]) -> None:
        shape = self.batched_env.state_batch_shape(state)
        if shape != ():
            raise ValueError(f"state must have batch shape (), got {tuple(shape)}")
        self._state = {
            k: state[k].to(self.device, self.dtype) for k in self.batched_env.state_shapes
        }

    # ---------------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            unknown = set(options) - {"task"}
            if unknown:
                raise ValueError(f"unknown reset options {sorted(unknown)}; valid: ['task']")
            self.set_task(options["task"])
        start_seed = None
        if seed is not None:
            start_seed = int(seed)
        elif not self._generator_seeded:
            # Unseeded first reset: draw from np_random, itself seeded from OS entropy.
            start_seed = int(self.np_random.integers(0, 2**63 - 1))
        if start_seed is not None:
            self._generator.manual_seed(start_seed)
            self._generator_seeded = True
            if self._task_is_default:
                self.set_task(self._default_task(start_seed))
                self._task_is_default = True
        self._state = self.batched_env.reset(self._task, self._generator)
        self._elapsed = 0
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        # Straight to the env's dtype: a float32 detour would round float64 actions.
        a = _as_action(action, self.dtype, self.device)
        self._state, reward, terminated = self.batched_env.step(self._state, self._task, a)
        self._elapsed += 1
        truncated = self.time_limit and self._elapsed >= self.max_episode_steps
        return self._obs(), float(reward), bool(terminated), truncated, {}

    def _obs(self) -> np.ndarray:
        assert self._state is not None
        return _to_numpy(self.batched_env.observe(self._state, self._task), np.float32)

    def __repr__(self) -> str:
        return f"SingleMetaEnv({self.batched_env!r})"


def make_single_env(env: str | BatchedMetaEnv, **kwargs: Any) -> SingleMetaEnv:
    """``gymnasium.make`` entry point: like :class:`SingleMetaEnv` with ``time_limit=False``.

    ``make`` wraps the env in ``TimeLimit(spec.max_episode_steps)`` (or the
    ``max_episode_steps`` given to ``make``), which then alone decides truncation.
    """
    kwargs.setdefault("time_limit", False)
    return SingleMetaEnv(env, **kwargs)


class BatchedMetaVectorEnv(VectorEnv):
    """``num_envs`` environments stepped as one batch (``gymnasium.vector.VectorEnv``).

    Args:
        env: a :class:`BatchedMetaEnv` or the name of one.
        num_envs: number of sub-environments.
        tasks: per-env task dicts (length ``num_envs``). Without them, sub-env ``i`` holds a
            default task drawn with seed ``i``, and again from ``s + i`` at each
            ``reset(seed=s)`` (from ``s_i`` for a list of seeds) until tasks are set: the tasks
            ``vectorization_mode='sync'`` gives its sub-envs for the same seed.
        device, dtype: where and in which precision the batch runs (CPU float32 default).
        as_torch: return torch tensors on ``device`` instead of numpy arrays, and accept torch
            actions without a host round trip.
        max_episode_steps: truncation horizon (default: the env's; ``make_vec`` passes the
            spec's).
        render_mode: must be ``None``.
        **env_kwargs: constructor arguments of the named env.

    Autoreset (``autoreset_mode``, reported in ``metadata['autoreset_mode']``):

    * ``NEXT_STEP`` (default, as gymnasium's own vector envs, and what its vector wrappers
      such as ``NormalizeObservation`` require): the step after a finished one ignores the
      action, resets the sub-env and returns reward 0 with terminated = truncated = False;
      mask those steps out of returns.
    * ``SAME_STEP`` (what esmaml's rollouts use): a sub-env that terminates or truncates is
      reset inside the same ``step``: the returned observation is the first of the new episode while
      reward/terminated/truncated belong to the finished step, and ``info['final_obs']`` holds
      the last observation. Unlike gymnasium's object array with ``None`` entries,
      ``final_obs`` is a dense ``[num_envs, obs_dim]`` array, valid where
      ``info['_final_obs']`` is True. No zero-reward reset step is inserted.
    * ``DISABLED``: sub-envs keep stepping after they finish; reset them with
      ``reset(options={'reset_mask': mask})``.

    Actions are cast to ``dtype`` and moved to ``device``. ``reset(options={'reset_mask':
    mask})`` resets only the masked sub-envs; ``options={'tasks': [...]}`` switches tasks
    first.

    Seeding: ``reset(seed=s)`` seeds the one generator the whole batch draws from.
    ``reset(seed=[s_0, ..., s_{n-1}])`` (gymnasium's per-sub-env form; ``None`` entries draw
    a seed from ``np_random``) starts sub-env ``i`` from a generator seeded ``s_i``: the
    state :class:`SingleMetaEnv` ``.reset(seed=s_i)`` draws on the same task, whatever the
    other seeds. Autoresets after it draw from the batch generator, seeded from the whole list.
    """

    def __init__(
        self,
        env: str | BatchedMetaEnv,
        num_envs: int = 1,
        *,
        tasks: Sequence[Mapping[str, Any]] | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        as_torch: bool = False,
        max_episode_steps: int | None = None,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **env_kwargs: Any,
    ) -> None:
        _check_render_mode(render_mode)
        self.autoreset_mode = _parse_autoreset_mode(autoreset_mode)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive int, got {num_envs!r}")
        self.batched_env = make_batched_env(env, **env_kwargs)
        self.num_envs = num_envs
        self.max_episode_steps = int(max_episode_steps or self.batched_env.max_episode_steps)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype
        self.as_torch = bool(as_torch)
        self.render_mode = render_mode
        self.metadata = {"autoreset_mode": self.autoreset_mode, "render_modes": []}
        self.single_observation_space, self.single_action_space = _spaces(self.batched_env)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._generator = torch.Generator(device=self.device)
        self._generator_seeded = False
        self._state: State | None = None
        self._elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        # NEXT_STEP: sub-envs whose next step is a reset step
        self._autoreset_envs = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        if tasks is None:
            seeds = [_DEFAULT_TASK_SEED + i for i in range(num_envs)]
            self.set_task_params(_tasks_from_seeds(self.batched_env, seeds))
        else:
            self.set_tasks(tasks)
        self._tasks_are_default = tasks is None

    # ------------------------------------------------------------------- meta interface
    def sample_tasks(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        """``n`` task dicts, drawn from ``seed`` or else from the env's ``np_random``."""
        gen = _task_generator(seed, self.np_random)
        return self.batched_env.params_to_tasks(self.batched_env.sample_task_params(n, gen))

    def set_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> None:
        """One task dict per sub-env; running episodes continue with the new tasks."""
        if len(tasks) != self.num_envs:
            raise ValueError(f"set_tasks needs {self.num_envs} tasks (one per env): {len(tasks)}")
        self.set_task_params(
            self.batched_env.tasks_to_params(tasks, device=self.device, dtype=self.dtype)
        )
        keys = self.batched_env.task_keys
        self._task_dicts = [_normalise_task(t, keys) for t in tasks]

    def set_task_params(self, params: Mapping[str, Tensor]) -> None:
        """Set tasks from tensors ``{key: [num_envs, ...]}`` (moved to the env's device)."""
        shape = self.batched_env.task_batch_shape(params)
        if tuple(shape) != (self.num_envs,):
            raise ValueError(f"task params need batch shape ({self.num_envs},), got {tuple(shape)}")
        self._task: Task = {
            k: params[k]
            .to(self.device, self.dtype)
            .expand(self.num_envs, *self.batched_env.task_shapes[k])
            for k in self.batched_env.task_keys
        }
        self._task_dicts: list[dict[str, Any]] | None = None
        self._tasks_are_default = False

    def get_tasks(self) -> list[dict[str, Any]]:
        """The sub-envs' tasks as JSON-serialisable dicts (as given to ``set_tasks``)."""
        if self._task_dicts is not None:
            return [_copy_task(t) for t in self._task_dicts]
        return self.batched_env.params_to_tasks(self._task)

    @property
    def task_params(self) -> Task:
        """Current tasks as tensors ``{key: [num_envs, ...]}`` on the env's device."""
        return dict(self._task)

    @property
    def state(self) -> State | None:
        """Current batched state (``None`` before reset)."""
        return None if self._state is None else dict(self._state)

    # ---------------------------------------------------------------------- gymnasium API
    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        checked = _check_vector_seed(seed, self.num_envs)
        options = dict(options or {})
        unknown = set(options) - {"tasks", "reset_mask"}
        if unknown:
            raise ValueError(
                f"unknown reset options {sorted(unknown)}; valid: ['reset_mask', 'tasks']"
            )
        sub_seeds: list[int] | None = None
        if isinstance(checked, list):
            sub_seeds = [
                int(self.np_random.integers(0, 2**63 - 1)) if s is None else s for s in checked
            ]
            # One seed from the whole list for np_random and the autoreset stream, so a
            # rerun with the same list repeats every later draw too.
            checked = int(np.random.SeedSequence(sub_seeds).generate_state(1, np.uint64)[0])
        task_seeds = sub_seeds
        if task_seeds is None and checked is not None:
            task_seeds = [checked + i for i in range(self.num_envs)]
        super().reset(seed=checked)
        if "tasks" in options:
            self.set_tasks(options["tasks"])
        if checked is not None:
            self._generator.manual_seed(checked)
            self._generator_seeded = True
        elif not self._generator_seeded:
            first = int(self.np_random.integers(0, 2**62))
            task_seeds = [first + i for i in range(self.num_envs)]
            self._generator.manual_seed(first)
            self._generator_seeded = True
        if self._tasks_are_default and task_seeds is not None:
            self.set_task_params(_tasks_from_seeds(self.batched_env, task_seeds))
            self._tasks_are_default = True
        if sub_seeds is None:
            fresh = self.batched_env.reset(self._task, self._generator)
        else:
            fresh = self._reset_each(sub_seeds)
        mask = options.get("reset_mask")
        if mask is None or self._state is None:
            self._state = fresh
            self._elapsed.zero_()
            self._autoreset_envs.zero_()
        else:
            mask_t = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
            if tuple(mask_t.shape) != (self.num_envs,):
                raise ValueError(
                    f"reset_mask must have shape ({self.num_envs},), got {tuple(mask_t.shape)}"
                )
            self._state = self._where(mask_t, fresh, self._state)
            self._elapsed = torch.where(mask_t, 0, self._elapsed)
            self._autoreset_envs = self._autoreset_envs & ~mask_t
        obs = self.batched_env.observe(self._state, self._task)
        return self._out(obs, np.float32), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = _as_action(actions, self.dtype, self.device)
        next_state, reward, terminated = self.batched_env.step(self._state, self._task, a)
        elapsed = self._elapsed + 1
        truncated = elapsed >= self.max_episode_steps
        info: dict[str, Any] = {}
        # Reset states are drawn for every env each step whatever finished, so there is no
        # host sync (no done.any()) and the random stream does not depend on the episodes.
        if self.autoreset_mode == AutoresetMode.SAME_STEP:
            done = terminated | truncated
            final_obs = self.batched_env.observe(next_state, self._task)
            fresh = self.batched_env.reset(self._task, self._generator)
            self._state = self._where(done, fresh, next_state)
            self._elapsed = torch.where(done, 0, elapsed)
            done_out = self._out(done)
            info = {
                "final_obs": self._out(final_obs, np.float32),
                "_final_obs": done_out,
                "final_info": {},
                "_final_info": done_out,
            }
        elif self.autoreset_mode == AutoresetMode.NEXT_STEP:
            resetting = self._autoreset_envs
            fresh = self.batched_env.reset(self._task, self._generator)
            self._state = self._where(resetting, fresh, next_state)
            self._elapsed = torch.where(resetting, 0, elapsed)
            reward = torch.where(resetting, torch.zeros_like(reward), reward)
            terminated = terminated & ~resetting
            truncated = truncated & ~resetting
            self._autoreset_envs = terminated | truncated
        else:
            self._state = next_state
            self._elapsed = elapsed
        obs = self.batched_env.observe(self._state, self._task)
        return (
            self._out(obs, np.float32),
            self._out(reward, np.float64),
            self._out(terminated),
            self._out(truncated),
            info,
        )

    # ---------------------------------------------------------------------------- helpers
    def _reset_each(self, seeds: Sequence[int]) -> State:
        """Initial states with sub-env ``i`` drawn from its own generator seeded ``seeds[i]``."""
        generator = torch.Generator(device=self.device)
        states = []
        for i, s in enumerate(seeds):
            generator.manual_seed(s)
            task = {k: v[i] for k, v in self._task.items()}
            states.append(self.batched_env.reset(task, generator))
        return {k: torch.stack([state[k] for state in states]) for k in states[0]}

    def _where(self, mask: Tensor, a: State, b: State) -> State:
        shapes = self.batched_env.state_shapes
        return {k: torch.where(mask.view(-1, *(1,) * len(shapes[k])), a[k], b[k]) for k in shapes}

    def _out(self, t: Tensor, np_dtype: type | None = None) -> Any:
        if self.as_torch:
            # Clone so callers can modify what they get without touching the env state.
            return t.clone()
        return _to_numpy(t, np_dtype)

    def __repr__(self) -> str:
        return f"BatchedMetaVectorEnv({self.batched_env!r}, num_envs={self.num_envs})"


def set_vector_tasks(vector_env: VectorEnv, tasks: Sequence[Mapping[str, Any]]) -> None:
    """Give each sub-env of ``vector_env`` its own task.

    Works for :class:`BatchedMetaVectorEnv` (``set_tasks``) and for gymnasium's Sync/Async
    vector envs of meta envs (``set_attr('task', tasks)``, which reaches through wrappers).
    """
    base = vector_env.unwrapped
    if len(tasks) != base.num_envs:
        raise ValueError(f"need one task per env ({base.num_envs}), got {len(tasks)}")
    if isinstance(base, BatchedMetaVectorEnv):
        base.set_tasks(tasks)
    else:
        base.set_attr("task", list(tasks))
