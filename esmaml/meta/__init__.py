"""Meta-learners: zero-order ES-MAML, first-order ES-MAML, and the learn2learn MAML baseline."""

from esmaml.meta.base import Evaluation, MetaLearner, evaluate_adaptation
from esmaml.meta.es_maml import ESMAML
from esmaml.meta.first_order import FirstOrderESMAML
from esmaml.meta.l2l_maml import L2LMAML

__all__ = [
    "ESMAML",
    "L2LMAML",
    "Evaluation",
    "FirstOrderESMAML",
    "MetaLearner",
    "evaluate_adaptation",
]
