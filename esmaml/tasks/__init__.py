"""Task families (supervised and RL) and task samplers."""

from esmaml.tasks.base import PHASES, SPLITS, TaskFamily, Tasks, validate_tasks
from esmaml.tasks.sampler import TaskSampler

__all__ = ["PHASES", "SPLITS", "TaskFamily", "TaskSampler", "Tasks", "validate_tasks"]
