"""``compile=True``: the estimate's tensor work through torch.compile (inductor, on this CPU).

Each compile takes a second or more, so these tests are few and marked slow. They check that the
compiled estimate is the eager one to rounding (same seed, same directions), that the options
which change the traced code still hold compiled (pytrees, frozen and tied leaves, chunks,
population mode, NaN dropping), that a function which cannot be compiled falls back to eager with
one warning and the same numbers, and that a wrong objective still gets its own error.
"""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import esmaml
from esmaml.nn import ZeroOrderGradientModule
from esmaml.zero_order import ZeroOrderFunction

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread")]

X = torch.linspace(-1.0, 1.0, 24).reshape(8, 3)
Y = torch.sin(X.sum(1, keepdim=True))


def _mse(params: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(torch.tanh(x @ params["w"].T + params["b"]) @ params["v"], y.squeeze(1))


def _params() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(3)
    return {
        "w": torch.randn(4, 3, generator=generator).requires_grad_(),
        "b": torch.randn(4, generator=generator).requires_grad_(),
        "v": torch.randn(4, generator=generator).requires_grad_(),
    }


def _gradient(fn, params: dict[str, Tensor]) -> tuple[Tensor, list[Tensor]]:
    value = fn(params, X, Y)
    return value.detach(), list(torch.autograd.grad(value, list(params.values())))


def _assert_close(compiled: list[Tensor], eager: list[Tensor]) -> None:
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


def _assert_compiled_matches_eager(fn, args: tuple, wrt: Tensor, **options) -> ZeroOrderFunction:
    """Gradients w.r.t. ``wrt`` from the eager and the compiled function, same seed; the
    compiled one must compile (no fallback warning). Returns the compiled function."""
    eager = esmaml.zero_order(**options)(fn)
    compiled = esmaml.zero_order(compile=True, **options)(fn)
    want = torch.autograd.grad(eager(*args), wrt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = torch.autograd.grad(compiled(*args), wrt)
    _assert_close(list(got), list(want))
    return compiled


@pytest.mark.parametrize(
    "method, shaping",
    [("naive", "none"), ("forward", "none"), ("antithetic", "none"), ("antithetic", "zscore")],
)
def test_compiled_estimate_matches_eager(method: str, shaping: str) -> None:
    options = dict(method=method, num_samples=16, sigma=0.1, shaping=shaping)
    eager = esmaml.zero_order(seed=5, **options)(_mse)
    compiled = esmaml.zero_order(seed=5, compile=True, **options)(_mse)
    params = _params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning: it really compiled
        for _ in range(3):  # later calls reuse the graph: same shapes, new tensors
            value, grads = _gradient(compiled, params)
            want_value, want = _gradient(eager, params)
            torch.testing.assert_close(value, want_value)
            _assert_close(grads, want)
            torch.testing.assert_close(compiled.last_stats.values, eager.last_stats.values)
            assert compiled.last_stats.seed == eager.last_stats.seed
    assert compiled.compile  # still compiled after three calls
    assert compiled.last_stats.batch_mode == "vmap"


def test_compiled_pytree_frozen_and_tied_leaves_chunks() -> None:
    shared = torch.randn(4, 3).requires_grad_()
    frozen = torch.randn(4)  # no grad: not perturbed, no gradient

    def loss(params: dict[str, Tensor], x: Tensor) -> Tensor:
        hidden = torch.tanh(x @ params["a"].T + params["bias"]) + (x @ params["tied"].T)
        return hidden.square().mean()

    params = {"a": shared, "tied": shared, "bias": frozen}
    _assert_compiled_matches_eager(
        loss,
        (params, X),
        shared,
        method="antithetic",
        num_samples=40,
        sigma=0.05,
        seed=2,
        chunk_size=32,
    )


def test_compiled_population_mode() -> None:
    def population_loss(theta: Tensor, x: Tensor) -> Tensor:  # theta [M, 3] -> [M]
        return (x @ theta.T).sin().square().mean(0)

    theta = torch.randn(3).requires_grad_()
    compiled = _assert_compiled_matches_eager(
        population_loss,
        (theta, X),
        theta,
        method="antithetic",
        num_samples=12,
        sigma=0.1,
        seed=4,
        batch="population",
    )
    assert compiled.last_stats.batch_mode == "population"


def test_compiled_nan_drop_matches_eager() -> None:
    def sometimes_nan(theta: Tensor) -> Tensor:
        value = theta.square().sum()
        return torch.where(theta[0] > 0.4, torch.nan, value)

    theta = torch.zeros(3).requires_grad_()
    options = dict(method="antithetic", num_samples=20, sigma=0.5, nan_policy="drop")
    eager = esmaml.zero_order(seed=1, **options)(sometimes_nan)
    compiled = esmaml.zero_order(seed=1, compile=True, **options)(sometimes_nan)
    want = torch.autograd.grad(eager(theta), theta)
    got = torch.autograd.grad(compiled(theta), theta)
    assert compiled.last_stats.num_dropped == eager.last_stats.num_dropped > 0
    _assert_close(list(got), list(want))


def test_uncompilable_function_falls_back_to_eager_with_one_warning() -> None:
    seen = []

    @torch.compiler.disable  # e.g. a logging hook kept out of compilation: a graph break
    def log(value: Tensor) -> None:
        seen.append(tuple(value.shape))

    def loss_with_side_effect(theta: Tensor) -> Tensor:
        value = theta.square().sum()
        log(value)
        return value

    theta = torch.ones(3).requires_grad_()
    options = dict(method="antithetic", num_samples=8, sigma=0.1)
    compiled = esmaml.zero_order(seed=6, compile=True, **options)(loss_with_side_effect)
    eager = esmaml.zero_order(seed=6, **options)(loss_with_side_effect)
    with pytest.warns(RuntimeWarning, match="could not be compiled") as record:
        got = torch.autograd.grad(compiled(theta), theta)
    assert len([w for w in record if "could not be compiled" in str(w.message)]) == 1
    assert record[0].filename == __file__  # points at the caller's line
    assert not compiled.compile
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        torch.autograd.grad(compiled(theta), theta)
    want = torch.autograd.grad(eager(theta), theta)
    assert torch.equal(got[0], want[0])  # the fallback is the eager estimate, bitwise


def test_past_the_recompile_limit_it_runs_eagerly_with_one_warning() -> None:
    compiled = esmaml.zero_order(method="antithetic", num_samples=4, sigma=0.1, compile=True)(
        lambda w, x: (x @ w).square().mean()
    )
    fell_back = []
    for dim in range(2, 12):  # each new shape compiles again, up to dynamo's limit of 8
        w, x = torch.randn(dim).requires_grad_(), torch.randn(5, dim)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            (grad,) = torch.autograd.grad(compiled(w, x), w)
        assert torch.isfinite(grad).all() and grad.shape == (dim,)
        fell_back += [dim for item in record if "recompile limit" in str(item.message)]
    assert len(fell_back) == 1 and not compiled.compile


def test_a_pickle_from_before_compile_existed_runs_eagerly() -> None:
    fn = esmaml.zero_order(method="antithetic", num_samples=4, sigma=0.1, seed=3)(_mse)
    state = fn.__getstate__()
    for added in ("compile", "_compiled_core", "_batched_evaluation"):
        del state[added]  # what a ZeroOrderFunction pickled by esmaml before compile= holds
    old = ZeroOrderFunction.__new__(ZeroOrderFunction)
    old.__setstate__(state)
    params = _params()
    got = torch.autograd.grad(old(params, X, Y), list(params.values()))
    want = torch.autograd.grad(
        esmaml.zero_order(method="antithetic", num_samples=4, sigma=0.1, seed=3)(_mse)(
            params, X, Y
        ),
        list(params.values()),
    )
    assert not old.compile
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_wrong_objective_gets_its_own_error_not_a_compile_warning() -> None:
    compiled = esmaml.zero_order(method="naive", num_samples=4, compile=True)(
        lambda theta: theta.square()  # not a scalar
    )
    theta = torch.ones(3).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="must return a scalar"):
            compiled(theta)


class _Net(ZeroOrderGradientModule, method="antithetic", num_samples=10, sigma=0.05, seed=0):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(self.layer(x), y)


class _CompiledNet(_Net, compile=True):
    pass


def test_module_api_compiles_and_pickles_after_use() -> None:
    eager, compiled = _Net(), _CompiledNet()
    compiled.load_state_dict(eager.state_dict())
    eager(X, Y).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compiled(X, Y).backward()
    for got, want in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=1e-6)
    restored = pickle.loads(pickle.dumps(compiled))  # compiled code is dropped and rebuilt
    restored.zero_grad()
    restored(X, Y).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in restored.parameters())


@pytest.mark.cuda
def test_compiled_estimate_matches_eager_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    theta = torch.randn(4, 3, device="cuda").requires_grad_()
    compiled = _assert_compiled_matches_eager(
        lambda w, x: torch.tanh(x @ w.T).square().mean(),
        (theta, X.cuda()),
        theta,
        method="antithetic",
        num_samples=64,
        sigma=0.1,
        seed=7,
    )
    assert compiled.last_stats.values.device.type == "cuda"
