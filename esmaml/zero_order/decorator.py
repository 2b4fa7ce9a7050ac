"""``zero_order``: a decorator that gives any scalar function a zero-order (ES) gradient.

A drop-in for ``torchopt.diff.zero_order`` that is correct (the forward estimator divides by
sigma around a fixed f(theta)), batched (torch.func.vmap over all perturbations), seeded and
device-aware. The call returns f(theta); with grad enabled it also evaluates the perturbations,
in the same batched call as f(theta), and backward scales that estimate by the upstream gradient.

Reproducibility: with ``seed`` (or ``generator``) each estimate draws one 63-bit seed from that
stream; that seed alone regenerates every direction of the call (see ``noise.noise_from_seed``),
and it is recorded in :class:`ZeroOrderStats`. Only the objective values are stored.

The tensor work of an estimate is one function, :func:`_estimate_core`, run eagerly or, with
``compile=True``, through torch.compile (``compiled.py``).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.utils._pytree as pytree
from torch import Tensor

from esmaml.zero_order.compiled import compile_fresh
from esmaml.zero_order.estimators import (
    Method,
    Shaping,
    check_method,
    check_shaping,
    check_sigma,
    estimator_weights,
    population_size,
)
from esmaml.zero_order.evaluation import (
    BatchMode,
    PopulationEvaluator,
    batched_evaluation,
    check_batch_mode,
    check_chunk_size,
    check_compile,
    check_objective,
    first_line,
    user_stacklevel,
)
from esmaml.zero_order.noise import (
    NoiseKind,
    check_noise_kind,
    draw_seed,
    make_generator,
    sample_noise,
)

_ORTHOGONAL_NEEDS_GAUSSIAN = (
    "sampling='orthogonal' needs the built-in Gaussian: pass distribution=None or "
    "torch.distributions.Normal(0, 1)"
)

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


def _is_standard_normal(distribution: object) -> bool:
    if not isinstance(distribution, torch.distributions.Normal):
        return False
    loc, scale = distribution.loc, distribution.scale
    return bool(distribution.batch_shape == torch.Size()) and bool(loc == 0) and bool(scale == 1)


def _as_sampler(distribution: object) -> Callable[[torch.Size], Tensor] | None:
    """None means the built-in seeded Gaussian; otherwise a ``sample(sample_shape)`` callable."""
    if distribution is None or _is_standard_normal(distribution):
        return None
    sample = getattr(distribution, "sample", None)
    if callable(sample):
        return sample
    if callable(distribution):
        return distribution  # type: ignore[return-value]
    raise TypeError(
        "distribution must be None (standard Gaussian), a torch.distributions.Distribution, an "
        "object with .sample(sample_shape), or a callable sample(sample_shape); got "
        f"{type(distribution).__name__}"
    )


def _check_moments(distribution: object) -> None:
    """A ``torch.distributions`` noise must have zero mean and unit variance per element: the
    estimators divide by sigma assuming so, and any other noise biases the gradient. (A custom
    sampler's moments cannot be read; it carries the same contract.)"""
    if not isinstance(distribution, torch.distributions.Distribution):
        return
    try:
        mean = torch.as_tensor(distribution.mean, dtype=torch.float64)
        variance = torch.as_tensor(distribution.variance, dtype=torch.float64)
    except NotImplementedError:
        return
    if not (
        torch.allclose(mean, torch.zeros_like(mean), atol=1e-6)
        and torch.allclose(variance, torch.ones_like(variance), rtol=1e-5, atol=0)
    ):
        shown = ", ".join(
            f"{name} {t.item():.6g}"
            if t.numel() == 1
            else f"{name} in [{t.min():.6g}, {t.max():.6g}]"
            for name, t in (("mean", mean), ("variance", variance))
        )
        raise ValueError(
            f"distribution={distribution!r} has {shown}; the estimators need zero mean and unit "
            "variance per element (scale the step with sigma instead), e.g. "
            "torch.distributions.Normal(0, 1) or None"
        )


def _normalise_argnums(argnums: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(argnums, bool) or not isinstance(argnums, (int, tuple, list)):
        raise TypeError(f"argnums must be an int or a tuple of ints, got {argnums!r}")
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums:
        raise ValueError("argnums must name at least one argument")
    for num in nums:
        if isinstance(num, bool) or not isinstance(num, int):
            raise TypeError(f"argnums must contain ints, got {num!r} in {argnums!r}")
    return nums


class _Leaves:
    """The tensor leaves of the differentiated arguments, deduplicated by identity so a tied
    tensor is perturbed once and receives its gradient once."""

    def __init__(self, args: tuple[Any, ...], argnums: tuple[int, ...], name: str):
        resolved: list[int] = []
        for num in argnums:
            if not -len(args) <= num < len(args):
                raise ValueError(
                    f"argnums={num} is out of range for {name} called with {len(args)} positional "
                    f"argument(s); valid: {-len(args)} to {len(args) - 1}"
                )
            resolved.append(num % len(args))
        if len(set(resolved)) != len(resolved):
            raise ValueError(f"argnums {argnums} names the same argument twice")
        self.argnums = tuple(resolved)
        self.flat: list[list[Any]] = []
        self.unflatten: list[Callable[[list[Any]], Any]] = []
        self.unique: list[Tensor] = []  # differentiated (floating, requires grad) leaves
        self.slots: list[list[int | None]] = []  # per arg, per leaf: index into unique or None
        position: dict[int, int] = {}
        for num in self.argnums:
            leaves, unflatten = _flatten(args[num])
            tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
            if not tensors:
                raise TypeError(
                    f"argument {num} of {name} is differentiated (argnums) but holds no tensor; "
                    "pass a tensor or a dict/tuple/list of tensors"
                )
            slots: list[int | None] = []
            for leaf in leaves:
                if leaf is None:  # an absent entry (a bias-less layer): passed through
                    slots.append(None)
                    continue
                if not isinstance(leaf, Tensor):
                    raise TypeError(
                        f"argument {num} of {name} holds a {type(leaf).__name__} leaf; every leaf "
                        "of a differentiated argument must be a tensor (or None)"
                    )
                if not (leaf.is_floating_point() and leaf.requires_grad):
                    slots.append(None)  # frozen: passed through unperturbed
                    continue
                if id(leaf) not in position:
                    position[id(leaf)] = len(self.unique)
                    self.unique.append(leaf)
                slots.append(position[id(leaf)])
            self.flat.append(leaves)
            self.unflatten.append(unflatten)
            self.slots.append(slots)

    def rebuild(self, args: tuple[Any, ...], replacement: Sequence[Tensor]) -> list[Any]:
        """``args`` with each differentiated leaf replaced by ``replacement[its index]``."""
        new_args = list(args)
        for num, leaves, unflatten, slots in zip(
            self.argnums, self.flat, self.unflatten, self.slots
        ):
            new_leaves = [
                leaf if slot is None else replacement[slot] for leaf, slot in zip(leaves, slots)
            ]
            new_args[num] = unflatten(new_leaves)
        return new_args


def _flatten(tree: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """``pytree.tree_flatten`` with its inverse; a tensor, or a plain tuple, list or dict of
    tensors (the usual parameter containers), skips the general pytree walk."""
    if isinstance(tree, Tensor):
        return [tree], _first
    kind = type(tree)
    if kind in (tuple, list) and all(isinstance(leaf, Tensor) for leaf in tree):
        return list(tree), kind
    if kind is dict and all(isinstance(leaf, Tensor) for leaf in tree.values()):
        return list(tree.values()), functools.partial(_rebuild_dict, list(tree))
    leaves, spec = pytree.tree_flatten(tree)
    return leaves, functools.partial(pytree.tree_unflatten, treespec=spec)


def _first(leaves: list[Any]) -> Any:
    return leaves[0]


def _rebuild_dict(keys: list[Any], leaves: list[Any]) -> dict[Any, Any]:
    return dict(zip(keys, leaves))


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


class _Call:
    """One call of a decorated function: f(theta) and, when a gradient is wanted, the estimate."""

    def __init__(
        self,
        owner: ZeroOrderFunction,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        leaves: _Leaves,
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
        return _as_value(value)

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
        return grads, _finite_mean(stats.values)

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
            grads = _combine(weights, noise, flat, leaves)
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


def _estimate_core(
    objective: Callable[[Sequence[Tensor]], Tensor],
    evaluate: Callable[[Callable[[Sequence[Tensor]], Tensor], Sequence[Tensor]], Tensor],
    centers: Sequence[Tensor],
    noise: Sequence[Tensor] | None,
    flat: Tensor | None,
    value: Tensor | None,
    *,
    sigma: float,
    method: Method,
    shaping: Shaping,
    with_center: bool,
    enable_grad: bool,
) -> tuple[Tensor | None, Tensor, Tensor | None, list[Tensor] | None]:
    """The tensor work of one estimate, pure tensor code so ``compile=True`` can trace it whole.

    Builds the population from the directions (``noise`` per leaf, or the column blocks of
    ``flat``), evaluates it, and returns f(theta) (member 0 ``with_center``, else None), the
    sampled values ``[M]`` (at least float32), and the weights and weighted sum for all-finite
    values, per leaf: the caller recomputes both when a value is NaN or inf."""
    directions = noise if noise is not None else _leaf_noise(flat, centers)  # type: ignore[arg-type]
    population = [
        _perturbed(center, z, sigma, method, with_center=with_center)
        for center, z in zip(centers, directions)
    ]
    with torch.set_grad_enabled(enable_grad):
        if enable_grad:  # members require grad, so the function may differentiate inside
            population = [member.requires_grad_() for member in population]
        values = evaluate(objective, population).detach()
    center = None
    if with_center:
        center, values = _as_value(values[0]), values[1:]
        value = center
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    if method == "forward" and shaping == "none" and value is None:
        return center, values, None, None  # no baseline: the caller raises
    weights = estimator_weights(
        values,
        method=method,
        sigma=sigma,
        baseline=None if value is None else value.to(values.dtype),
        shaping=shaping,
    )
    return center, values, weights, _combine(weights, noise, flat, centers)


def _leaf_noise(flat: Tensor, leaves: Sequence[Tensor]) -> list[Tensor]:
    """The per-leaf directions ``[N, *leaf.shape]``: views of the column blocks of ``flat``."""
    num = flat.shape[0]
    if len(leaves) == 1:
        return [flat.view(num, *leaves[0].shape)]
    pieces = flat.split([leaf.numel() for leaf in leaves], dim=1)
    return [piece.reshape(num, *leaf.shape) for piece, leaf in zip(pieces, leaves)]


def _combine(
    weights: Tensor,
    noise: Sequence[Tensor] | None,
    flat: Tensor | None,
    leaves: Sequence[Tensor],
) -> list[Tensor]:
    """``sum_i w_i z_i`` per leaf: one product on the flat noise ``[N, D]`` when there is one
    (the leaves' estimates are views of it), else one product per leaf."""
    if flat is None:
        assert noise is not None
        return [_weighted_sum(weights, z) for z in noise]
    total = _weighted_sum(weights, flat)
    if len(leaves) == 1:
        return [total.view(leaves[0].shape)]
    pieces = total.split([leaf.numel() for leaf in leaves])
    return [piece.view(leaf.shape) for piece, leaf in zip(pieces, leaves)]


def _batched_evaluations(chunk_size: int | None) -> tuple[Callable[..., Tensor], ...]:
    """What the compiled core evaluates with, vmapped and in population mode. Made once per
    function, since dynamo guards on these objects."""
    return tuple(
        functools.partial(batched_evaluation, vmapped=vmapped, chunk_size=chunk_size)
        for vmapped in (True, False)
    )


def _compile_failure(name: str, failure: Exception) -> str:
    """Why a compiled call failed, for the fallback warning."""
    from torch._dynamo.exc import FailOnRecompileLimitHit  # loaded by the failed compile anyway

    if isinstance(failure, FailOnRecompileLimitHit):
        return (
            f"{name} hit dynamo's recompile limit: its input shapes, dtypes or Python constants "
            "(arguments, closure variables) changed more often than compile=True pays for"
        )
    return f"{name} could not be compiled ({type(failure).__name__}: {first_line(failure)})"


def _finite_mean(values: Tensor) -> Tensor:
    """The ``population_mean`` value: the mean of the finite sampled values, in their dtype
    (at least float32, as recorded), never cast down to a low-precision parameter dtype."""
    return values[torch.isfinite(values)].mean()


def _as_value(value: Tensor) -> Tensor:
    """f(theta) as returned: detached; an integer or bool objective (a count, a success flag)
    is promoted to floating point so it still gets a gradient."""
    value = value.detach()
    if value.is_floating_point():
        return value
    return value.to(torch.promote_types(value.dtype, torch.float32))


def _perturbed(
    center: Tensor, noise: Tensor, sigma: float, method: Method, *, with_center: bool = False
) -> Tensor:
    """The members ``theta + sigma z_i`` ``[N, *shape]``, then for antithetic ``theta - sigma z_i``
    (``[2N, *shape]``), written in one pass (no intermediate ``sigma z`` or concatenation).
    ``with_center`` puts ``theta`` itself first, as member 0."""
    num = noise.shape[0]
    if method != "antithetic" and not with_center:
        return torch.add(center, noise, alpha=sigma)
    start = int(with_center)
    members = noise.new_empty((start + population_size(num, method), *noise.shape[1:]))
    if with_center:
        members[0].copy_(center)
    torch.add(center, noise, alpha=sigma, out=members[start : start + num])
    if method == "antithetic":
        torch.sub(center, noise, alpha=sigma, out=members[start + num :])
    return members


def _weighted_sum(weights: Tensor, noise: Tensor) -> Tensor:
    """``sum_i w_i z_i`` for ``noise [N, *shape]``: one matrix-vector product."""
    flat = noise.reshape(noise.shape[0], -1)
    return (weights.to(device=noise.device, dtype=noise.dtype) @ flat).reshape(noise.shape[1:])


class ZeroOrderFunction:
    """A function with a zero-order gradient; made by :func:`zero_order`.

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
        self.sampler = _as_sampler(distribution)
        self.method, self.argnums, self.num_samples, self.sigma = (
            method,
            argnums,
            num_samples,
            sigma,
        )
        if sampling == "orthogonal" and self.sampler is not None:
            raise ValueError(_ORTHOGONAL_NEEDS_GAUSSIAN)
        self.sampling, self.shaping = sampling, shaping
        self.evaluator = PopulationEvaluator(batch, chunk_size, name=self.name)
        self.compile = check_compile(compile, batch)
        self._compiled_core: Callable[..., Any] | None = None
        self._batched_evaluation = _batched_evaluations(chunk_size)
        self.enable_grad, self.nan_policy, self.on_stats = enable_grad, nan_policy, on_stats
        self.value = value
        if generator is not None and seed is not None:
            raise ValueError("pass either seed or generator, not both")
        self.generator = (
            generator
            if generator is not None
            else (make_generator(seed) if seed is not None else None)
        )
        self.last_stats: ZeroOrderStats | None = None
        self.current_seed: int | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        leaves = _Leaves(args, self.argnums, self.name)
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
        self._batched_evaluation = _batched_evaluations(self.evaluator.chunk_size)

    def _estimate_core(
        self,
        objective: Callable[[Sequence[Tensor]], Tensor],
        centers: Sequence[Tensor],
        noise: Sequence[Tensor] | None,
        flat: Tensor | None,
        value: Tensor | None,
        with_center: bool,
    ) -> tuple[Tensor | None, Tensor, Tensor | None, list[Tensor] | None]:
        """:func:`_estimate_core`, through torch.compile with ``compile=True``. The first
        compiled call that fails (a graph break, no C++ compiler) is rerun eagerly: if that
        works the failure was the compiler's, and the function stays eager with one warning; if
        not, the eager error is the one raised."""
        options = dict(
            sigma=self.sigma,
            method=self.method,
            shaping=self.shaping,
            with_center=with_center,
            enable_grad=self.enable_grad,
        )
        mode = self.evaluator.mode
        if not self.compile or mode == "sequential":
            return _estimate_core(objective, self.evaluator, centers, noise, flat, value, **options)
        if self._compiled_core is None:
            self._compiled_core = compile_fresh(_estimate_core)
        evaluate = self._batched_evaluation[mode == "population"]
        failure: Exception | None = None
        try:
            result = self._compiled_core(
                objective, evaluate, centers, noise, flat, value, **options
            )
        except Exception as error:  # the eager rerun below tells whose fault it was
            failure = error
        if failure is None:
            if mode == "auto":
                self.evaluator.resolve("vmap")
            return result
        result = _estimate_core(objective, self.evaluator, centers, noise, flat, value, **options)
        if self.evaluator.mode != "sequential":  # else the sequential warning has said it all
            warnings.warn(
                f"zero_order: {_compile_failure(self.name, failure)}; evaluating it without "
                "torch.compile from now on.",
                RuntimeWarning,
                stacklevel=user_stacklevel(),
            )
        self.compile, self._compiled_core = False, None
        return result

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
        return seed, noise if noise is not None else _leaf_noise(flat, leaves)  # type: ignore[arg-type]

    def _sample(
        self, leaves: Sequence[Tensor]
    ) -> tuple[int | None, Tensor | None, list[Tensor] | None]:
        """The seed, and either the flat ``[N, D]`` noise whose column blocks are the per-leaf
        directions (built-in sampler, one dtype and device: ``(seed, flat, None)``) or the
        per-leaf directions themselves (``(seed, None, noise)``)."""
        num = self.num_samples
        seed = draw_seed(self.generator) if self.generator is not None else None
        self.current_seed = seed
        if self.sampler is None:
            device = leaves[0].device
            dtype = functools.reduce(torch.promote_types, [leaf.dtype for leaf in leaves])
            generator = make_generator(seed, device) if seed is not None else None
            flat = sample_noise(
                (num, sum(leaf.numel() for leaf in leaves)),
                kind=self.sampling,
                generator=generator,
                device=device,
                dtype=dtype,
            )
            if all(leaf.dtype == dtype and leaf.device == device for leaf in leaves):
                return seed, flat, None
            pieces = flat.split([leaf.numel() for leaf in leaves], dim=1)
            return (
                seed,
                None,
                [
                    piece.reshape(num, *leaf.shape).to(device=leaf.device, dtype=leaf.dtype)
                    for piece, leaf in zip(pieces, leaves)
                ],
            )
        devices = sorted({leaf.device for leaf in leaves if leaf.device.type == "cuda"}, key=str)
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            noise = []
            for leaf in leaves:
                shape = torch.Size((num, *leaf.shape))
                sample = self.sampler(shape)
                if not isinstance(sample, Tensor) or sample.shape != shape:
                    got = (
                        tuple(sample.shape) if isinstance(sample, Tensor) else type(sample).__name__
                    )
                    raise ValueError(
                        f"distribution returned samples of shape {got} for sample_shape="
                        f"{tuple(shape)}; it must return exactly sample_shape"
                    )
                noise.append(sample.to(device=leaf.device, dtype=leaf.dtype))
        return seed, None, noise

    def _record(self, stats: ZeroOrderStats) -> None:
        self.last_stats = stats
        if self.on_stats is not None:
            self.on_stats(stats)


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
    method = check_method(method)
    sigma = check_sigma(sigma)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    nums = _normalise_argnums(argnums)
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
    # Validate everything now, not when decorating or at the first backward.
    if _as_sampler(distribution) is not None and sampling == "orthogonal":
        raise ValueError(_ORTHOGONAL_NEEDS_GAUSSIAN)
    _check_moments(distribution)
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
