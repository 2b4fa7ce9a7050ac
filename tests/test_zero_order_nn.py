"""Tests of ``esmaml.nn.ZeroOrderGradientModule``, the OOP twin of ``esmaml.zero_order``."""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import esmaml
from esmaml.nn import ZeroOrderGradientModule, enable_zero_order_gradients
from esmaml.zero_order import ZeroOrderStats, estimator_weights, noise_from_seed

pytestmark = pytest.mark.usefixtures("single_thread")


def _trainable(module: nn.Module) -> list[Tensor]:
    return [p for p in module.parameters() if p.requires_grad]


def _reconstruct(stats: ZeroOrderStats, params: list[Tensor], method: str, sigma: float):
    """The estimate rebuilt from the recorded seed and values (built-in Gaussian noise)."""
    assert stats.seed is not None
    sizes = [p.numel() for p in params]
    noise = noise_from_seed(stats.seed, (stats.num_samples, sum(sizes)))
    weights = estimator_weights(stats.values, method=method, sigma=sigma, baseline=stats.value)
    flat = weights @ noise
    return [piece.reshape(p.shape) for piece, p in zip(flat.split(sizes), params)]


# --------------------------------------------------------------------------------------------
# the TorchOpt tutorial's OOP example, with only the import names changed


class Net(esmaml.nn.ZeroOrderGradientModule, method="forward", num_samples=100, sigma=0.01):
    def __init__(self, dim):
        super().__init__()
        self.fc = nn.Linear(dim, 1)
        self.distribution = torch.distributions.Normal(loc=0, scale=1)

    def forward(self, x, y):
        y_pred = self.fc(x)
        loss = F.mse_loss(y_pred, y)
        return loss

    def sample(self, sample_shape=torch.Size()):  # noqa: B008
        return self.distribution.sample(sample_shape)


def _exact_loss(net: nn.Module, x: Tensor, y: Tensor) -> float:
    with torch.no_grad():
        return float(F.mse_loss(net.fc(x), y))


@pytest.mark.parametrize("optimizer_kind", ["torchopt", "torch"])
def test_tutorial_oop_api(optimizer_kind: str) -> None:
    torch.random.manual_seed(0)
    x = torch.randn(64, 32) * 0.1
    y = torch.randn(64, 1) * 0.1
    net = Net(dim=32)
    if optimizer_kind == "torchopt":
        torchopt = pytest.importorskip("torchopt")
        optimizer = torchopt.Adam(net.parameters(), lr=0.01)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    start = _exact_loss(net, x, y)
    for i in range(25):
        loss = net(x, y)
        assert type(loss.grad_fn).__name__ == "ZeroOrderBackward"
        if i == 0:
            assert float(loss.detach()) == pytest.approx(start)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert _exact_loss(net, x, y) < 0.6 * start


def test_tutorial_oop_first_gradient_is_accurate() -> None:
    torch.random.manual_seed(0)
    x = torch.randn(64, 32) * 0.1
    y = torch.randn(64, 1) * 0.1
    net = Net(dim=32)
    exact = torch.autograd.grad(F.mse_loss(net.fc(x), y), list(net.parameters()))
    grads = torch.autograd.grad(net(x, y), list(net.parameters()))
    cosine = F.cosine_similarity(
        torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in exact]), dim=0
    )
    assert float(cosine) > 0.5


# --------------------------------------------------------------------------------------------
# gradients and options


class Quadratic(ZeroOrderGradientModule, method="antithetic", num_samples=4000, sigma=0.1, seed=0):
    """f = 1/2 |w|² + c·w + frozen·v: the exact gradient for w is w + c."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(5))
        self.v = nn.Parameter(torch.randn(3))
        self.frozen = nn.Parameter(torch.randn(3), requires_grad=False)
        self.register_buffer("c", torch.linspace(-1, 1, 5))

    def forward(self, scale: Tensor, *, offset: float = 0.0) -> Tensor:
        value = 0.5 * self.w.square().sum() + self.c @ self.w + self.frozen @ self.v
        return scale * value + offset


def test_grad_fills_trainable_params_only() -> None:
    module = Quadratic()
    frozen_before = module.frozen.detach().clone()
    loss = module(torch.tensor(1.0), offset=2.0)
    with torch.no_grad():
        plain = 0.5 * module.w.square().sum() + module.c @ module.w + module.frozen @ module.v + 2
    torch.testing.assert_close(loss.detach(), plain)
    loss.backward()
    assert module.frozen.grad is None and torch.equal(module.frozen, frozen_before)
    exact_w = (module.w + module.c).detach()
    exact_v = module.frozen.detach()
    for grad, exact in ((module.w.grad, exact_w), (module.v.grad, exact_v)):
        assert float(F.cosine_similarity(grad, exact, dim=0)) > 0.95
        assert float(grad.norm() / exact.norm()) == pytest.approx(1.0, abs=0.15)


def test_autograd_grad_over_parameters_and_upstream_scaling() -> None:
    first, second = Quadratic(), Quadratic()
    second.load_state_dict(first.state_dict())
    grads = torch.autograd.grad(first(torch.tensor(1.0)), _trainable(first))
    (3 * second(torch.tensor(1.0))).backward()  # same class seed: the same directions
    for grad, param in zip(grads, _trainable(second)):
        torch.testing.assert_close(param.grad, 3 * grad)


def test_frozen_params_are_not_perturbed() -> None:
    seen: list[tuple[Tensor, Tensor]] = []

    class Recorder(ZeroOrderGradientModule, num_samples=3, sigma=0.5, batch="sequential"):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(2))
            self.frozen = nn.Parameter(torch.ones(2), requires_grad=False)

        def forward(self) -> Tensor:
            seen.append((self.w.detach().clone(), self.frozen.detach().clone()))
            return (self.w * self.frozen).sum()

    module = Recorder()
    module().backward()
    assert len(seen) == 1 + 3
    assert all(torch.equal(frozen, torch.ones(2)) for _, frozen in seen)
    assert all(not torch.equal(w, torch.zeros(2)) for w, _ in seen[1:])


def test_tied_parameters_are_perturbed_once() -> None:
    recorded: list[ZeroOrderStats] = []

    class Tied(ZeroOrderGradientModule, method="antithetic", num_samples=6, sigma=0.1, seed=1):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(3, 3, bias=False)
            self.decoder = nn.Linear(3, 3, bias=False)
            self.decoder.weight = self.encoder.weight
            self.bias = nn.Parameter(torch.zeros(3))

        def forward(self, x: Tensor) -> Tensor:
            assert self.decoder.weight is self.encoder.weight
            return (self.decoder(self.encoder(x)) + self.bias).square().mean()

    x = torch.randn(4, 3)
    options: dict[str, Any] = {"on_stats": recorded.append}

    class TiedRecorded(Tied, **options):
        pass

    module = TiedRecorded()
    module(x).backward()
    params = _trainable(module)  # named_parameters order, the tied weight once
    assert len(params) == 2 and recorded[-1].num_evaluations == 12
    expected = _reconstruct(recorded[-1], params, "antithetic", 0.1)  # D = 3 + 9, not 3 + 18
    for param, grad in zip(params, expected):
        torch.testing.assert_close(param.grad, grad)
    assert module.encoder.weight.grad is module.decoder.weight.grad


def test_custom_sample_method_is_used() -> None:
    seen: list[Tensor] = []

    class Rademacher(ZeroOrderGradientModule, num_samples=5, sigma=0.25, batch="sequential"):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(4))

        def forward(self) -> Tensor:
            seen.append(self.w.detach().clone())
            return self.w.sum()

        def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
            return torch.randint(0, 2, sample_shape).float() * 2 - 1

    Rademacher()().backward()
    for perturbed in seen[1:]:
        torch.testing.assert_close(perturbed.abs(), torch.full((4,), 0.25))


def test_module_options_pass_through() -> None:
    recorded: list[ZeroOrderStats] = []

    class Options(
        ZeroOrderGradientModule,
        method="naive",
        num_samples=7,
        sigma=0.2,
        seed=3,
        sampling="orthogonal",
        on_stats=recorded.append,
    ):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(9))

        def forward(self) -> Tensor:
            return self.w.square().sum()

    first, second = Options(), Options()
    first().backward()
    second().backward()  # each instance has its own stream, seeded alike
    torch.testing.assert_close(first.w.grad, second.w.grad, rtol=0, atol=0)
    assert [s.num_evaluations for s in recorded] == [7, 7]
    assert recorded[0].seed == recorded[1].seed
    first().backward()  # the stream moves on
    assert recorded[2].seed != recorded[0].seed
    noise = noise_from_seed(recorded[0].seed, (7, 9), kind="orthogonal")
    torch.testing.assert_close(noise @ noise.T, torch.diag((noise @ noise.T).diagonal()))


def test_no_grad_call_returns_a_plain_value() -> None:
    module = Quadratic()
    with torch.no_grad():
        loss = module(torch.tensor(2.0))
    assert loss.grad_fn is None and loss.ndim == 0


# --------------------------------------------------------------------------------------------
# inheritance and enabling


class Parent(ZeroOrderGradientModule, method="antithetic", num_samples=6, sigma=0.3):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(3))

    def forward(self, x: Tensor) -> Tensor:
        return (self.w * x).sum()


def _evaluations(cls: type[nn.Module], **extra: Any) -> tuple[int, nn.Module]:
    """The number of objective evaluations one backward of a ``cls`` instance takes."""
    recorded: list[ZeroOrderStats] = []

    class Recorded(cls, on_stats=recorded.append, **extra):  # type: ignore[valid-type, misc]
        pass

    module = Recorded()
    module(torch.ones(3)).backward()
    return recorded[-1].num_evaluations, module


def test_subclass_inherits_forward_and_options() -> None:
    class Child(Parent):
        pass

    assert _evaluations(Child)[0] == 12
    assert _evaluations(Parent)[0] == 12


def test_class_keywords_override_the_parents() -> None:
    class Fewer(Parent, num_samples=2):
        pass

    class Naive(Fewer, method="naive"):
        pass

    assert _evaluations(Fewer)[0] == 4
    assert _evaluations(Naive)[0] == 2
    assert _evaluations(Parent, num_samples=5)[0] == 10


def test_subclass_with_its_own_forward_keeps_the_parents_options() -> None:
    class Squared(Parent):
        def forward(self, x: Tensor) -> Tensor:
            return (self.w * x).square().sum()

    count, module = _evaluations(Squared)
    assert count == 12  # antithetic, N = 6 from Parent
    assert module.w.grad is not None


def test_base_without_forward_passes_its_options_on() -> None:
    class Base(ZeroOrderGradientModule, method="antithetic", num_samples=3):
        pass

    class Concrete(Base, sigma=0.1):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(3))

        def forward(self, x: Tensor) -> Tensor:
            return (self.w * x).sum()

    assert _evaluations(Concrete)[0] == 6


def test_enabling_twice_raises() -> None:
    class Plain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(2))

        def forward(self) -> Tensor:
            return self.w.sum()

    enable_zero_order_gradients(Plain, method="antithetic", num_samples=3)
    loss = Plain()()
    assert type(loss.grad_fn).__name__ == "ZeroOrderBackward"
    with pytest.raises(TypeError, match="already enabled"):
        enable_zero_order_gradients(Plain)
    with pytest.raises(TypeError, match="already enabled"):
        enable_zero_order_gradients(Parent)


def test_enabling_without_forward_raises() -> None:
    class NoForward(nn.Module):
        pass

    with pytest.raises(TypeError, match="must define forward"):
        enable_zero_order_gradients(NoForward)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "central"}, "method='central'"),
        ({"sigma": -1.0}, "sigma"),
        ({"num_samples": 0}, "num_samples"),
        ({"batch": "parallel"}, "batch='parallel'"),
        ({"seed": 1, "generator": torch.Generator()}, "seed or generator"),
    ],
)
def test_bad_class_keywords_raise_at_class_creation(options: dict[str, Any], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):

        class Bad(ZeroOrderGradientModule, **options):
            def forward(self) -> Tensor:
                return torch.zeros(())


def test_module_without_trainable_parameters_raises() -> None:
    class Frozen(ZeroOrderGradientModule, num_samples=2):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(2), requires_grad=False)

        def forward(self) -> Tensor:
            return self.w.sum()

    class Empty(ZeroOrderGradientModule, num_samples=2):
        def forward(self) -> Tensor:
            return torch.zeros(())

    for cls in (Frozen, Empty):
        with pytest.raises(RuntimeError, match=f"{cls.__name__} has no trainable parameters"):
            cls()()


def test_forward_must_return_a_scalar() -> None:
    class Vector(ZeroOrderGradientModule, num_samples=2):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(2))

        def forward(self) -> Tensor:
            return self.w * 2

    with pytest.raises(ValueError, match=r"Vector\.forward must return a scalar"):
        Vector()()


def test_module_state_matches_functional_api() -> None:
    """The module and the decorator, seeded alike, give the same gradient."""
    module = Parent()
    x = torch.randn(3)
    with_seed = type("Seeded", (Parent,), {}, seed=4)
    seeded = with_seed()
    seeded.load_state_dict(module.state_dict())
    seeded(x).backward()

    @esmaml.zero_order(method="antithetic", num_samples=6, sigma=0.3, seed=4)
    def functional(params: dict[str, Tensor], x: Tensor) -> Tensor:
        return (params["w"] * x).sum()

    w = module.w.detach().clone().requires_grad_()
    (grad,) = torch.autograd.grad(functional({"w": w}, x), w)
    torch.testing.assert_close(seeded.w.grad, grad)
    assert math.isfinite(float(grad.sum()))


def test_deep_copy_after_use_evaluates_the_copy() -> None:
    """A copied module (MAML-style ``copy.deepcopy``) must not evaluate the original."""

    class Scaled(ZeroOrderGradientModule, method="antithetic", num_samples=4, sigma=0.1, seed=0):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))
            self.frozen = nn.Parameter(torch.ones(3), requires_grad=False)

        def forward(self) -> Tensor:
            return (self.w * self.frozen).sum()

        def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008
            return torch.randn(sample_shape) * self.frozen.mean()  # unit variance while 1

    original = Scaled()
    original().backward()
    copy_ = copy.deepcopy(original)
    with torch.no_grad():
        copy_.frozen.fill_(5.0)
    copy_.w.grad = None
    original.w.grad = None
    loss = copy_()
    assert float(loss.detach()) == pytest.approx(15.0)
    loss.backward()
    assert original.w.grad is None and copy_.w.grad is not None
    assert float(original().detach()) == pytest.approx(3.0)


def test_torch_save_after_use_round_trips_and_continues_the_noise_stream(tmp_path) -> None:
    """A used module holds its zero-order function; torch.save must still work (TorchOpt's
    does), and the loaded copy continues the same seeded noise stream."""
    torch.manual_seed(0)
    model = Quadratic()
    model(torch.tensor(1.0)).backward()
    path = tmp_path / "model.pt"
    torch.save(model, path)
    loaded = torch.load(path, weights_only=False)
    for module in (model, loaded):
        module.zero_grad()
        module(torch.tensor(1.0)).backward()
    torch.testing.assert_close(loaded.w.grad, model.w.grad, rtol=0, atol=0)
    assert type(loaded) is Quadratic and loaded.w.grad is not None


def test_twin_is_reachable_from_the_zero_order_module_as_in_torchopt() -> None:
    """torchopt.diff.zero_order exposes nn and ZeroOrderGradientModule; so does ours."""
    assert esmaml.zero_order.ZeroOrderGradientModule is ZeroOrderGradientModule
    assert esmaml.nn.ZeroOrderGradientModule is esmaml.zero_order.nn.ZeroOrderGradientModule
    from esmaml.zero_order import ZeroOrderGradientModule as imported

    assert imported is ZeroOrderGradientModule
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = esmaml.zero_order.nope
