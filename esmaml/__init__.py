"""esmaml: ES-MAML meta-learning with zero-order (evolution strategies) meta-gradients."""

from esmaml import nn, zero_order
from esmaml.nn import ZeroOrderGradientModule

__version__ = "0.1.0"
__all__ = ["ZeroOrderGradientModule", "__version__", "nn", "zero_order"]
