"""Shared fixtures: every test starts from the same global RNG state."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

# Tests never reach a network: wandb is off unless a test opts in (tests/test_wandb.py runs a real
# offline run), and Ray never reports usage. Set before any test imports wandb or ray.
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_ERROR_REPORTING", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@pytest.fixture(autouse=True)
def seeded() -> Iterator[None]:
    """Seed torch's global RNG before each test and restore the default dtype after it."""
    torch.manual_seed(0)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)


@pytest.fixture
def single_thread() -> Iterator[None]:
    """Run on one intra-op thread: the tiny tensors of the zero-order tests are faster so, and
    MKL's small LAPACK calls (the QR of orthogonal noise) stall for milliseconds on a shared
    2-core machine with two threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


Quadratic = tuple[Tensor, Tensor, Tensor]


@pytest.fixture
def quadratic() -> Callable[..., Quadratic]:
    """A factory for ``(A, b, theta)`` of f(theta) = 1/2 theta^T A theta + b^T theta, A SPD.

    The gradient is ``A @ theta + b``; ``theta`` requires grad.
    """

    def make(dim: int = 6, dtype: torch.dtype = torch.float64, seed: int = 1) -> Quadratic:
        generator = torch.Generator().manual_seed(seed)
        root = torch.randn(dim, dim, generator=generator, dtype=dtype)
        a = root @ root.T / dim + torch.eye(dim, dtype=dtype)
        b = torch.randn(dim, generator=generator, dtype=dtype)
        theta = torch.randn(dim, generator=generator, dtype=dtype).requires_grad_()
        return a, b, theta

    return make
