"""Adaptation operators U(theta, task): ES-gradient, hill climbing, gradient descent, identity."""

from esmaml.adaptation.base import AdaptationOperator
from esmaml.adaptation.dpp import dpp_directions, sample_k_dpp
from esmaml.adaptation.es_gradient import ESGradientAdaptation, ESTrace
from esmaml.adaptation.gradient_descent import GradientDescentAdaptation, IdentityAdaptation
from esmaml.adaptation.hill_climbing import HillClimbingAdaptation

__all__ = [
    "AdaptationOperator",
    "ESGradientAdaptation",
    "ESTrace",
    "GradientDescentAdaptation",
    "HillClimbingAdaptation",
    "IdentityAdaptation",
    "dpp_directions",
    "sample_k_dpp",
]
