"""Exact k-DPP selection of diverse perturbations (Kulesza & Taskar 2012), batched.

ES-MAML's DPP exploration: draw ``rho * K`` Gaussian candidates, keep ``K`` of them by sampling a
k-DPP under the reference's RBF kernel on the perturbations ``delta = sigma z`` themselves,
``L_ij = exp(-||delta_i - delta_j||^2 / (2 h^2))`` (google-research ``util/dpp``: h = 0.5,
sigma = 0.1). Dividing the squared distance by the dimension instead, as esmaml once did, makes
the kernel nearly the identity at D = 6, and the DPP sample nearly uniform.
"""

from __future__ import annotations

import torch
from torch import Tensor


def rbf_kernel(points: Tensor, bandwidth: float) -> Tensor:
    """``points [*B, N, D]`` -> ``exp(-||x_i - x_j||^2 / (2 h^2))`` ``[*B, N, N]``."""
    sq = torch.cdist(points, points).square()
    return torch.exp(-sq / (2.0 * bandwidth**2))


def sample_k_dpp(kernel: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices ``[*B, k]`` of an exact k-DPP sample for each symmetric PSD ``kernel [*B, N, N]``.

    Phase 1 picks k eigenvectors with probability from the elementary symmetric polynomials
    e_l^n = e_l^{n-1} + lambda_n e_{l-1}^{n-1}; phase 2 samples the projection DPP they span
    item by item, P(j | S) proportional to K_jj - K_jS K_SS^-1 K_Sj (incremental Cholesky).
    """
    *batch, n, _ = kernel.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    flat = kernel.reshape(-1, n, n).double()
    rows = flat.shape[0]
    eigvals, eigvecs = torch.linalg.eigh(flat)
    eigvals = eigvals.clamp_min(0)
    # e[l, m] over the first m eigenvalues; all rows at once.
    e = torch.zeros(rows, k + 1, n + 1, dtype=flat.dtype, device=flat.device)
    e[:, 0, :] = 1.0
    for m in range(1, n + 1):
        e[:, 1:, m] = e[:, 1:, m - 1] + eigvals[:, m - 1 : m] * e[:, :-1, m - 1]
    uniforms = torch.rand(
        rows, n, generator=generator, device=generator.device if generator else None
    )
    uniforms = uniforms.to(flat.device, flat.dtype)
    remaining = torch.full((rows,), k, device=flat.device)
    chosen = torch.zeros(rows, n, dtype=torch.bool, device=flat.device)
    arange = torch.arange(rows, device=flat.device)
    for m in range(n, 0, -1):
        active = remaining > 0
        l_idx = remaining.clamp_min(1)
        numerator = eigvals[:, m - 1] * e[arange, l_idx - 1, m - 1]
        denominator = e[arange, l_idx, m].clamp_min(torch.finfo(flat.dtype).tiny)
        # Once the rows needing all remaining eigenvectors are reached, take them surely.
        take = active & (uniforms[:, m - 1] < numerator / denominator)
        chosen[:, m - 1] = take
        remaining = remaining - take.long()
    basis = eigvecs * chosen.unsqueeze(-2).to(flat.dtype)  # selected eigenvectors, others 0
    projection = basis @ basis.transpose(-1, -2)  # rank-k projection kernel
    residual = torch.diagonal(projection, dim1=-2, dim2=-1).clone().clamp_min(0)
    factors = torch.zeros(rows, k, n, dtype=flat.dtype, device=flat.device)
    picks = torch.zeros(rows, k, dtype=torch.long, device=flat.device)
    for i in range(k):
        weights = residual.clamp_min(0) + 1e-300  # never all-zero: rounding may empty a row
        index = torch.multinomial(weights, 1, generator=generator).squeeze(-1)
        picks[:, i] = index
        column = projection[arange, :, index] - (
            factors[:, :i] * factors[arange, :i, index].unsqueeze(-1)
        ).sum(1)
        pivot = residual[arange, index].clamp_min(torch.finfo(flat.dtype).tiny).sqrt()
        factors[:, i] = column / pivot.unsqueeze(-1)
        residual = residual - factors[:, i].square()
        residual[arange, index] = 0.0
    return picks.reshape(*batch, k)


def dpp_directions(
    num: int,
    dim: int,
    batch: tuple[int, ...],
    *,
    oversample: int = 5,
    bandwidth: float = 0.5,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``num`` directions ``[*batch, num, dim]`` chosen by a k-DPP from ``oversample * num``
    standard Gaussian candidates ``z``, under the RBF kernel of the perturbations ``scale * z``
    (``scale``: the adaptation's sigma)."""
    candidates = torch.randn(
        (*batch, oversample * num, dim), generator=generator, device=device, dtype=dtype
    )
    picks = sample_k_dpp(rbf_kernel(scale * candidates, bandwidth), num, generator)
    return torch.gather(candidates, -2, picks.unsqueeze(-1).expand(*picks.shape, dim))
