"""``zero_order``: a decorator that gives any scalar function a zero-order (ES) gradient.

A drop-in for ``torchopt.diff.zero_order`` that is correct (the forward estimator divides by
sigma around a fixed f(theta)), batched (torch.func.vmap over all perturbations), seeded and
device-aware. The call returns f(theta); with grad enabled it also evaluates the perturbations,
in the same batched call as f(theta), and backward scales that estimate by the upstream gradient.

Reproducibility: with ``seed`` (or ``generator``) each estimate draws one 63-bit seed from that
stream; that seed alone regenerates every direction of the call (see ``noise.noise_from_seed``),
and it is recorded in :class:`ZeroOrderStats`. Only the objective values are stored.

This module reads top to bottom: :func:`zero_order` checks every option once and makes a
:class:`ZeroOrderFunction`; a call flattens the differentiated arguments (:mod:`.pytree`), draws
the directions (:mod:`.noise`), and runs the estimate kernel (:mod:`.kernel`) eagerly or through
torch.compile (:mod:`.compiled`) inside the :class:`ZeroOrder` autograd node.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from esmaml.zero_order.compiled import batched_evaluations, run_estimate_core
from esmaml.zero_order.estimators import (
    Method,
    Shaping,
    check_method,
    check_shaping,
    check_sigma,
    estimator_weights,
)
from esmaml.zero_order.evaluation import (
    BatchMode,
    PopulationEvaluator,
    check_batch_mode,
    check_chunk_size,
    check_compile,
    check_objective,
)
from esmaml.zero_order.kernel import as_value, combine, finite_mean, leaf_noise
from esmaml.zero_order.noise import (
    ORTHOGONAL_NEEDS_GAUSSIAN,
    NoiseKind,
    as_sampler,
    check_moments,
    check_noise_kind,
    draw_seed,
    leaf_directions,
    make_generator,
)
from esmaml.zero_order.pytree import Leaves, normalise_argnums

NanPolicy = Literal["raise", "drop"]
ValueMode = Literal["center", "population_mean"]


@dataclass(frozen=True)
class ZeroOrderStats:
    """What one estimate sampled. ``values`` is in the population layout of the method
    (antithetic: the N ``+z`` values, then the N ``-z`` values)."""

    value: float
    values: Tensor
    num_samples: int
    num_dropped: int
    batch_mode: str
    seed: int | None

    @property
    def mean(self) -> float:
        finite = self.values[torch.isfinite(self.values)]
        return float(finite.mean()) if finite.numel() else math.nan

    @property
    def std(self) -> float:
        finite = self.values[torch.isfinite(self.values)]
        return float(finite.std(unbiased=False)) if finite.numel() else math.nan

    @property
    def num_evaluations(self) -> int:
        return int(self.values.numel())


def zero_order(
    distribution: object = None,
    method: Method = "naive",
    argnums: int | Sequence[int] = (0,),
    num_samples: int = 1,
    sigma: float = 1.0,
    *,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    sampling: NoiseKind = "gaussian",
    shaping: Shaping = "none",
    batch: BatchMode = "auto",
    chunk_size: int | None = None,
    enable_grad: bool = False,
    nan_policy: NanPolicy = "raise",
    on_stats: Callable[[ZeroOrderStats], None] | None = None,
    value: ValueMode = "center",
    compile: bool = False,
) -> Callable[[Callable[..., Tensor]], ZeroOrderFunction]:
    """Decorate a scalar function so its gradient w.r.t. ``argnums`` is a zero-order estimate.

    ``grad = g * 1/N sum_i w(f(theta + sigma z_i), ...) z_i`` with the naive, forward or
    antithetic weights of :mod:`esmaml.zero_order.estimators`; ``g`` is the upstream gradient.

    Args:
        distribution: noise with zero mean and unit variance per element: None (built-in seeded
            Gaussian), a ``torch.distributions.Distribution``, an object with
            ``.sample(sample_shape)``, or a callable ``sample(sample_shape)``.
        method: ``'naive'``, ``'forward'`` or ``'antithetic'`` (N pairs, 2N evaluations).
        argnums: which positional arguments to differentiate; each may be a pytree of tensors.
            Leaves that do not require grad are frozen: not perturbed, no gradient.
        num_samples: N, the number of directions.
        sigma: the smoothing scale (> 0).
        seed / generator: a reproducible noise stream (default: torch's global RNG).
        sampling: ``'gaussian'`` or ``'orthogonal'`` directions.
        shaping: ``'none'`` (the estimator's math), ``'zscore'`` or ``'centered_rank'``.
        batch: ``'auto'`` (vmap, else sequential with a warning), ``'vmap'``, ``'sequential'``,
            or ``'population'`` (the function takes leaves with a leading dim M, returns [M]).
        chunk_size: at most this many perturbations per vmapped call (bounds memory). None:
            one call, or on CPU chunks of about 8 MB of perturbed parameters for large
            populations (see ``evaluation.auto_chunk_size``).
        enable_grad: run the function with grad enabled (for inner torch.autograd calls).
        nan_policy: ``'raise'`` on NaN/inf sampled values, or ``'drop'`` those samples.
        on_stats: called with the :class:`ZeroOrderStats` of each estimate.
        value: what the call returns: ``'center'``, f(theta) (TorchOpt's behaviour; with
            grad enabled it is member 0 of the batched population call), or
            ``'population_mean'``, the mean of the perturbed values (saves the f(theta)
            evaluation, the usual ES report).
        compile: run the estimate's tensor work (perturbation, the vmapped or population-mode
            evaluation, the weights and the weighted sum) through ``torch.compile`` (inductor).
            Noise is still drawn eagerly, so a seed names the same directions; values agree
            with eager to rounding, not bitwise. The first call compiles (seconds), as does a
            call whose shapes, dtypes or Python constants match no compiled one; it pays for a
            long-lived function called many times with fixed shapes (2.7x per gradient on
            benchmarks/zero_order.py's seed case). If compilation fails (a graph break, no C++
            compiler, more than dynamo's 8 recompilations), the function runs eagerly from then
            on, with one warning.
    """
    # Every option is checked here, once, when the decorator is made: not when it decorates,
    # not at the first backward.
    method = check_method(method)
    sigma = check_sigma(sigma)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    nums = normalise_argnums(argnums)
    if len(set(nums)) != len(nums):
        raise ValueError(f"argnums {argnums!r} names the same argument twice")
    sampling = check_noise_kind(sampling)
    shaping = check_shaping(shaping)
    if nan_policy not in ("raise", "drop"):
        raise ValueError(f"nan_policy={nan_policy!r} is not valid; valid: raise, drop")
    if value not in ("center", "population_mean"):
        raise ValueError(f"value={value!r} is not valid; valid: center, population_mean")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {seed!r}")
    if as_sampler(distribution) is not None and sampling == "orthogonal":
        raise ValueError(ORTHOGONAL_NEEDS_GAUSSIAN)
    check_moments(distribution)
    if shaping != "none" and num_samples == 1 and method != "antithetic":
        # One shaped value is always 0 (z-score and centred rank ignore a common shift).
        raise ValueError(
            f"shaping={shaping!r} with num_samples=1 and method={method!r} gives a zero "
            "gradient (one shaped value is always 0); use num_samples >= 2, "
            "method='antithetic' or shaping='none'"
        )
    if not isinstance(enable_grad, bool):
        raise TypeError(f"enable_grad must be True or False, got {enable_grad!r}")
    if on_stats is not None and not callable(on_stats):
        raise TypeError(
            f"on_stats must be None or a callable taking a ZeroOrderStats, got {on_stats!r}"
        )
    check_batch_mode(batch)
    check_chunk_size(chunk_size)
    check_compile(compile, batch)
    if generator is not None and seed is not None:
        raise ValueError("pass either seed or generator, not both")

    def decorator(fn: Callable[..., Tensor]) -> ZeroOrderFunction:
        if not callable(fn):
            raise TypeError(f"zero_order decorates a callable, got {type(fn).__name__}")
        return ZeroOrderFunction(
            fn,
            distribution,
            method,
            nums,
            num_samples,
            sigma,
            seed=seed,
            generator=generator,
            sampling=sampling,
            shaping=shaping,
            batch=batch,
            chunk_size=chunk_size,
            enable_grad=enable_grad,
            nan_policy=nan_policy,
            on_stats=on_stats,
            value=value,
            compile=compile,
        )

    return decorator


class ZeroOrderFunction:
    """A function with a zero-order gradient; made by :func:`zero_order`, which checks the
    options (this class takes them as given).

    ``last_stats`` holds the :class:`ZeroOrderStats` of the latest estimate. ``current_seed``
    is the seed of the directions being evaluated (set before the function sees the
    population; None without ``seed``/``generator``): a remote evaluator regenerates the
    population from it instead of shipping it.
    """

    def __init__(
        self,
        fn: Callable[..., Tensor],
        distribution: object,
        method: Method,
        argnums: tuple[int, ...],
        num_samples: int,
        sigma: float,
        *,
        seed: int | None,
        generator: torch.Generator | None,
        sampling: NoiseKind,
        shaping: Shaping,
        batch: BatchMode,
        chunk_size: int | None,
        enable_grad: bool,
        nan_policy: NanPolicy,
        on_stats: Callable[[ZeroOrderStats], None] | None,
        value: ValueMode = "center",
        compile: bool = False,
    ):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = getattr(fn, "__qualname__", getattr(fn, "__name__", "the function"))
        self.sampler = as_sampler(distribution)
        self.method, self.argnums, self.num_samples, self.sigma = (
            method,
            argnums,
            num_samples,
            sigma,
        )
        self.sampling, self.shaping = sampling, shaping
        self.evaluator = PopulationEvaluator(batch, chunk_size, name=self.name)
        self.compile = compile
        self._compiled_core: Callable[..., Any] | None = None
        self._batched_evaluation = batched_evaluations(chunk_size)
        self.enable_grad, self.nan_policy, self.on_stats = enable_grad, nan_policy, on_stats
        self.value = value
        self.generator = (
            generator
            if generator is not None
            else (make_generator(seed) if seed is not None else None)
        )
        self.last_stats: ZeroOrderStats | None = None
        self.current_seed: int | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        leaves = Leaves(args, self.argnums, self.name)
        call = _Call(self, args, kwargs, leaves)
        if not leaves.unique or not torch.is_grad_enabled():
            if self.value == "population_mean" and leaves.unique:
                return call.estimate_eagerly(leaves.unique)[1]
            return call.center(leaves.unique)
        return ZeroOrder.apply(call, *leaves.unique)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_compiled_core": None}  # compiled code is rebuilt, not pickled

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Pickles from before compile= existed lack its attributes: they were eager.
        state.setdefault("compile", False)
        state["_compiled_core"] = None
        self.__dict__.update(state)
        self._batched_evaluation = batched_evaluations(self.evaluator.chunk_size)

    def _estimate_core(
        self,
        objective: Callable[[Sequence[Tensor]], Tensor],
        centers: Sequence[Tensor],
        noise: Sequence[Tensor] | None,
        flat: Tensor | None,
        value: Tensor | None,
        with_center: bool,
    ) -> tuple[Tensor | None, Tensor, Tensor | None, list[Tensor] | None]:
        """The estimate kernel with this function's options, compiled with ``compile=True``
        (:func:`esmaml.zero_order.compiled.run_estimate_core`)."""
        return run_estimate_core(
            self,
            objective,
            centers,
            noise,
            flat,
            value,
            sigma=self.sigma,
            method=self.method,
            shaping=self.shaping,
            with_center=with_center,
            enable_grad=self.enable_grad,
        )

    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., Tensor]:
        # Decorating a method: bind like a function would.
        return self if instance is None else functools.partial(self.__call__, instance)

    @property
    def evaluates_center(self) -> bool:
        """Whether an estimate evaluates f(theta): to return it (``value='center'``) or as the
        forward estimator's baseline on raw values (shaped values ignore it, see
        estimator_weights)."""
        return self.value == "center" or (self.method == "forward" and self.shaping == "none")

    def sample_directions(self, leaves: Sequence[Tensor]) -> tuple[int | None, list[Tensor]]:
        """Unit-variance directions ``[N, *leaf.shape]`` per leaf, on each leaf's device/dtype."""
        seed, flat, noise = self._sample(leaves)
        return seed, noise if noise is not None else leaf_noise(flat, leaves)  # type: ignore[arg-type]

    def _sample(
        self, leaves: Sequence[Tensor]
    ) -> tuple[int | None, Tensor | None, list[Tensor] | None]:
        """The seed of this estimate (also ``current_seed``) and its directions, as
        :func:`esmaml.zero_order.noise.leaf_directions` gives them: ``(seed, flat, None)`` or
        ``(seed, None, per-leaf noise)``."""
        seed = draw_seed(self.generator) if self.generator is not None else None
        self.current_seed = seed
        flat, noise = leaf_directions(
            leaves, self.num_samples, kind=self.sampling, sampler=self.sampler, seed=seed
        )
        return seed, flat, noise

    def _record(self, stats: ZeroOrderStats) -> None:
        self.last_stats = stats
        if self.on_stats is not None:
            self.on_stats(stats)


class _Call:
    """One call of a decorated function: f(theta) and, when a gradient is wanted, the estimate."""

    def __init__(
        self,
        owner: ZeroOrderFunction,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        leaves: Leaves,
    ):
        self.owner, self.args, self.kwargs, self.leaves = owner, args, kwargs, leaves

    def _objective(self, replacement: Sequence[Tensor]) -> Tensor:
        return self.owner.fn(*self.leaves.rebuild(self.args, replacement), **self.kwargs)

    def center(self, leaves: Sequence[Tensor]) -> Tensor:
        owner = self.owner
        with torch.set_grad_enabled(owner.enable_grad):
            if owner.evaluator.mode == "population":
                value = self._objective([leaf.unsqueeze(0) for leaf in leaves])
                if not isinstance(value, Tensor) or tuple(value.shape) != (1,):
                    got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                    raise ValueError(
                        f"with batch='population', {owner.name} must return shape (1,) for a "
                        f"population of 1, got {got}"
                    )
                value = value[0]
            else:
                value = check_objective(self._objective(leaves), owner.name)
        return as_value(value)

    def estimate_eagerly(self, leaves: Sequence[Tensor]) -> tuple[list[Tensor], Tensor]:
        """The estimate and the returned value: f(theta) (``value='center'``) or the mean of the
        finite sampled values (``value='population_mean'``)."""
        owner = self.owner
        if not owner.evaluates_center:
            grads, center = self.estimate(leaves, with_center=False)
        elif owner.evaluator.mode == "population":
            # A population of one means f(theta) to a population-mode function (ES-MAML
            # averages it over all tasks), so there the centre keeps its own call.
            center = self.center(leaves)
            grads, _ = self.estimate(leaves, center, with_center=False)
        else:  # vmapped or sequential members are independent: the centre is member 0
            grads, center = self.estimate(leaves, with_center=True)
        if owner.value == "center":
            assert center is not None
            return grads, center
        stats = owner.last_stats
        assert stats is not None
        return grads, finite_mean(stats.values)

    def estimate(
        self, leaves: Sequence[Tensor], value: Tensor | None = None, *, with_center: bool
    ) -> tuple[list[Tensor], Tensor | None]:
        """The estimate per leaf, and f(theta): ``value`` as given or, ``with_center``,
        evaluated as member 0 of the population call."""
        owner = self.owner
        num, sigma, method = owner.num_samples, owner.sigma, owner.method
        seed, flat, noise = owner._sample(leaves)
        center, values, weights, grads = owner._estimate_core(
            self._objective, [leaf.detach() for leaf in leaves], noise, flat, value, with_center
        )
        if with_center:
            value = center
        if (
            method == "forward"
            and owner.shaping == "none"
            and (value is None or not torch.isfinite(value))
        ):
            raise FloatingPointError(
                f"zero_order: {owner.name}(theta) = {value} is the forward estimator's "
                "baseline and must be finite"
            )
        valid = None
        dropped = 0
        # Fast path: a finite sum means no NaN/inf (one reduction and one sync).
        finite = None if math.isfinite(float(values.sum())) else torch.isfinite(values)
        if finite is not None and not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            if owner.nan_policy == "raise":
                raise FloatingPointError(
                    f"zero_order: {bad.numel()} of {values.numel()} sampled values of "
                    f"{owner.name} are NaN or inf (first at population index {int(bad[0])}); "
                    "pass nan_policy='drop' to drop those samples"
                )
            valid = finite[:num] & finite[num:] if method == "antithetic" else finite
            dropped = int((~valid).sum())
            if dropped == num:
                raise FloatingPointError(
                    f"zero_order: every one of the {num} samples of {owner.name} was NaN or inf"
                )
            values = torch.where(finite, values, torch.zeros_like(values))
            weights = estimator_weights(
                values,
                method=method,
                sigma=sigma,
                baseline=None if value is None else value.to(values.dtype),
                shaping=owner.shaping,
                valid=valid,
            )
            grads = combine(weights, noise, flat, leaves)
        owner._record(
            ZeroOrderStats(
                value=math.nan if value is None else float(value),
                values=values if finite is None else torch.where(finite, values, torch.nan),
                num_samples=num,
                num_dropped=dropped,
                batch_mode=owner.evaluator.mode,
                seed=seed,
            )
        )
        return grads, value  # type: ignore[return-value]


class ZeroOrder(torch.autograd.Function):
    """Autograd node: its grad_fn reads ``ZeroOrderBackward``, as TorchOpt's does.

    The estimate is computed in the forward, so f(theta) rides in the same batched call as the
    perturbations; backward only scales it by the upstream gradient."""

    @staticmethod
    def forward(ctx: Any, call: _Call, *leaves: Tensor) -> Tensor:
        ctx.grads, value = call.estimate_eagerly(leaves)
        return value

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        return (None, *(_scaled(grad_output, g) for g in ctx.grads))


def _scaled(grad_output: Tensor, grad: Tensor) -> Tensor:
    """The upstream gradient times the estimate, in the estimate's dtype."""
    if grad_output.dtype != grad.dtype:
        grad_output = grad_output.to(grad.dtype)
    return grad_output * grad
