"""The zero-order differentiation core.

``esmaml.zero_order(...)`` is the decorator (a drop-in for ``torchopt.diff.zero_order``); the
submodules expose the pieces it is built from, which the adaptation operators and meta-learners
reuse: seeded directions (:mod:`.noise`), estimator weights (:mod:`.estimators`), the estimate
kernel (:mod:`.kernel`), the differentiated arguments' leaves (:mod:`.pytree`) and batched
population evaluation (:mod:`.evaluation`); :mod:`.compiled` holds ``compile=True``.
"""

from __future__ import annotations

import sys
import types
from typing import Any

# The module twin lives beside the decorator, as in torchopt.diff.zero_order.
from esmaml.zero_order import nn
from esmaml.zero_order.decorator import ZeroOrder, ZeroOrderFunction, ZeroOrderStats, zero_order
from esmaml.zero_order.estimators import (
    METHODS,
    SHAPINGS,
    es_gradient,
    estimator_weights,
    perturb,
    population_size,
    shape_fitness,
)
from esmaml.zero_order.evaluation import BATCH_MODES, PopulationEvaluator
from esmaml.zero_order.nn import ZeroOrderGradientModule
from esmaml.zero_order.noise import (
    NOISE_KINDS,
    draw_seed,
    gaussian_noise,
    make_generator,
    noise_from_seed,
    orthogonal_noise,
    sample_noise,
)

__all__ = [
    "BATCH_MODES",
    "METHODS",
    "NOISE_KINDS",
    "SHAPINGS",
    "PopulationEvaluator",
    "ZeroOrder",
    "ZeroOrderFunction",
    "ZeroOrderGradientModule",
    "ZeroOrderStats",
    "draw_seed",
    "es_gradient",
    "estimator_weights",
    "gaussian_noise",
    "make_generator",
    "nn",
    "noise_from_seed",
    "orthogonal_noise",
    "perturb",
    "population_size",
    "sample_noise",
    "shape_fitness",
    "zero_order",
]


class _CallableModule(types.ModuleType):
    """Lets ``esmaml.zero_order(...)`` and ``esmaml.zero_order.zero_order(...)`` be one call."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return zero_order(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
