"""Tests of the adaptation operators U(theta, task) on tiny quadratic tasks with known answers.

The family defined here has, per task, the adaptation loss 1/2 (theta - c)^T A (theta - c) and
the query loss 1/2 (theta - d)^T B (theta - d), so gradients, minimisers and the exact ES
estimates are available by hand. A counting wrapper checks the query budgets that the operators
report. The k-DPP sampler is checked against the exact k-DPP distribution enumerated on N=4.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import Tensor

from esmaml.adaptation import (
    ESGradientAdaptation,
    GradientDescentAdaptation,
    HillClimbingAdaptation,
    IdentityAdaptation,
    dpp_directions,
    sample_k_dpp,
)
from esmaml.adaptation.dpp import rbf_kernel
from esmaml.seeding import substream
from esmaml.tasks.base import Phase, Split, TaskFamily, Tasks
from esmaml.zero_order import make_generator, sample_noise

F64 = torch.float64

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------------------------
# task families



def directions_seed(seed: int, step: int = 0) -> int:
    """The seed of step ``step``'s directions when an operator adapts with ``seed``."""
    return substream(substream(seed, "step", step), "directions")

def spd(n: int, dim: int, generator: torch.Generator) -> Tensor:
    """``n`` symmetric positive-definite ``[dim, dim]`` matrices with eigenvalues in ~[0.5, 3]."""
    root = torch.randn(n, dim, dim, generator=generator, dtype=F64)
    return root @ root.transpose(-1, -2) / dim + 0.5 * torch.eye(dim, dtype=F64)


class QuadraticFamily(TaskFamily):
    """adapt: 1/2 (theta - c)^T A (theta - c); query: 1/2 (theta - d)^T B (theta - d)."""

    def __init__(self, dim: int = 3):
        self.num_params = dim

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(self.num_params, generator=generator, dtype=F64)

    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        dim, stream = self.num_params, generator or torch.default_generator
        return {
            "c": torch.randn(n, dim, generator=stream, dtype=F64),
            "A": spd(n, dim, stream),
            "d": torch.randn(n, dim, generator=stream, dtype=F64),
            "B": spd(n, dim, stream),
        }

    def loss(
        self,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        *,
        phase: Phase = "query",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        ids = torch.broadcast_to(task_ids, params.shape[:-1])
        center, matrix = (tasks["c"], tasks["A"]) if phase == "adapt" else (tasks["d"], tasks["B"])
        diff = (params - center[ids]).unsqueeze(-1)
        return 0.5 * (diff.transpose(-1, -2) @ matrix[ids] @ diff)[..., 0, 0]

    @staticmethod
    def adapt_grad(params: Tensor, tasks: Tasks, ids: Tensor) -> Tensor:
        """The analytic gradient A (theta - c) of the adaptation loss."""
        return (tasks["A"][ids] @ (params - tasks["c"][ids]).unsqueeze(-1)).squeeze(-1)


class CountingFamily(TaskFamily):
    """Wraps a family and counts the parameter vectors each ``loss`` call evaluates."""

    def __init__(self, inner: TaskFamily):
        self.inner = inner
        self.num_params = inner.num_params
        self.differentiable = inner.differentiable
        self.evaluations: dict[str, int] = {"adapt": 0, "query": 0}
        self.calls = 0
        self.adapt_inputs: list[Tensor] = []

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        return self.inner.init_params(generator)

    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        return self.inner.sample_tasks(n, split=split, generator=generator)

    def loss(
        self,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        *,
        phase: Phase = "query",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        batch = torch.broadcast_shapes(params.shape[:-1], task_ids.shape)
        self.evaluations[phase] += math.prod(batch)
        self.calls += 1
        if phase == "adapt":
            self.adapt_inputs.append(params.detach().clone())
        return self.inner.loss(params, tasks, task_ids, phase=phase, generator=generator)


def quadratic_setup(
    members: int = 6, num_tasks: int = 3, dim: int = 3, seed: int = 0
) -> tuple[QuadraticFamily, Tasks, Tensor, Tensor]:
    """A family, its tasks, ``members`` parameter vectors and their task ids (round-robin)."""
    generator = torch.Generator().manual_seed(seed)
    family = QuadraticFamily(dim)
    tasks = family.sample_tasks(num_tasks, generator=generator)
    params = torch.randn(members, dim, generator=generator, dtype=F64)
    ids = torch.arange(members) % num_tasks
    return family, tasks, params, ids


# --------------------------------------------------------------------------------------------
# hill climbing


@pytest.mark.parametrize("mode", ["batch", "average"])
@pytest.mark.parametrize("evaluations", [1, 3])
def test_hill_climbing_never_worsens_and_counts_queries(mode: str, evaluations: int) -> None:
    family, tasks, params, ids = quadratic_setup(members=8)
    counting = CountingFamily(family)
    operator = HillClimbingAdaptation(num_queries=10, sigma=0.2, mode=mode, evaluations=evaluations)
    adapted = operator.adapt(counting, params, tasks, ids, seed=3)
    before = family.loss(params, tasks, ids, phase="adapt")
    after = family.loss(adapted, tasks, ids, phase="adapt")
    assert adapted.shape == params.shape
    assert bool((after <= before).all())
    # From a random start on a convex quadratic some proposal improves for every member.
    assert bool((after < before).all())
    members = params.shape[0]
    assert counting.evaluations["adapt"] == members * operator.queries_per_step
    assert counting.evaluations["query"] == 0
    expected = (10 + 1) * evaluations if mode == "average" else 1 + 10 * evaluations
    assert operator.queries_per_step == expected
    assert operator.queries == expected


@pytest.mark.parametrize("mode", ["batch", "average"])
def test_hill_climbing_counts_queries_over_steps(mode: str) -> None:
    family, tasks, params, ids = quadratic_setup(members=4)
    counting = CountingFamily(family)
    operator = HillClimbingAdaptation(
        num_queries=5, sigma=0.1, mode=mode, evaluations=2, num_steps=3
    )
    operator.adapt(counting, params, tasks, ids, seed=0)
    assert (
        counting.evaluations["adapt"] == 4 * operator.queries == 4 * 3 * operator.queries_per_step
    )


@pytest.mark.parametrize("mode", ["batch", "average"])
def test_hill_climbing_rejects_ties(mode: str) -> None:
    """A flat loss never strictly improves: every member keeps its start exactly."""

    class Flat(QuadraticFamily):
        def loss(self, params, tasks, task_ids, *, phase="query", generator=None):  # type: ignore[override]
            return torch.zeros(torch.broadcast_shapes(params.shape[:-1], task_ids.shape), dtype=F64)

    _, tasks, params, ids = quadratic_setup()
    operator = HillClimbingAdaptation(num_queries=6, sigma=0.5, mode=mode, evaluations=2)
    adapted = operator.adapt(Flat(3), params, tasks, ids, seed=1)
    assert torch.equal(adapted, params)


@pytest.mark.parametrize("mode", ["batch", "average"])
def test_hill_climbing_rejects_nan_proposals(mode: str) -> None:
    """Proposals whose loss is NaN (here: first coordinate above the start) are never taken."""
    family, tasks, params, ids = quadratic_setup(members=8)
    start = params.clone()

    class NanAbove(QuadraticFamily):
        def loss(self, p, tasks, task_ids, *, phase="query", generator=None):  # type: ignore[override]
            value = family.loss(p, tasks, task_ids, phase=phase)
            above = p[..., 0] > start[:, 0].reshape(-1, *([1] * (p.ndim - 2)))
            return torch.where(above, torch.nan, value)

    operator = HillClimbingAdaptation(num_queries=12, sigma=0.3, mode=mode, evaluations=2)
    adapted = operator.adapt(NanAbove(3), params, tasks, ids, seed=2)
    assert bool(torch.isfinite(adapted).all())
    assert bool((adapted[:, 0] <= start[:, 0]).all())
    after = family.loss(adapted, tasks, ids, phase="adapt")
    assert bool((after <= family.loss(start, tasks, ids, phase="adapt")).all())


def test_hill_climbing_moves_by_sums_of_sigma_directions() -> None:
    """One round-per-query: the accepted point differs from the start by sigma times a sum of
    that task's proposal directions (regenerated from the seed)."""
    family, tasks, params, ids = quadratic_setup(members=3, num_tasks=3)
    operator = HillClimbingAdaptation(num_queries=4, sigma=0.25, mode="average", evaluations=1)
    adapted = operator.adapt(family, params, tasks, ids, seed=11)
    directions = sample_noise(
        (3, 4, 1, 3), generator=make_generator(directions_seed(11)), dtype=F64
    )[ids, :, 0]
    for member in range(3):
        moves = (adapted[member] - params[member]) / 0.25
        subsets = [
            sum((directions[member, k] for k in subset), torch.zeros(3, dtype=F64))
            for r in range(5)
            for subset in itertools.combinations(range(4), r)
        ]
        assert any(torch.allclose(moves, s, atol=1e-9) for s in subsets)


# --------------------------------------------------------------------------------------------
# ES-gradient adaptation


def hand_es_step(
    family: QuadraticFamily,
    params: Tensor,
    tasks: Tasks,
    ids: Tensor,
    *,
    seed: int,
    num_queries: int,
    sigma: float,
    step_size: float,
    method: str,
    sampling: str,
    shaping: str,
) -> Tensor:
    """theta' = theta - alpha * 1/K sum_k w_k p_k, with the weights written out by hand."""
    num_tasks = tasks["c"].shape[0]
    directions = sample_noise(
        (num_tasks, num_queries, params.shape[-1]),
        kind=sampling,  # type: ignore[arg-type]
        generator=make_generator(directions_seed(seed)),
        dtype=params.dtype,
    )[ids]  # [B, K, D]
    plus = family.loss(
        params.unsqueeze(-2) + sigma * directions, tasks, ids[:, None], phase="adapt"
    )
    if method == "antithetic":
        minus = family.loss(
            params.unsqueeze(-2) - sigma * directions, tasks, ids[:, None], phase="adapt"
        )
        values = torch.cat([plus, minus], -1)
    elif method == "forward":
        values = plus - family.loss(params, tasks, ids, phase="adapt")[:, None]
    else:
        values = plus

    def shape(v: Tensor) -> Tensor:
        if shaping == "none":
            return v
        if shaping == "zscore":
            return (v - v.mean(-1, keepdim=True)) / v.std(-1, unbiased=False, keepdim=True)
        ranks = v.argsort(-1).argsort(-1).to(v.dtype)  # no ties among continuous values
        return ranks / (v.shape[-1] - 1) - 0.5

    shaped = shape(values)
    if method == "antithetic":
        weights = (shaped[:, :num_queries] - shaped[:, num_queries:]) / (2 * sigma)
    else:
        weights = shaped / sigma
    gradient = (weights.unsqueeze(-1) * directions).sum(-2) / num_queries
    return params - step_size * gradient


@pytest.mark.parametrize(
    ("method", "sampling", "shaping"),
    [
        ("forward", "gaussian", "zscore"),
        ("antithetic", "gaussian", "none"),
        ("antithetic", "orthogonal", "centered_rank"),
        ("naive", "gaussian", "none"),
        ("forward", "orthogonal", "none"),
    ],
)
def test_es_gradient_step_matches_hand_formula(method: str, sampling: str, shaping: str) -> None:
    family, tasks, params, ids = quadratic_setup(members=6, num_tasks=3)
    kwargs = {"num_queries": 5, "sigma": 0.1, "step_size": 0.05}
    operator = ESGradientAdaptation(**kwargs, method=method, sampling=sampling, shaping=shaping)  # type: ignore[arg-type]
    counting = CountingFamily(family)
    adapted = operator.adapt(counting, params, tasks, ids, seed=42)
    expected = hand_es_step(
        family,
        params,
        tasks,
        ids,
        seed=42,
        method=method,
        sampling=sampling,
        shaping=shaping,
        **kwargs,
    )
    torch.testing.assert_close(adapted, expected, rtol=1e-10, atol=1e-12)
    assert counting.evaluations["adapt"] == 6 * operator.queries_per_step
    # forward: K + 1 with the pivot f(theta); shaped values ignore it, so it is not evaluated
    per_step = {"forward": 5 + (shaping == "none"), "antithetic": 2 * 5, "naive": 5}[method]
    assert operator.queries_per_step == per_step


@pytest.mark.parametrize("shaping", ["zscore", "centered_rank"])
def test_es_gradient_forward_shape_with_pivot_is_the_reference_forward_fd(shaping: str) -> None:
    """google-research's BlackboxAdaptation with forward_fd: the pivot is shaped with the K
    values and the weights are s_k - s_pivot; for z-scores, (f_k - f(theta)) / std of all K + 1
    values."""
    family, tasks, params, ids = quadratic_setup(members=6, num_tasks=3)
    k, sigma, alpha = 5, 0.1, 0.05
    operator = ESGradientAdaptation(
        num_queries=k, sigma=sigma, step_size=alpha, shaping=shaping, shape_with_pivot=True
    )
    counting = CountingFamily(family)
    adapted = operator.adapt(counting, params, tasks, ids, seed=42)
    assert operator.queries_per_step == k + 1
    assert counting.evaluations["adapt"] == 6 * (k + 1)
    directions = sample_noise(
        (3, k, params.shape[-1]), generator=make_generator(directions_seed(42)), dtype=params.dtype
    )[ids]
    plus = family.loss(
        params.unsqueeze(-2) + sigma * directions, tasks, ids[:, None], phase="adapt"
    )
    pivot = family.loss(params, tasks, ids, phase="adapt")
    joint = torch.cat([plus, pivot[:, None]], -1)
    if shaping == "zscore":
        scale = joint.std(-1, unbiased=False, keepdim=True)
        weights = (plus - pivot[:, None]) / scale / sigma
    else:
        ranks = joint.argsort(-1).argsort(-1).to(joint.dtype) / k - 0.5
        weights = (ranks[:, :k] - ranks[:, k:]) / sigma
    expected = params - alpha * (weights.unsqueeze(-1) * directions).sum(-2) / k
    torch.testing.assert_close(adapted, expected, rtol=1e-10, atol=1e-12)


def test_es_gradient_several_steps_chain_single_steps() -> None:
    family, tasks, params, ids = quadratic_setup()
    operator = ESGradientAdaptation(4, 0.1, 0.1, num_steps=3, method="antithetic", shaping="none")
    adapted = operator.adapt(family, params, tasks, ids, seed=5)
    manual = params
    for index in range(3):
        manual = operator.step(family, manual, tasks, ids, substream(5, "step", index))
    torch.testing.assert_close(adapted, manual, rtol=0, atol=0)
    assert operator.queries == 3 * operator.queries_per_step


def test_es_gradient_antithetic_estimate_is_unbiased_on_quadratic() -> None:
    """Antithetic, unshaped: the estimate is P grad L with E[P] = I, so the mean step over many
    seeds matches the exact gradient step within the estimator's standard error."""
    family, tasks, params, ids = quadratic_setup(members=1, num_tasks=1)
    operator = ESGradientAdaptation(8, 0.3, 1.0, method="antithetic", shaping="none")
    steps = torch.stack(
        [params - operator.adapt(family, params, tasks, ids, seed=s) for s in range(400)]
    )[:, 0]
    exact = family.adapt_grad(params, tasks, ids)[0]
    mean, se = steps.mean(0), steps.std(0) / math.sqrt(steps.shape[0])
    assert bool(((mean - exact).abs() <= 4 * se).all()), (mean, exact, se)


def test_es_gradient_dpp_directions_come_from_the_seed() -> None:
    _, tasks, params, _ = quadratic_setup(num_tasks=2)
    operator = ESGradientAdaptation(3, 0.1, 0.1, sampling="dpp", dpp_oversample=4)
    got = operator.directions(tasks, 3, 9, params.device, F64)
    expected = dpp_directions(
        3,
        3,
        (2,),
        oversample=4,
        bandwidth=0.5,
        scale=0.1,
        generator=make_generator(substream(9, "directions")),
        dtype=F64,
    )
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------------
# common random numbers at the operator level


@pytest.mark.parametrize(
    "operator",
    [
        ESGradientAdaptation(4, 0.1, 0.1, method="antithetic"),
        ESGradientAdaptation(4, 0.1, 0.1, method="forward", sampling="orthogonal"),
        HillClimbingAdaptation(4, 0.1, mode="batch", evaluations=2),
    ],
    ids=["es-antithetic", "es-forward-orthogonal", "hill-climbing"],
)
def test_members_sharing_a_task_share_inner_directions(operator) -> None:
    """Two members on task 0 query the same offsets; a member on an identical copy (task 1) of
    that task queries different ones (its directions are drawn for its own task slot)."""
    family, tasks, _, _ = quadratic_setup(num_tasks=1)
    tasks = {key: value.expand(2, *value.shape[1:]).clone() for key, value in tasks.items()}
    params = torch.randn(3, 3, dtype=F64)
    counting = CountingFamily(family)
    operator.adapt(counting, params, tasks, torch.tensor([0, 0, 1]), seed=4)
    batch = next(x for x in counting.adapt_inputs if x.ndim == 3 and x.shape[1] > 1)
    offsets = batch - params[:, None, :]
    torch.testing.assert_close(offsets[0], offsets[1], rtol=0, atol=1e-12)
    assert not torch.allclose(offsets[0], offsets[2])


# --------------------------------------------------------------------------------------------
# gradient descent and identity


@pytest.mark.parametrize("num_steps", [1, 3])
def test_gradient_descent_matches_manual_steps(num_steps: int) -> None:
    family, tasks, params, ids = quadratic_setup(members=6, num_tasks=3)
    counting = CountingFamily(family)
    operator = GradientDescentAdaptation(lr=0.2, num_steps=num_steps)
    adapted = operator.adapt(counting, params, tasks, ids, seed=0)
    manual = params.clone()
    for _ in range(num_steps):
        manual = manual - 0.2 * family.adapt_grad(manual, tasks, ids)
    torch.testing.assert_close(adapted, manual, rtol=1e-12, atol=1e-12)
    assert operator.queries == num_steps
    assert counting.calls == num_steps
    # num_steps given to adapt overrides the operator's
    once = operator.adapt(family, params, tasks, ids, seed=0, num_steps=1)
    torch.testing.assert_close(once, params - 0.2 * family.adapt_grad(params, tasks, ids))


def test_gradient_descent_rejects_non_differentiable_family() -> None:
    family, tasks, params, ids = quadratic_setup()
    family.differentiable = False
    with pytest.raises(ValueError, match="differentiable"):
        GradientDescentAdaptation(0.1).adapt(family, params, tasks, ids, seed=0)


def test_identity_returns_theta() -> None:
    family, tasks, params, ids = quadratic_setup()
    counting = CountingFamily(family)
    operator = IdentityAdaptation()
    for steps in (None, 0, 5):
        adapted = operator.adapt(counting, params, tasks, ids, seed=0, num_steps=steps)
        assert torch.equal(adapted, params)
    assert operator.queries == 0 and operator.queries_per_step == 0
    assert counting.calls == 0


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: ESGradientAdaptation(num_queries=0), "num_queries"),
        (lambda: ESGradientAdaptation(sigma=0.0), "sigma"),
        (lambda: ESGradientAdaptation(sigma="x"), "sigma"),
        (lambda: ESGradientAdaptation(sampling="sobol"), "sampling"),
        (lambda: ESGradientAdaptation(method="central"), "method"),
        (lambda: ESGradientAdaptation(shaping="rank"), "shaping"),
        (lambda: ESGradientAdaptation(num_steps=-1), "num_steps"),
        (lambda: ESGradientAdaptation(shape_with_pivot=True, shaping="none"), "shape_with_pivot"),
        (
            lambda: ESGradientAdaptation(shape_with_pivot=True, method="antithetic"),
            "shape_with_pivot",
        ),
        (lambda: ESGradientAdaptation(shape_with_pivot=1), "shape_with_pivot"),
        (lambda: HillClimbingAdaptation(mode="best"), "mode"),
        (lambda: HillClimbingAdaptation(evaluations=0), "evaluations"),
        (lambda: GradientDescentAdaptation(lr=-1.0), "lr"),
    ],
)
def test_operator_arguments_are_validated(factory, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        factory()


# --------------------------------------------------------------------------------------------
# k-DPP


def test_sample_k_dpp_returns_k_distinct_indices() -> None:
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(64, 12, 3, generator=generator, dtype=F64)
    for k in (1, 4, 12):
        picks = sample_k_dpp(rbf_kernel(points, 0.5), k, generator)
        assert picks.shape == (64, k)
        assert picks.dtype == torch.long
        assert bool(((picks >= 0) & (picks < 12)).all())
        assert all(len(set(row.tolist())) == k for row in picks)
    with pytest.raises(ValueError, match="k must be"):
        sample_k_dpp(rbf_kernel(points, 0.5), 13)


def test_sample_k_dpp_matches_exact_probabilities() -> None:
    """N=4, k=2: P(S) is proportional to det(L_S). 40k batched draws, chi-square with 5 degrees
    of freedom against its 0.999 quantile (20.52)."""
    generator = torch.Generator().manual_seed(1)
    root = torch.randn(4, 4, generator=generator, dtype=F64)
    kernel = root @ root.T + 0.3 * torch.eye(4, dtype=F64)
    subsets = list(itertools.combinations(range(4), 2))
    dets = torch.stack([torch.linalg.det(kernel[list(s)][:, list(s)]) for s in subsets])
    probabilities = dets / dets.sum()
    assert float(probabilities.min()) > 0.01  # a kernel where every subset is observable
    draws = 40_000
    picks = sample_k_dpp(kernel.expand(draws, 4, 4), 2, generator).sort(-1).values
    codes = picks[:, 0] * 4 + picks[:, 1]
    counts = torch.stack([(codes == a * 4 + b).sum() for a, b in subsets]).to(F64)
    assert int(counts.sum()) == draws
    expected = probabilities * draws
    chi_square = float(((counts - expected).square() / expected).sum())
    assert chi_square < 20.52, (counts / draws, probabilities)


def test_sample_k_dpp_prefers_diverse_points() -> None:
    """Two near-duplicate points are almost never selected together."""
    points = torch.tensor([[0.0], [0.01], [3.0], [6.0]], dtype=F64)
    picks = sample_k_dpp(
        rbf_kernel(points, 1.0).expand(2000, 4, 4), 2, torch.Generator().manual_seed(0)
    )
    together = ((picks == 0).any(-1) & (picks == 1).any(-1)).float().mean()
    assert float(together) < 0.01


def test_dpp_directions_shape_and_origin() -> None:
    generator = torch.Generator().manual_seed(3)
    directions = dpp_directions(5, 4, (2, 3), oversample=3, generator=generator, dtype=F64)
    assert directions.shape == (2, 3, 5, 4)
    candidates = torch.randn((2, 3, 15, 4), generator=torch.Generator().manual_seed(3), dtype=F64)
    # every direction is one of its row's candidates, and the k picks are distinct
    matches = (directions.unsqueeze(-2) == candidates.unsqueeze(-3)).all(-1)  # [2, 3, 5, 15]
    assert bool((matches.sum(-1) == 1).all())
    assert bool((matches.sum(-2) <= 1).all())


def test_dpp_kernel_is_the_reference_kernel_on_sigma_scaled_perturbations() -> None:
    """google-research util/dpp: L_ij = exp(-||delta_i - delta_j||^2 / (2 * 0.5^2)) on the
    perturbations delta = 0.1 z. At D = 6 their squared distances are about 2 * 0.01 * 6 = 0.12,
    so the kernel is far from the identity (mean off-diagonal ~0.79); dividing by D as esmaml
    once did left it ~0.02, and the DPP sample nearly uniform."""
    z = torch.randn(100, 6, generator=torch.Generator().manual_seed(0), dtype=F64)
    kernel = rbf_kernel(0.1 * z, 0.5)
    off_diagonal = kernel[~torch.eye(100, dtype=torch.bool)]
    assert 0.7 < float(off_diagonal.mean()) < 0.85
    i, j = 3, 7
    expected = math.exp(-float((0.1 * (z[i] - z[j])).square().sum()) / (2 * 0.25))
    assert float(kernel[i, j]) == pytest.approx(expected, rel=1e-12)


def test_es_gradient_naive_shape_with_pivot_is_the_reference_default() -> None:
    """google-research's BlackboxAdaptation default: z-score the K values together with the
    pivot (population std), g = 1/K sum_k s_k delta_k / sigma^2 (the pivot's own score is not
    in the sum), theta' = theta + alpha g on rewards, i.e. minus on losses."""
    family, tasks, params, ids = quadratic_setup(members=6, num_tasks=3)
    k, sigma, alpha = 5, 0.1, 0.05
    operator = ESGradientAdaptation(
        num_queries=k, sigma=sigma, step_size=alpha, method="naive", shape_with_pivot=True
    )
    counting = CountingFamily(family)
    adapted = operator.adapt(counting, params, tasks, ids, seed=42)
    assert operator.queries_per_step == k + 1 and counting.evaluations["adapt"] == 6 * (k + 1)
    z = sample_noise(
        (3, k, params.shape[-1]), generator=make_generator(directions_seed(42)), dtype=F64
    )[ids]
    delta = sigma * z
    rewards = -family.loss(params.unsqueeze(-2) + delta, tasks, ids[:, None], phase="adapt")
    pivot = -family.loss(params, tasks, ids, phase="adapt")
    joint = torch.cat([rewards, pivot[:, None]], -1)
    scores = (joint - joint.mean(-1, keepdim=True)) / joint.std(-1, unbiased=False, keepdim=True)
    g = (scores[:, :k, None] * delta).sum(-2) / k / sigma**2
    torch.testing.assert_close(adapted, params + alpha * g, rtol=1e-10, atol=1e-12)
