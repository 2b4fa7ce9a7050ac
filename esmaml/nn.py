"""``esmaml.nn``: the module API of the zero-order core, re-exported from
:mod:`esmaml.zero_order.nn` (where it lives, as in TorchOpt's ``torchopt.diff.zero_order.nn``)."""

from esmaml.zero_order.nn import ZeroOrderGradientModule, enable_zero_order_gradients

__all__ = ["ZeroOrderGradientModule", "enable_zero_order_gradients"]
