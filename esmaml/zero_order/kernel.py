"""The estimate kernel: the tensor work of one zero-order estimate, beside the estimators.

:func:`estimate_core` builds the perturbed population from the directions, evaluates it, and
weighs the directions with :func:`esmaml.zero_order.estimators.estimator_weights`. It is pure
tensor code, so ``compile=True`` traces it whole (:mod:`esmaml.zero_order.compiled`). Its
members are written by :func:`_perturbed`, the decorator's private pytree-leaf form (``theta``
as member 0 when asked, ``theta + sigma z`` in one fused pass into one buffer).
:func:`esmaml.zero_order.estimators.perturb` is the one public perturbation, the batched
``[*B, M, D]`` form that the adaptation operators, ES-MAML's ``ask`` and its remote evaluators
share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from esmaml.zero_order.estimators import Method, Shaping, estimator_weights, population_size


def estimate_core(
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
    directions = noise if noise is not None else leaf_noise(flat, centers)  # type: ignore[arg-type]
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
        center, values = as_value(values[0]), values[1:]
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
    return center, values, weights, combine(weights, noise, flat, centers)


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


def leaf_noise(flat: Tensor, leaves: Sequence[Tensor]) -> list[Tensor]:
    """The per-leaf directions ``[N, *leaf.shape]``: views of the column blocks of ``flat``."""
    num = flat.shape[0]
    if len(leaves) == 1:
        return [flat.view(num, *leaves[0].shape)]
    pieces = flat.split([leaf.numel() for leaf in leaves], dim=1)
    return [piece.reshape(num, *leaf.shape) for piece, leaf in zip(pieces, leaves)]


def combine(
    weights: Tensor,
    noise: Sequence[Tensor] | None,
    flat: Tensor | None,
    leaves: Sequence[Tensor],
) -> list[Tensor]:
    """``sum_i w_i z_i`` per leaf: one product on the flat noise ``[N, D]`` when there is one
    (the leaves' estimates are views of it), else one product per leaf."""
    if flat is None:
        assert noise is not None
        return [weighted_sum(weights, z) for z in noise]
    total = weighted_sum(weights, flat)
    if len(leaves) == 1:
        return [total.view(leaves[0].shape)]
    pieces = total.split([leaf.numel() for leaf in leaves])
    return [piece.view(leaf.shape) for piece, leaf in zip(pieces, leaves)]


def weighted_sum(weights: Tensor, noise: Tensor) -> Tensor:
    """``sum_i w_i z_i`` for ``noise [N, *shape]``: one matrix-vector product."""
    flat = noise.reshape(noise.shape[0], -1)
    return (weights.to(device=noise.device, dtype=noise.dtype) @ flat).reshape(noise.shape[1:])


def as_value(value: Tensor) -> Tensor:
    """f(theta) as returned: detached; an integer or bool objective (a count, a success flag)
    is promoted to floating point so it still gets a gradient."""
    value = value.detach()
    if value.is_floating_point():
        return value
    return value.to(torch.promote_types(value.dtype, torch.float32))


def finite_mean(values: Tensor) -> Tensor:
    """The ``population_mean`` value: the mean of the finite sampled values, in their dtype
    (at least float32, as recorded), never cast down to a low-precision parameter dtype."""
    return values[torch.isfinite(values)].mean()
