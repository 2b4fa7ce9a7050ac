"""Meta-learners: zero-order ES-MAML, first-order ES-MAML, and the learn2learn MAML baseline."""

from esmaml.meta.base import Evaluation, MetaLearner, evaluate_adaptation
from esmaml.meta.es_maml import ESMAML
from esmaml.meta.first_order import FirstOrderESMAML

__all__ = ["ESMAML", "Evaluation", "FirstOrderESMAML", "MetaLearner", "evaluate_adaptation"]
