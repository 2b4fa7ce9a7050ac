"""Meta-learners: zero-order ES-MAML, first-order ES-MAML, and the learn2learn MAML baseline."""

from esmaml.meta.base import Evaluation, MetaLearner, evaluate_adaptation, guarded_step
from esmaml.meta.es_maml import ESMAML, Fitness, Population
from esmaml.meta.first_order import FirstOrderESMAML
from esmaml.meta.l2l_maml import L2LMAML

__all__ = [
    "ESMAML",
    "L2LMAML",
    "Evaluation",
    "FirstOrderESMAML",
    "Fitness",
    "MetaLearner",
    "Population",
    "evaluate_adaptation",
    "guarded_step",
]
