"""Torch-native batched meta-RL environments with gymnasium front-ends.

* :mod:`envs.core` - the functional contract :class:`BatchedMetaEnv` (``reset/observe/step`` on
  ``dict[str, Tensor]`` tasks and states with any leading batch dims);
* environments: :class:`Navigation2D`, :class:`FourCorners`, :class:`SixCircles`,
  :class:`PointMassGoalVelocity`, :class:`MetaPendulum`, :class:`MetaCartPole`;
* gymnasium: :class:`SingleMetaEnv`, :class:`BatchedMetaVectorEnv`, registered as
  ``esmaml/<Name>-v0`` on import;
* :mod:`envs.mujoco` - MuJoCo meta-tasks (imported on demand; needs ``gymnasium[mujoco]``);
  :mod:`envs.mujoco_batch` steps many of them in MuJoCo's threaded batch, :mod:`envs.mujoco_warp`
  on MuJoCo Warp (GPU; needs ``mujoco-warp``).
"""

from .classic import MetaCartPole, MetaPendulum
from .core import BatchedMetaEnv, params_to_tasks, tasks_to_params
from .gym_wrappers import BatchedMetaVectorEnv, SingleMetaEnv, make_single_env, set_vector_tasks
from .navigation import FourCorners, Navigation2D, SixCircles
from .point_mass import PointMassGoalVelocity
from .registration import (
    BATCHED_ENVS,
    ENV_IDS,
    MUJOCO_ENV_IDS,
    make_batched_env,
    register_envs,
)

register_envs()

__all__ = [
    "BATCHED_ENVS",
    "ENV_IDS",
    "MUJOCO_ENV_IDS",
    "BatchedMetaEnv",
    "BatchedMetaVectorEnv",
    "FourCorners",
    "MetaCartPole",
    "MetaPendulum",
    "Navigation2D",
    "PointMassGoalVelocity",
    "SingleMetaEnv",
    "SixCircles",
    "make_batched_env",
    "make_single_env",
    "params_to_tasks",
    "register_envs",
    "set_vector_tasks",
    "tasks_to_params",
]
