"""Sine regression and its non-differentiable variant (no learn2learn needed)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from esmaml.tasks.sine import NonDifferentiableSine, SineRegression


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def family() -> SineRegression:
    return SineRegression(shots=5, query_shots=7)


@pytest.fixture
def tasks(family: SineRegression) -> dict[str, torch.Tensor]:
    return family.sample_tasks(6, generator=gen(1))


def test_shapes_dtypes_and_ranges(family: SineRegression) -> None:
    tasks = family.sample_tasks(200, generator=gen(0))
    shapes = {key: tuple(value.shape) for key, value in tasks.items()}
    assert shapes == {
        "amplitude": (200,),
        "phase": (200,),
        "x_support": (200, 5, 1),
        "y_support": (200, 5, 1),
        "x_query": (200, 7, 1),
        "y_query": (200, 7, 1),
    }
    assert all(value.dtype == torch.float32 for value in tasks.values())
    assert tasks["amplitude"].min() >= 0.1 and tasks["amplitude"].max() <= 5.0
    assert tasks["phase"].min() >= 0.0 and tasks["phase"].max() <= math.pi
    for key in ("x_support", "x_query"):
        assert tasks[key].min() >= -5.0 and tasks[key].max() <= 5.0
    # The draws cover their ranges (not, say, stuck at a constant).
    assert tasks["amplitude"].max() - tasks["amplitude"].min() > 4.0
    assert family.num_params == 1 * 40 + 40 + 40 * 40 + 40 + 40 * 1 + 1
    assert family.init_params(gen(0)).shape == (family.num_params,)
    assert family.differentiable and not family.stochastic


def test_targets_are_exact_sines(tasks: dict[str, torch.Tensor]) -> None:
    amplitude, phase = tasks["amplitude"].double(), tasks["phase"].double()
    for split in ("support", "query"):
        x = tasks[f"x_{split}"].double()
        expected = amplitude[:, None, None] * torch.sin(x - phase[:, None, None])
        torch.testing.assert_close(tasks[f"y_{split}"].double(), expected, rtol=1e-6, atol=1e-6)


def test_loss_matches_module_mse(family: SineRegression, tasks: dict[str, torch.Tensor]) -> None:
    params = family.init_params(gen(2))
    module = family.model.to_module(params)
    ids = torch.arange(6)
    for phase, split in (("adapt", "support"), ("query", "query")):
        losses = family.loss(params, tasks, ids, phase=phase)
        assert losses.shape == (6,)
        with torch.no_grad():
            manual = torch.stack(
                [F.mse_loss(module(tasks[f"x_{split}"][i]), tasks[f"y_{split}"][i]) for i in ids]
            )
        torch.testing.assert_close(losses, manual)
    # 'adapt' and 'query' really read different sets.
    assert not torch.equal(family.loss(params, tasks, ids, phase="adapt"), losses)


def test_task_ids_broadcast_against_param_batch(
    family: SineRegression, tasks: dict[str, torch.Tensor]
) -> None:
    P, K = 3, 4
    params = torch.stack([family.init_params(gen(s)) for s in range(P * K)]).reshape(P, K, -1)

    def looped(ids: torch.Tensor) -> torch.Tensor:
        ids = ids.expand(P, K)
        return torch.stack(
            [
                torch.stack([family.loss(params[p, k], tasks, ids[p, k]) for k in range(K)])
                for p in range(P)
            ]
        )

    per_row = torch.tensor([[0], [3], [5]])  # [P, 1]: one task per population member
    per_cell = torch.randint(6, (P, K), generator=gen(3))  # [P, K]
    for ids in (per_row, per_cell):
        out = family.loss(params, tasks, ids)
        assert out.shape == (P, K)
        torch.testing.assert_close(out, looped(ids))
    # One parameter vector against many tasks, and many against one scalar id.
    single = family.init_params(gen(0))
    assert family.loss(single, tasks, torch.arange(6)).shape == (6,)
    assert family.loss(params, tasks, torch.tensor(2)).shape == (P, K)


def test_loss_under_vmap_and_float64(
    family: SineRegression, tasks: dict[str, torch.Tensor]
) -> None:
    params = torch.stack([family.init_params(gen(s)) for s in range(4)])
    ids = torch.tensor([0, 1, 2, 3])
    batched = family.loss(params, tasks, ids)
    mapped = torch.func.vmap(lambda p, i: family.loss(p, tasks, i))(params, ids)
    torch.testing.assert_close(mapped, batched)
    as64 = family.loss(params.double(), tasks, ids)
    assert as64.dtype == torch.float64
    torch.testing.assert_close(as64.float(), batched)


def test_sampling_is_deterministic_by_generator(family: SineRegression) -> None:
    a = family.sample_tasks(4, generator=gen(7))
    b = family.sample_tasks(4, generator=gen(7))
    c = family.sample_tasks(4, generator=gen(8))
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not torch.equal(a["x_query"], c["x_query"])
    torch.manual_seed(5)
    d = family.sample_tasks(2)
    torch.manual_seed(5)
    e = family.sample_tasks(2)
    assert torch.equal(d["amplitude"], e["amplitude"])
    assert torch.equal(family.init_params(gen(1)), family.init_params(gen(1)))


def test_device_moves(family: SineRegression) -> None:
    assert family.to("cpu") is family
    assert family.device == torch.device("cpu")
    assert family.sample_tasks(1, generator=gen())["x_query"].device == torch.device("cpu")


def test_bad_inputs_raise_clear_errors(
    family: SineRegression, tasks: dict[str, torch.Tensor]
) -> None:
    params = family.init_params(gen())
    ids = torch.arange(6)
    with pytest.raises(ValueError, match="num_params"):
        family.loss(params[:-1], tasks, ids)
    with pytest.raises(TypeError, match="floating"):
        family.loss(params.long(), tasks, ids)
    with pytest.raises(TypeError, match="task_ids"):
        family.loss(params, tasks, ids.float())
    with pytest.raises(IndexError, match=r"\[0, 6\)"):
        family.loss(params, tasks, torch.tensor([0, 6]))
    with pytest.raises(IndexError, match=r"\[0, 6\)"):
        family.loss(params, tasks, torch.tensor([-1]))
    with pytest.raises(ValueError, match="broadcast"):
        family.loss(params.expand(3, -1), tasks, torch.arange(4))
    with pytest.raises(ValueError, match="phase"):
        family.loss(params, tasks, ids, phase="train")  # type: ignore[arg-type]
    with pytest.raises(KeyError, match="x_query"):
        family.loss(params, {"x_support": tasks["x_support"]}, ids)
    with pytest.raises(ValueError, match="split"):
        family.sample_tasks(2, split="val")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive int"):
        family.sample_tasks(0)
    with pytest.raises(ValueError, match="shots"):
        SineRegression(shots=0)
    with pytest.raises(ValueError, match="amplitude_range"):
        SineRegression(amplitude_range=(5.0, 0.1))
    with pytest.raises(ValueError, match="activation"):
        SineRegression(activation="gelu")


def test_zero_predictor_mse_is_about_4_3() -> None:
    """E[A^2 sin^2(x - phase)] = E[A^2] / 2 = (0.1^2 + 0.1 * 5 + 5^2) / 6 ≈ 4.252 (the phase
    spans a full period of sin^2, so the inner mean is exactly 1/2)."""
    family = SineRegression(shots=10, query_shots=10)
    n = 20_000
    tasks = family.sample_tasks(n, generator=gen(11))
    losses = family.loss(torch.zeros(family.num_params), tasks, torch.arange(n))
    expected = (0.1**2 + 0.1 * 5 + 5**2) / 6
    stderr = losses.std() / math.sqrt(n)
    assert abs(losses.mean() - expected) < 4 * stderr, (losses.mean(), expected, stderr)
    assert 4.0 < losses.mean() < 4.5


# -- non-differentiable ------------------------------------------------------------------------


def test_quantised_sine_has_zero_gradient_but_varies() -> None:
    family = NonDifferentiableSine(shots=10, query_shots=10)
    assert not family.differentiable and family.model.quantize == 0.05
    tasks = family.sample_tasks(8, generator=gen(0))
    ids = torch.arange(8)
    params = family.init_params(gen(1)).requires_grad_()
    loss = family.loss(params, tasks, ids).mean()
    (grad,) = torch.autograd.grad(loss, params)
    assert torch.count_nonzero(grad) == 0  # MAML's inner step and meta-gradient are both zero
    # ...yet the loss is not constant: perturbations past the rounding grid change it.
    noise = torch.randn(16, family.num_params, generator=gen(2))
    with torch.no_grad():
        moved = family.loss(params + 0.1 * noise, tasks, torch.tensor(0))
        base = family.loss(params, tasks, torch.tensor(0))
    assert (moved - base).abs().max() > 1e-3
    assert moved.std() > 1e-3
    # A tiny move inside the rounding cell leaves it exactly unchanged (piecewise constant).
    with torch.no_grad():
        snapped = torch.round(params / 0.05) * 0.05
        nudged = family.loss(snapped + 1e-4, tasks, ids)
        torch.testing.assert_close(nudged, family.loss(snapped, tasks, ids))
    with pytest.raises(ValueError, match="quantize > 0"):
        NonDifferentiableSine(quantize=0.0)


def test_step_activation_gradient_vanishes_in_hidden_layers() -> None:
    family = SineRegression(activation="step")
    assert not family.differentiable
    tasks = family.sample_tasks(4, generator=gen(0))
    params = family.init_params(gen(1)).requires_grad_()
    (grad,) = torch.autograd.grad(family.loss(params, tasks, torch.arange(4)).mean(), params)
    named = family.model.layout.unflatten(grad)
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert torch.count_nonzero(named[name]) == 0, name
    # Only the output layer, which the loss is linear in, gets a gradient.
    assert torch.count_nonzero(named["4.weight"]) > 0
