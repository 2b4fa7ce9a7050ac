"""Meta-RL: flat-parameter policies, the batched rollout engine, observation normalisation,
and the RL task family."""

from esmaml.rl.family import RLFamily
from esmaml.rl.normalization import ObservationNormalizer, RunningStats
from esmaml.rl.policies import MLPPolicy, Policy
from esmaml.rl.rollout import RolloutResult, rollout, rollout_gym

__all__ = [
    "MLPPolicy",
    "ObservationNormalizer",
    "Policy",
    "RLFamily",
    "RolloutResult",
    "RunningStats",
    "rollout",
    "rollout_gym",
]
