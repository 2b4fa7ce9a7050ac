"""Task families (supervised and RL) and task samplers."""

from esmaml.tasks.base import PHASES, SPLITS, TaskFamily, Tasks, validate_tasks
from esmaml.tasks.fewshot import TasksetFamily, make_fewshot_family, synthetic_metadataset
from esmaml.tasks.sampler import TaskSampler
from esmaml.tasks.sine import NonDifferentiableSine, SineRegression

__all__ = ["PHASES", "SPLITS", "TaskFamily", "TaskSampler", "Tasks", "validate_tasks"]
__all__ += [
    "NonDifferentiableSine",
    "SineRegression",
    "TasksetFamily",
    "make_fewshot_family",
    "synthetic_metadataset",
]
