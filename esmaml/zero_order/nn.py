"""``ZeroOrderGradientModule``: the OOP twin of :func:`esmaml.zero_order`.

    class Net(ZeroOrderGradientModule, method='antithetic', num_samples=100, sigma=0.01):
        def forward(self, x, y): ...          # returns a scalar
        def sample(self, sample_shape): ...   # optional: defaults to the seeded Gaussian

``loss = net(x, y); loss.backward()`` fills ``.grad`` of the module's trainable parameters with
the zero-order estimate. Frozen parameters (requires_grad=False) are not perturbed; tied
parameters are perturbed once. A subclass inherits its parent's forward and options, and may
override the options with its own class keywords.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from esmaml.zero_order.decorator import ZeroOrderFunction, zero_order

_ENABLED = "__zero_order_gradients_enabled__"
_ORIGINAL = "__zero_order_original_forward__"
_OPTIONS = "__zero_order_options__"
_CLASS_OPTIONS = "_zero_order_class_options"


def enable_zero_order_gradients(
    cls: type[nn.Module],
    method: str = "naive",
    num_samples: int = 1,
    sigma: float = 1.0,
    **options: Any,
) -> type[nn.Module]:
    """Wrap ``cls.forward`` so its output carries a zero-order gradient for the parameters.

    Raises TypeError if ``cls.forward`` is already wrapped (enabling twice).
    """
    forward = cls.__dict__.get("forward", getattr(cls, "forward", None))
    if forward is None or forward is nn.Module.forward:
        raise TypeError(f"{cls.__name__} must define forward(self, ...) returning a scalar")
    if getattr(forward, _ENABLED, False):
        raise TypeError(
            f"zero-order gradients are already enabled for {cls.__name__}.forward; enable once"
        )
    zero_order(None, method=method, num_samples=num_samples, sigma=sigma, **options)  # validate
    original: Callable[..., Tensor] = forward

    @functools.wraps(original)
    def wrapped(self: nn.Module, *args: Any, **kwargs: Any) -> Tensor:
        if getattr(self, "_zero_order_inside", False):
            return original(self, *args, **kwargs)
        names = [name for name, p in self.named_parameters() if p.requires_grad]
        if not names:
            raise RuntimeError(
                f"{type(self).__name__} has no trainable parameters to estimate a gradient for"
            )
        params = dict(self.named_parameters())
        return _module_objective(self, method, num_samples, sigma, options)(
            {name: params[name] for name in names}, self, *args, **kwargs
        )

    setattr(wrapped, _ENABLED, True)
    setattr(wrapped, _ORIGINAL, original)
    setattr(wrapped, _OPTIONS, dict(method=method, num_samples=num_samples, sigma=sigma, **options))
    cls.forward = wrapped  # type: ignore[method-assign]
    return cls


class _ModuleObjective:
    """``functional_call`` of a module's own forward with the given parameters. A class, not a
    closure, so a module holding its cached zero-order function can be pickled (torch.save)."""

    def __init__(self, qualname: str):
        self.__qualname__ = self.__name__ = qualname

    def __call__(
        self, params: dict[str, Tensor], module: nn.Module, /, *args: Any, **kwargs: Any
    ) -> Tensor:
        module.__dict__["_zero_order_inside"] = True
        try:
            return torch.func.functional_call(module, params, args, kwargs)
        finally:
            module.__dict__["_zero_order_inside"] = False


def _module_objective(
    module: nn.Module, method: str, num_samples: int, sigma: float, options: dict[str, Any]
) -> ZeroOrderFunction:
    """The module's zero-order function, built once per instance and options. It takes the
    module as its second argument instead of closing over it, so a deep copy of the module
    (whose cache is copied along) evaluates the copy, not the original."""
    cache: dict[str, ZeroOrderFunction] = module.__dict__.setdefault("_zero_order_cache", {})
    key = repr((type(module).__qualname__, method, num_samples, sigma, sorted(options.items())))
    if key not in cache:
        own_sample = getattr(type(module), "sample", None)
        # The built-in seeded Gaussian unless the class brings its own sampler.
        sample = None if own_sample in (None, ZeroOrderGradientModule.sample) else module.sample

        objective = _ModuleObjective(f"{type(module).__name__}.forward")
        cache[key] = zero_order(
            sample, method=method, argnums=0, num_samples=num_samples, sigma=sigma, **options
        )(objective)
    return cache[key]


class ZeroOrderGradientModule(nn.Module):
    """Base class: subclass with ``method``, ``num_samples``, ``sigma`` (and any option of
    :func:`esmaml.zero_order`) as class keywords; define ``forward`` and optionally ``sample``."""

    def __init_subclass__(cls, **options: Any) -> None:
        super().__init_subclass__()
        # Class keywords accumulate down the hierarchy (a subclass's override its parents'),
        # also for a subclass that defines its own forward or a base that defines none.
        merged = {**getattr(cls, _CLASS_OPTIONS, {}), **options}
        setattr(cls, _CLASS_OPTIONS, merged)
        own = cls.__dict__.get("forward")
        if own is None and not options:
            return  # inherits the parent's wrapped forward unchanged
        if own is None:
            inherited = cls.forward
            if inherited is nn.Module.forward:  # a base without forward: options wait for one
                zero_order(None, **merged)  # validate
                return
            # Re-wrap the parent's original forward with the merged options.
            cls.forward = getattr(inherited, _ORIGINAL, inherited)  # type: ignore[method-assign]
        enable_zero_order_gradients(cls, **merged)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
        """Directions with zero mean and unit variance. Not overridden: the built-in seeded
        Gaussian of :func:`esmaml.zero_order` is used (pass ``seed=`` as a class keyword)."""
        return torch.randn(sample_shape, device=next(self.parameters()).device)
