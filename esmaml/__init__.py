"""esmaml: ES-MAML meta-learning with zero-order (evolution strategies) meta-gradients."""

import envs as _envs  # noqa: F401 - registers the esmaml/<Name>-v0 gymnasium ids
from esmaml import nn, zero_order
from esmaml.api import train
from esmaml.registry import register
from esmaml.zero_order.nn import ZeroOrderGradientModule

__version__ = "0.1.0"
__all__ = ["ZeroOrderGradientModule", "__version__", "nn", "register", "train", "zero_order"]
