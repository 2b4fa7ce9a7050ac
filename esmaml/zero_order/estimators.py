"""Zero-order gradient estimators as pure functions of directions and objective values.

For N directions z_i (unit variance per element), smoothing scale sigma:

- naive:       g = 1/N * sum_i f(theta + sigma z_i) z_i / sigma
- forward:     g = 1/N * sum_i (f(theta + sigma z_i) - f(theta)) z_i / sigma
- antithetic:  g = 1/N * sum_i (f(theta + sigma z_i) - f(theta - sigma z_i)) z_i / (2 sigma)

Each estimates the gradient of the Gaussian smoothing E_z[f(theta + sigma z)], which equals the
exact gradient for a quadratic f. Optional fitness shaping replaces the values by z-scores or
centered ranks in [-0.5, 0.5] before weighting (a biased but lower-variance direction).

Layout used throughout: a population for ``method`` has M = N (naive, forward) or M = 2N
(antithetic: the N ``+z`` members first, then the N ``-z`` members) rows, and everything
broadcasts over leading batch dimensions, so one call serves a whole [population, task] grid.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Method = Literal["naive", "forward", "antithetic"]
Shaping = Literal["none", "zscore", "centered_rank"]
METHODS: tuple[str, ...] = ("naive", "forward", "antithetic")
SHAPINGS: tuple[str, ...] = ("none", "zscore", "centered_rank")


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not an estimator; valid: {', '.join(METHODS)}")
    return method  # type: ignore[return-value]


def check_shaping(shaping: str) -> Shaping:
    if shaping not in SHAPINGS:
        raise ValueError(
            f"shaping={shaping!r} is not a fitness shaping; valid: {', '.join(SHAPINGS)}"
        )
    return shaping  # type: ignore[return-value]


def check_sigma(sigma: float) -> float:
    if isinstance(sigma, (str, bytes, bool)):
        raise TypeError(f"sigma must be a positive finite number, got {sigma!r}")
    try:
        value = float(sigma)
    except (TypeError, ValueError):
        raise TypeError(f"sigma must be a positive finite number, got {sigma!r}") from None
    if not (value > 0 and value < float("inf")):
        raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
    return value


def population_size(num_samples: int, method: Method) -> int:
    """Number of perturbed evaluations M for ``num_samples`` directions."""
    return 2 * num_samples if method == "antithetic" else num_samples


def perturb(center: Tensor, noise: Tensor, sigma: float, method: Method) -> Tensor:
    """The perturbed population: ``center [*B, D]``, ``noise [*B, N, D]`` -> ``[*B, M, D]``."""
    step = sigma * noise
    if method == "antithetic":
        step = torch.cat([step, -step], dim=-2)
    return center.unsqueeze(-2) + step


def shape_fitness(values: Tensor, shaping: Shaping, valid: Tensor | None = None) -> Tensor:
    """Shape ``values [*B, M]`` along the last dim; entries where ``valid`` is False are ignored
    in the statistics and come back as 0.

    - none: unchanged.
    - zscore: ``(f - mean) / std``. A spread at the level of rounding, ``std <= 8 eps max|f|``
      (all values equal up to an ulp of their mean), is no signal: the row gets zeros, never
      a full +-1 step on a plateau.
    - centered_rank: ``rank / (M - 1) - 0.5`` (OpenAI ES); tied values share the average of
      their ranks, so a plateau gives zeros whatever the order of its members.

    A NaN or inf among a row's valid values makes the whole shaped row NaN: the shaping never
    hides a failed evaluation from the caller's NaN policy.
    """
    if shaping == "none":
        return values if valid is None else torch.where(valid, values, torch.zeros_like(values))
    if valid is None:
        valid = torch.ones_like(values, dtype=torch.bool)
    count = valid.sum(-1, keepdim=True).clamp_min(1)
    filled = torch.where(valid, values, torch.zeros_like(values))
    broken = (valid & ~torch.isfinite(values)).any(-1, keepdim=True)
    if shaping == "zscore":
        mean = filled.sum(-1, keepdim=True) / count
        centered = torch.where(valid, values - mean, torch.zeros_like(values))
        std = (centered.square().sum(-1, keepdim=True) / count).sqrt()
        scale = filled.abs().amax(-1, keepdim=True)
        signal = std > 8 * torch.finfo(values.dtype).eps * scale
        shaped = torch.where(signal, centered / std.clamp_min(torch.finfo(values.dtype).tiny), 0.0)
    elif shaping == "centered_rank":
        # Invalid entries sort last so valid ranks are 0..count-1; a value's rank is the mean
        # of the first and last positions its ties occupy in sorted order.
        keyed = torch.where(valid, values, torch.full_like(values, float("inf"))).contiguous()
        ordered = keyed.sort(dim=-1).values
        first = torch.searchsorted(ordered, keyed, right=False)
        last = torch.searchsorted(ordered, keyed, right=True) - 1
        ranks = (first + last).to(values.dtype) / 2
        centered = ranks / (count - 1).clamp_min(1).to(values.dtype) - 0.5
        shaped = torch.where(valid & (count > 1), centered, torch.zeros_like(values))
    else:
        check_shaping(shaping)
        raise AssertionError("unreachable")
    return torch.where(broken, torch.full_like(shaped, float("nan")), shaped)


def estimator_weights(
    values: Tensor,
    *,
    method: Method,
    sigma: float,
    baseline: Tensor | float | None = None,
    shaping: Shaping = "none",
    valid: Tensor | None = None,
) -> Tensor:
    """Weights ``w [*B, N]`` such that the estimate is ``sum_i w_i z_i``.

    ``values`` is ``[*B, M]`` in the population layout of ``method``; ``baseline`` is f(theta)
    (``[*B]`` or a scalar), or each member's own baseline ``[*B, M]`` (ES-MAML: the pivot of
    the member's task), required by ``forward`` on raw values (shaping ``none``). Shaped
    ``forward`` shapes the differences to the baseline; without one it shapes the values,
    which is the same for a common baseline (shaping ignores a common shift).
    ``valid [*B, N]`` masks dropped directions (an antithetic pair is dropped whole); the mean
    is then over the valid ones.
    """
    num = values.shape[-1] // 2 if method == "antithetic" else values.shape[-1]
    if valid is None:
        count: Tensor | int = num
        pop_valid = None
    else:
        count = valid.sum(-1, keepdim=True).clamp_min(1).to(values.dtype)
        pop_valid = torch.cat([valid, valid], -1) if method == "antithetic" else valid
    if method == "naive":
        weights = shape_fitness(values, shaping, pop_valid) / sigma
    elif method == "forward":
        if baseline is None:
            if shaping == "none":
                raise ValueError("method='forward' needs baseline=f(theta)")
            # Shaping is invariant to a common shift of the values: f(theta) cancels, so a
            # common baseline is neither needed nor worth an evaluation.
            diffs = values
        else:
            base = torch.as_tensor(baseline, dtype=values.dtype, device=values.device)
            per_member = base.ndim == values.ndim
            diffs = values - (base if per_member or base.ndim == 0 else base.unsqueeze(-1))
        weights = shape_fitness(diffs, shaping, pop_valid) / sigma
    elif method == "antithetic":
        shaped = shape_fitness(values, shaping, pop_valid)
        weights = (shaped[..., :num] - shaped[..., num:]) / (2.0 * sigma)
    else:
        check_method(method)
        raise AssertionError("unreachable")
    if valid is not None:
        weights = torch.where(valid, weights, torch.zeros_like(weights))
    return weights / count


def es_gradient(
    noise: Tensor,
    values: Tensor,
    *,
    method: Method,
    sigma: float,
    baseline: Tensor | float | None = None,
    shaping: Shaping = "none",
    valid: Tensor | None = None,
) -> Tensor:
    """The zero-order gradient estimate ``[*B, D]`` from ``noise [*B, N, D]`` and the population's
    ``values [*B, M]`` (see :func:`estimator_weights`)."""
    weights = estimator_weights(
        values, method=method, sigma=sigma, baseline=baseline, shaping=shaping, valid=valid
    )
    return (weights.unsqueeze(-2).to(noise.dtype) @ noise).squeeze(-2)
