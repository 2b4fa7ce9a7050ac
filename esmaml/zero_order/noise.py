"""Perturbation directions: seeded, device-aware, Gaussian or orthogonal.

Every direction has zero mean and unit variance per element, as the estimators assume.
Noise is never stored: a 63-bit seed regenerates it, which is what distributed workers exchange.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

NoiseKind = Literal["gaussian", "orthogonal"]
NOISE_KINDS: tuple[str, ...] = ("gaussian", "orthogonal")


def check_noise_kind(kind: str) -> NoiseKind:
    if kind not in NOISE_KINDS:
        raise ValueError(f"sampling={kind!r} is not a noise kind; valid: {', '.join(NOISE_KINDS)}")
    return kind  # type: ignore[return-value]


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``."""
    generator = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    generator.manual_seed(int(seed))
    return generator


def draw_seed(generator: torch.Generator | None = None) -> int:
    """Draw a fresh 63-bit seed from ``generator`` (or torch's global RNG)."""
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2**63 - 1, (), generator=generator, device=device).item())


def gaussian_noise(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """i.i.d. N(0, 1) noise of ``shape``, drawn with ``generator`` on its device."""
    if generator is not None:
        noise = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype)
        return noise.to(device) if device is not None else noise
    return torch.randn(tuple(shape), device=device, dtype=dtype)


def orthogonal_noise(
    shape: Sequence[int],
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Orthogonal Gaussian directions (Choromanski et al. 2018), ``shape = (*batch, N, D)``.

    Within each block of at most D rows the directions are exactly orthogonal: the rows of a
    Haar-random orthonormal frame (QR of a Gaussian matrix, signs fixed by diag R), rescaled to
    chi_D-distributed norms so each row is marginally N(0, I_D). Blocks are independent when N > D.
    """
    *batch, num, dim = shape
    if dim == 0 or num == 0:  # nothing to orthogonalise (and no block of size 0 to loop on)
        return gaussian_noise(shape, generator=generator, device=device, dtype=dtype)
    compute_dtype = dtype if dtype in (torch.float32, torch.float64) else torch.float32

    def frames(*lead: int, block: int) -> Tensor:
        """Rows of ``[*batch, *lead, block, D]``: orthonormal per block, chi_D norms."""
        gaussian = gaussian_noise(
            (*batch, *lead, dim, block), generator=generator, device=device, dtype=compute_dtype
        )
        q, r = torch.linalg.qr(gaussian)  # q: [..., D, block], orthonormal columns
        q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
        norms = gaussian_noise(
            (*batch, *lead, block, dim), generator=generator, device=device, dtype=compute_dtype
        ).norm(dim=-1, keepdim=True)
        return q.transpose(-1, -2) * norms

    # All full blocks of D rows in one batched QR, then the remainder block.
    full, rest = divmod(num, dim)
    rows: list[Tensor] = []
    if full:
        rows.append(frames(full, block=dim).reshape(*batch, full * dim, dim))
    if rest:
        rows.append(frames(block=rest))
    noise = torch.cat(rows, dim=-2) if len(rows) > 1 else rows[0]
    return noise.to(dtype) if dtype is not None else noise


def sample_noise(
    shape: Sequence[int],
    *,
    kind: NoiseKind = "gaussian",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Directions of ``shape = (*batch, N, D)`` of the given ``kind``."""
    if kind == "gaussian":
        return gaussian_noise(shape, generator=generator, device=device, dtype=dtype)
    if kind == "orthogonal":
        return orthogonal_noise(shape, generator=generator, device=device, dtype=dtype)
    check_noise_kind(kind)
    raise AssertionError("unreachable")


def noise_from_seed(
    seed: int,
    shape: Sequence[int],
    *,
    kind: NoiseKind = "gaussian",
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    """Regenerate the directions that ``seed`` names, on ``device``: the same seed, shape,
    device and dtype give the same tensor wherever it is called. The dtype matters beyond
    rounding (torch draws different numbers per dtype): pass the promoted dtype of the leaves
    the ``zero_order`` call differentiated."""
    generator = make_generator(seed, device)
    return sample_noise(shape, kind=kind, generator=generator, device=device, dtype=dtype)


# -- custom distributions and the directions of a parameter pytree ------------------------------

ORTHOGONAL_NEEDS_GAUSSIAN = (
    "sampling='orthogonal' needs the built-in Gaussian: pass distribution=None or "
    "torch.distributions.Normal(0, 1)"
)


def is_standard_normal(distribution: object) -> bool:
    if not isinstance(distribution, torch.distributions.Normal):
        return False
    loc, scale = distribution.loc, distribution.scale
    return bool(distribution.batch_shape == torch.Size()) and bool(loc == 0) and bool(scale == 1)


def as_sampler(distribution: object) -> Callable[[torch.Size], Tensor] | None:
    """None means the built-in seeded Gaussian; otherwise a ``sample(sample_shape)`` callable."""
    if distribution is None or is_standard_normal(distribution):
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


def check_moments(distribution: object) -> None:
    """A ``torch.distributions`` noise must have zero mean and unit variance per element: the
    estimators divide by sigma assuming so, and any other noise biases the gradient. (A custom
    sampler's moments cannot be read; it carries the same contract.)"""
    if not isinstance(distribution, torch.distributions.Distribution):
        return
    try:
        mean = torch.as_tensor(distribution.mean, dtype=torch.float64)
        variance = torch.as_tensor(distribution.variance, dtype=torch.float64)
    except NotImplementedError:  # a distribution without closed-form moments: like a sampler
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


def leaf_directions(
    leaves: Sequence[Tensor],
    num: int,
    *,
    kind: NoiseKind,
    sampler: Callable[[torch.Size], Tensor] | None,
    seed: int | None,
) -> tuple[Tensor | None, list[Tensor] | None]:
    """``num`` directions for the parameter ``leaves``: either the flat ``[N, D]`` noise whose
    column blocks are the per-leaf directions (built-in sampler, one dtype and device:
    ``(flat, None)``) or the per-leaf directions ``[N, *leaf.shape]`` themselves
    (``(None, noise)``). With ``seed`` they are reproducible: the built-in noise is
    :func:`noise_from_seed`'s, a custom ``sampler`` runs under ``torch.manual_seed(seed)`` in a
    forked RNG."""
    if sampler is None:
        device = leaves[0].device
        dtype = functools.reduce(torch.promote_types, [leaf.dtype for leaf in leaves])
        generator = make_generator(seed, device) if seed is not None else None
        flat = sample_noise(
            (num, sum(leaf.numel() for leaf in leaves)),
            kind=kind,
            generator=generator,
            device=device,
            dtype=dtype,
        )
        if all(leaf.dtype == dtype and leaf.device == device for leaf in leaves):
            return flat, None
        pieces = flat.split([leaf.numel() for leaf in leaves], dim=1)
        return None, [
            piece.reshape(num, *leaf.shape).to(device=leaf.device, dtype=leaf.dtype)
            for piece, leaf in zip(pieces, leaves)
        ]
    devices = sorted({leaf.device for leaf in leaves if leaf.device.type == "cuda"}, key=str)
    with torch.random.fork_rng(devices=devices, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        noise = []
        for leaf in leaves:
            shape = torch.Size((num, *leaf.shape))
            sample = sampler(shape)
            if not isinstance(sample, Tensor) or sample.shape != shape:
                got = tuple(sample.shape) if isinstance(sample, Tensor) else type(sample).__name__
                raise ValueError(
                    f"distribution returned samples of shape {got} for sample_shape="
                    f"{tuple(shape)}; it must return exactly sample_shape"
                )
            noise.append(sample.to(device=leaf.device, dtype=leaf.dtype))
    return None, noise
