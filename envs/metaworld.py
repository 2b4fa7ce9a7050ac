"""Meta-World ML1 as an esmaml meta-RL environment (a ``gymnasium.Env`` with the task interface).

Named by import path, ``task.params.env: envs.metaworld:ML1`` with
``env_params: {env_name: reach-v3}``, it runs on esmaml's gymnasium path like any user env.

Meta-World 3.1.1 pins ``mujoco==3.3.0`` and does not build its envs on MuJoCo 4 (which the
rest of esmaml uses), so it lives in an overlay venv, ``.venv-metaworld/``, that
``scripts/setup.sh`` builds over ``.venv``: run it as ``.venv-metaworld/bin/python -m esmaml.cli
train configs/metaworld_reach_es.yaml``. This module imports ``metaworld`` only when an env is
built, so it can be imported (and named in a config) anywhere.

A task is ``{"test": 0 or 1, "index": i}``: goal ``i`` of ML1's 50 train (``test = 0``) or 50
test goals (``test = 1``), which Meta-World draws from ``benchmark_seed``. Numbers, so a task
pool is stored in a checkpoint as tensors and rebuilt exactly (``envs.tasks_to_params``).
``sample_tasks(n, seed, split)`` draws from the train goals, or from the test goals for
``split="test"`` (esmaml's held-out tasks).
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import gymnasium
import numpy as np

__all__ = ["ENV_ID", "ML1", "import_metaworld"]

_SPLITS = ("train", "test")
# Meta-World envs of closed ML1s, by env name, for the next ML1 to reuse: esmaml builds a
# vector env per rollout call and building one Meta-World env costs ~0.2 s, stepping 500 steps
# about as much. A reused env is as good as new: set_task and reset set its whole state.
_IDLE: dict[str, list[Any]] = {}
_MAX_IDLE = 64


def import_metaworld() -> Any:
    """``metaworld``, or an ImportError that says how to get a working one."""
    try:
        metaworld = importlib.import_module("metaworld")
    except ModuleNotFoundError as error:
        if error.name != "metaworld":
            raise
        raise ImportError(
            "envs.metaworld needs the metaworld package (and its mujoco==3.3.0), which "
            "scripts/setup.sh installs in the overlay venv .venv-metaworld/; run esmaml with "
            ".venv-metaworld/bin/python -m esmaml.cli ..."
        ) from None
    import mujoco

    pinned = _pinned_mujoco()
    if pinned is not None and mujoco.__version__ != pinned:
        raise ImportError(
            f"metaworld {metadata.version('metaworld')} needs mujoco=={pinned}, this "
            f"interpreter has mujoco {mujoco.__version__} (Meta-World's envs fail to build on "
            "MuJoCo 4); use the overlay venv .venv-metaworld/ that scripts/setup.sh builds"
        )
    return metaworld


def _pinned_mujoco() -> str | None:
    """The mujoco version the installed metaworld pins (``mujoco==3.3.0`` for 3.1.1)."""
    for requirement in metadata.requires("metaworld") or []:
        name, _, version = requirement.partition("==")
        if name.strip() == "mujoco" and version:
            return version.split(";")[0].strip()
    return None


@functools.lru_cache(maxsize=8)
def _benchmark(env_name: str, seed: int) -> Any:
    """ML1's 50 train and 50 test goals of ``env_name`` (built once per process: ~1.5 s)."""
    return import_metaworld().ML1(env_name, seed=seed)


class ML1(gymnasium.Env[np.ndarray, np.ndarray]):
    """Meta-World ML1: one manipulation task (``env_name``), a task per goal position.

    The goal is not in the observation (39 numbers, the last 3 zero), so a policy has to find
    it from rewards: meta-RL. Tasks are ML1's: 50 train goals and 50 held-out test goals.

    Args:
        env_name: a Meta-World v3 env (``reach-v3``, ``push-v3``, ``pick-place-v3``, ...).
        benchmark_seed: the seed Meta-World draws the 100 goals from (fixed, so a run's task
            indices mean the same goals in every process).
        max_path_length: episode length after which the env truncates (Meta-World's 500).
        task: the initial task (default: train goal 0).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 - gymnasium's attribute

    def __init__(
        self,
        env_name: str = "reach-v3",
        benchmark_seed: int = 0,
        max_path_length: int = 500,
        task: Mapping[str, Any] | None = None,
    ) -> None:
        metaworld = import_metaworld()
        classes = metaworld.env_dict.ALL_V3_ENVIRONMENTS
        if env_name not in classes:
            raise ValueError(
                f"env_name={env_name!r} is not a Meta-World v3 env; valid: {', '.join(classes)}"
            )
        if isinstance(max_path_length, bool) or not isinstance(max_path_length, int):
            raise TypeError(f"max_path_length must be an int, got {max_path_length!r}")
        if max_path_length < 1:
            raise ValueError(f"max_path_length must be >= 1, got {max_path_length}")
        self.env_name, self.benchmark_seed = env_name, int(benchmark_seed)
        self.base_env: Any
        self.max_path_length = max_path_length
        idle = _IDLE.get(env_name)
        self.base_env = idle.pop() if idle else classes[env_name]()
        self.base_env.max_path_length = max_path_length
        self.action_space = self.base_env.action_space
        self.task = task if task is not None else {"test": 0, "index": 0}
        # After the first set_task: ML1's partial observability fixes the observation space.
        self.observation_space = self.base_env.observation_space

    # ------------------------------------------------------------------- meta interface
    def sample_tasks(
        self, n: int, seed: int | None = None, split: str = "train"
    ) -> list[dict[str, Any]]:
        """``n`` tasks of ``split``'s 50 goals: distinct ones while ``n <= 50``, drawn from
        ``seed`` or else from the env's ``np_random``."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if split not in _SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        rng = np.random.default_rng(seed) if seed is not None else self.np_random
        count = len(self._tasks(split == "test"))
        indices = rng.choice(count, size=n, replace=n > count)
        return [{"test": int(split == "test"), "index": int(i)} for i in indices]

    def _tasks(self, test: bool) -> list[Any]:
        benchmark = _benchmark(self.env_name, self.benchmark_seed)
        return benchmark.test_tasks if test else benchmark.train_tasks

    @property
    def task(self) -> dict[str, Any]:
        """The current task (settable, so ``SyncVectorEnv.set_attr('task', tasks)`` works)."""
        return dict(self._task)

    @task.setter
    def task(self, task: Mapping[str, Any]) -> None:
        if not isinstance(task, Mapping) or set(task) != {"test", "index"}:
            raise ValueError(f"an ML1 task is a dict {{'test': 0 or 1, 'index': i}}, got {task!r}")
        test, index = float(task["test"]), float(task["index"])
        if test not in (0.0, 1.0):
            raise ValueError(f"task['test'] must be 0 or 1, got {task['test']!r}")
        tasks = self._tasks(bool(test))
        if not index.is_integer() or not 0 <= index < len(tasks):
            raise ValueError(f"task['index'] must be an int in [0, {len(tasks)}), got {index!r}")
        self.base_env.set_task(tasks[int(index)])
        self._task = {"test": int(test), "index": int(index)}

    def set_task(self, task: Mapping[str, Any]) -> None:
        """Switch the task (from the next reset)."""
        self.task = task

    def get_task(self) -> dict[str, Any]:
        return self.task

    # ---------------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Meta-World's reset (deterministic for a task: the goal and the start are fixed)."""
        super().reset(seed=seed)
        return self.base_env.reset()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Meta-World's step; ``truncated`` after ``max_path_length`` steps."""
        obs, reward, terminated, truncated, info = self.base_env.step(np.asarray(action))
        return obs, float(reward), bool(terminated), bool(truncated), info

    def close(self) -> None:
        """Hand the Meta-World env to the next ML1 of this process (or close it)."""
        base, self.base_env = self.base_env, None
        if base is None:
            return
        idle = _IDLE.setdefault(self.env_name, [])
        if len(idle) < _MAX_IDLE:
            idle.append(base)
        else:
            base.close()


ENV_ID = "esmaml-metaworld/ML1-v0"
if ENV_ID not in gymnasium.registry:
    # esmaml finds the class's id here (esmaml.rl.env_resolution.resolve_env). Meta-World's
    # observation space has bounds gymnasium's passive checker warns about at every make (the
    # hidden goal's three zero-width dimensions, infinite ones): Meta-World's own, so not
    # checked here.
    gymnasium.register(
        ENV_ID, entry_point="envs.metaworld:ML1", max_episode_steps=500, disable_env_checker=True
    )
