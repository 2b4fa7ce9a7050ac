"""Tests of the meta-learners: zero-order ES-MAML and first-order ES-MAML, on quadratic tasks
whose meta-gradient is known in closed form.

Per task: adaptation loss L = 1/2 (theta - c)^T A (theta - c), query loss
f = 1/2 (theta - d)^T B (theta - d). With gradient-descent adaptation,
theta' = (I - alpha A) theta + alpha A c is linear, so J(theta) = mean_i f_i(theta'_i) is
quadratic and grad J = mean_i (I - alpha A_i) B_i (theta'_i - d_i) exactly; the antithetic ES
estimate of a quadratic is unbiased for every sigma. Statistical claims compare means over
independent iterations with their standard errors (k = 4 SE per coordinate).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from esmaml.adaptation import (
    ESGradientAdaptation,
    GradientDescentAdaptation,
    HillClimbingAdaptation,
    IdentityAdaptation,
)
from esmaml.adaptation.base import AdaptationOperator
from esmaml.meta import ESMAML, FirstOrderESMAML, evaluate_adaptation
from esmaml.meta.base import load_optimizer_state
from esmaml.tasks.base import Phase, Split, TaskFamily, Tasks

F64 = torch.float64
DIM, NUM_TASKS = 3, 4
K_SE = 4.0

pytestmark = pytest.mark.usefixtures("single_thread")


# --------------------------------------------------------------------------------------------
# a quadratic task family


def spd(n: int, dim: int, generator: torch.Generator) -> Tensor:
    root = torch.randn(n, dim, dim, generator=generator, dtype=F64)
    return root @ root.transpose(-1, -2) / dim + 0.5 * torch.eye(dim, dtype=F64)


class QuadraticFamily(TaskFamily):
    """adapt: 1/2 (theta - c)^T A (theta - c); query: 1/2 (theta - d)^T B (theta - d).

    ``query_hook(params, ids, values) -> values`` lets a test corrupt query values (NaN, huge).
    """

    def __init__(
        self,
        dim: int = DIM,
        query_hook: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None,
    ):
        self.num_params = dim
        self.query_hook = query_hook
        self.seen: dict[str, list[tuple[Tensor, Tensor]]] = {"adapt": [], "query": []}

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
        self.seen[phase].append((params.detach(), ids))
        center, matrix = (tasks["c"], tasks["A"]) if phase == "adapt" else (tasks["d"], tasks["B"])
        diff = (params - center[ids]).unsqueeze(-1)
        values = 0.5 * (diff.transpose(-1, -2) @ matrix[ids] @ diff)[..., 0, 0]
        if phase == "query" and self.query_hook is not None:
            values = self.query_hook(params, ids, values)
        return values


def matvec(matrix: Tensor, vector: Tensor) -> Tensor:
    return (matrix @ vector.unsqueeze(-1)).squeeze(-1)


def setup(seed: int = 0, **family_kwargs) -> tuple[QuadraticFamily, Tasks, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    family = QuadraticFamily(**family_kwargs)
    tasks = family.sample_tasks(NUM_TASKS, generator=generator)
    theta = torch.randn(DIM, generator=generator, dtype=F64)
    return family, tasks, theta


def gd_meta_gradient(tasks: Tasks, theta: Tensor, alpha: float) -> Tensor:
    """grad J for one gradient-descent adaptation step:
    mean_i (I - alpha A_i) B_i (theta'_i - d_i)."""
    a, b, c, d = tasks["A"], tasks["B"], tasks["c"], tasks["d"]
    adapted = theta - alpha * matvec(a, theta - c)
    eye = torch.eye(theta.shape[-1], dtype=F64)
    return matvec(eye - alpha * a, matvec(b, adapted - d)).mean(0)


def es_adaptation_meta_gradient(tasks: Tasks, theta: Tensor, alpha: float, k: int) -> Tensor:
    """grad J for one antithetic, unshaped ES-gradient adaptation step with K Gaussian queries.

    For a quadratic L that step is theta' = theta - alpha P A (theta - c) with
    P = 1/K sum_k p_k p_k^T (exactly linear in theta given the inner noise), so
    grad_theta f(theta') = (I - alpha A P) B (theta' - d). Averaging over P with
    E[P] = I and E[P M P] = M + (M^T + tr(M) I) / K gives the gradient-descent answer plus
    alpha^2 / K * A (B + tr(B) I) A (theta - c).
    """
    a, b, c = tasks["A"], tasks["B"], tasks["c"]
    eye = torch.eye(theta.shape[-1], dtype=F64)
    trace_b = b.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None]
    extra = alpha**2 / k * matvec(a @ (b + trace_b * eye) @ a, theta - c)
    return gd_meta_gradient(tasks, theta, alpha) + extra.mean(0)


def es_maml(
    family: TaskFamily,
    adaptation: AdaptationOperator,
    theta: Tensor,
    *,
    lr: float = 1.0,
    seed: int = 1,
    **kwargs,
) -> ESMAML:
    options = {"num_perturbations": 64, "sigma": 0.1, "shaping": "none"}
    options.update(kwargs)
    return ESMAML(
        family,
        adaptation,
        optimizer=lambda params: torch.optim.SGD(params, lr=lr),
        generator=torch.Generator().manual_seed(seed),
        init_params=theta,
        tasks_per_iteration=NUM_TASKS,
        **options,
    )


def sampled_gradients(learner: ESMAML, tasks: Tasks, iterations: int) -> Tensor:
    """The meta-gradient estimate of ``iterations`` steps, each from the same theta."""
    theta = learner.parameters_flat()
    estimates = []
    for _ in range(iterations):
        learner.step(tasks)
        assert learner.theta.grad is not None
        estimates.append(learner.theta.grad.detach().clone())
        with torch.no_grad():
            learner.theta.copy_(theta)
    return torch.stack(estimates)


def within(samples: Tensor, target: Tensor, k: float = K_SE) -> tuple[bool, Tensor]:
    """Whether the sample mean is within k standard errors of ``target`` in every coordinate."""
    se = samples.std(0) / math.sqrt(samples.shape[0])
    z = (samples.mean(0) - target) / se
    return bool((z.abs() <= k).all()), z


# --------------------------------------------------------------------------------------------
# ES-MAML: meta-gradient against the analytic one


@pytest.mark.parametrize(("method", "sigma"), [("antithetic", 0.1), ("forward", 0.5)])
def test_es_maml_gradient_matches_analytic_with_gradient_descent(method: str, sigma: float) -> None:
    family, tasks, theta = setup()
    alpha = 0.3
    learner = es_maml(family, GradientDescentAdaptation(alpha), theta, method=method, sigma=sigma)
    samples = sampled_gradients(learner, tasks, 100)
    exact = gd_meta_gradient(tasks, theta, alpha)
    ok, z = within(samples, exact)
    assert ok, z
    # Power: the gradient without the adaptation's Jacobian (first-order MAML) is rejected.
    first_order = matvec(
        tasks["B"], theta - alpha * matvec(tasks["A"], theta - tasks["c"]) - tasks["d"]
    ).mean(0)
    assert not within(samples, first_order)[0]


def test_es_maml_gradient_with_es_gradient_adaptation() -> None:
    """ES-gradient adaptation (antithetic, unshaped) is linear in theta given its inner noise,
    so with common random numbers the pair difference is exact and the estimate averages to
    the closed form of :func:`es_adaptation_meta_gradient`."""
    family, tasks, theta = setup()
    alpha, k = 0.3, 4
    adaptation = ESGradientAdaptation(k, 0.1, alpha, method="antithetic", shaping="none")
    learner = es_maml(family, adaptation, theta)
    samples = sampled_gradients(learner, tasks, 300)
    ok, z = within(samples, es_adaptation_meta_gradient(tasks, theta, alpha, k))
    assert ok, z
    # Power: the 1/K term is resolved (the gradient-descent answer alone is rejected).
    assert not within(samples, gd_meta_gradient(tasks, theta, alpha))[0]


def test_es_maml_update_is_the_sgd_step_on_the_estimate() -> None:
    family, tasks, theta = setup()
    learner = es_maml(family, IdentityAdaptation(), theta, lr=0.05)
    learner.step(tasks)
    assert learner.theta.grad is not None
    torch.testing.assert_close(learner.parameters_flat(), theta - 0.05 * learner.theta.grad)


# --------------------------------------------------------------------------------------------
# common random numbers and task assignment


def inner_offsets(family: QuadraticFamily, members: int) -> Tensor:
    """Offsets of the adaptation queries from each member's centre, ``[members, 2K, D]``
    (antithetic queries are symmetric about the member)."""
    params, _ = next(x for x in family.seen["adapt"] if x[0].shape[0] == members)
    return params - params.mean(-2, keepdim=True)


@pytest.mark.parametrize("crn", [True, False])
def test_common_random_numbers_share_inner_directions(crn: bool) -> None:
    family, tasks, theta = setup()
    adaptation = ESGradientAdaptation(3, 0.1, 0.1, method="antithetic", shaping="none")
    n_dirs = 8
    learner = es_maml(
        family, adaptation, theta, num_perturbations=n_dirs, common_random_numbers=crn
    )
    learner.step(tasks)
    offsets = inner_offsets(family, 2 * n_dirs)
    _, query_ids = family.seen["query"][-1]
    if crn:
        # Both members of pair j (j and j + N) adapt with the same directions on the same task.
        torch.testing.assert_close(offsets[:n_dirs], offsets[n_dirs:], rtol=0, atol=1e-12)
        assert torch.equal(query_ids[:n_dirs], query_ids[n_dirs:])
    else:
        for j in range(n_dirs):
            assert not torch.allclose(offsets[j], offsets[j + n_dirs])
        # every member has its own task slot holding its pair's task
        assert torch.equal(query_ids, torch.arange(2 * n_dirs))


@pytest.mark.parametrize("n_dirs", [5, 7])
def test_antithetic_pairs_share_their_task_when_n_does_not_divide_n_dirs(n_dirs: int) -> None:
    """Regression: member i used task i mod n, so with n = 4 tasks and N = 5 directions
    member 0 (task 0) and its mirror 5 (task 1) were scored on different tasks."""
    family, tasks, theta = setup()
    learner = es_maml(family, IdentityAdaptation(), theta, num_perturbations=n_dirs)
    learner.step(tasks)
    _, ids = family.seen["query"][-1]
    assert ids.shape == (2 * n_dirs,)
    assert torch.equal(ids[:n_dirs], ids[n_dirs:])
    assert torch.equal(ids[:n_dirs], torch.arange(n_dirs) % NUM_TASKS)


# --------------------------------------------------------------------------------------------
# metrics and the NaN policy


def test_es_maml_step_metrics() -> None:
    family, tasks, theta = setup()
    adaptation = ESGradientAdaptation(3, 0.1, 0.1, method="forward")
    learner = es_maml(family, adaptation, theta, num_perturbations=6, lr=0.01)
    metrics = learner.step(tasks)
    expected = {
        "meta_objective",
        "grad_norm",
        "queries",
        "perturbed_mean",
        "perturbed_std",
        "dropped_samples",
    }
    assert expected <= set(metrics)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["dropped_samples"] == 0.0
    # 2N evaluations, each an adaptation (K queries: z-scored values need no pivot) plus one
    # query-phase evaluation
    assert metrics["queries"] == 12 * (adaptation.queries + 1) == 12 * 4
    # value='population_mean': the reported objective is the mean of the perturbed values
    assert metrics["meta_objective"] == pytest.approx(metrics["perturbed_mean"])
    assert learner.theta.grad is not None
    assert metrics["grad_norm"] == pytest.approx(float(learner.theta.grad.norm()))


@pytest.mark.parametrize(
    ("method", "shaping"), [("forward", "none"), ("forward", "zscore"), ("antithetic", "none")]
)
def test_es_maml_queries_count_every_rollout(method: str, shaping: str) -> None:
    """The reported queries are the family's evaluations, f(theta) included: the forward
    estimator on raw values adapts and scores theta on every task for its baseline."""
    family, tasks, theta = setup()
    evaluated: list[int] = []
    loss = family.loss

    def counted_loss(params: Tensor, tasks: Tasks, task_ids: Tensor, **kwargs) -> Tensor:
        evaluated.append(math.prod(torch.broadcast_shapes(params.shape[:-1], task_ids.shape)))
        return loss(params, tasks, task_ids, **kwargs)

    family.loss = counted_loss  # type: ignore[method-assign]
    adaptation = ESGradientAdaptation(3, 0.1, 0.1, method="forward")
    learner = es_maml(
        family, adaptation, theta, num_perturbations=6, method=method, shaping=shaping
    )
    metrics = learner.step(tasks)
    counted = sum(evaluated)
    assert metrics["queries"] == counted
    members = 12 if method == "antithetic" else 6
    center = NUM_TASKS if method == "forward" else 0  # per-task pivots, shaped or not
    assert counted == (members + center) * (adaptation.queries + 1)


def nan_on_task_zero(params: Tensor, ids: Tensor, values: Tensor) -> Tensor:
    return torch.where(ids == 0, torch.nan, values)


def test_nan_policy_raise() -> None:
    family, tasks, theta = setup(query_hook=nan_on_task_zero)
    learner = es_maml(family, IdentityAdaptation(), theta, num_perturbations=8)
    with pytest.raises(FloatingPointError, match="NaN"):
        learner.step(tasks)
    assert torch.equal(learner.parameters_flat(), theta)


def test_nan_policy_drop_reports_and_ignores_dropped_pairs() -> None:
    family, tasks, theta = setup(query_hook=nan_on_task_zero)
    learner = es_maml(family, IdentityAdaptation(), theta, num_perturbations=8, nan_policy="drop")
    metrics = learner.step(tasks)
    # directions 0 and 4 use task 0 (of 4): both pairs are dropped
    assert metrics["dropped_samples"] == 2.0
    assert math.isfinite(metrics["meta_objective"])
    assert math.isfinite(metrics["perturbed_mean"]) and math.isfinite(metrics["perturbed_std"])
    after = learner.parameters_flat()
    assert bool(torch.isfinite(after).all())
    assert not torch.equal(after, theta)


def test_nan_policy_drop_with_every_sample_nan_raises_and_keeps_theta() -> None:
    family, tasks, theta = setup(query_hook=lambda p, ids, v: torch.full_like(v, torch.nan))
    learner = es_maml(family, IdentityAdaptation(), theta, num_perturbations=4, nan_policy="drop")
    with pytest.raises(FloatingPointError):
        learner.step(tasks)
    assert torch.equal(learner.parameters_flat(), theta)


def test_overflowing_estimate_is_never_written() -> None:
    """Finite but huge values overflow the float32 estimate to inf/NaN: the step must raise and
    leave theta (and the optimizer) untouched, under either NaN policy."""
    for policy in ("raise", "drop"):
        family, tasks, theta = setup(
            query_hook=lambda p, ids, v: 3e38 * torch.sign(p[..., 0] - 0.123)
        )
        theta32 = theta.float()
        theta32[0] = 0.123
        learner = es_maml(family, IdentityAdaptation(), theta32, nan_policy=policy)
        # float32 parameters: the family casts through float64 but the estimate is float32
        with pytest.raises(FloatingPointError):
            learner.step(tasks)
        assert torch.equal(learner.parameters_flat(), theta32)


def test_non_finite_parameters_after_the_step_are_rolled_back() -> None:
    family, tasks, theta = setup()
    learner = es_maml(family, IdentityAdaptation(), theta, lr=math.inf)
    with pytest.raises(FloatingPointError, match="NaN/inf"):
        learner.step(tasks)
    assert torch.equal(learner.parameters_flat(), theta)


# --------------------------------------------------------------------------------------------
# ES-MAML: seeding and state


def test_es_maml_is_deterministic_by_seed_and_state_round_trips() -> None:
    family, tasks, theta = setup()
    adaptation = ESGradientAdaptation(3, 0.1, 0.1)

    def run(seed: int, steps: int = 3) -> ESMAML:
        learner = es_maml(family, adaptation, theta, seed=seed, lr=0.01)
        for _ in range(steps):
            learner.step(tasks)
        return learner

    first, second, other = run(0), run(0), run(1)
    assert torch.equal(first.parameters_flat(), second.parameters_flat())
    assert not torch.equal(first.parameters_flat(), other.parameters_flat())
    restored = es_maml(family, adaptation, torch.zeros(DIM, dtype=F64), lr=0.01)
    restored.load_state_dict(first.state_dict())
    assert torch.equal(restored.parameters_flat(), first.parameters_flat())


def test_es_maml_argument_validation() -> None:
    family, _, theta = setup()
    with pytest.raises(ValueError, match="num_perturbations"):
        ESMAML(family, IdentityAdaptation(), num_perturbations=0, init_params=theta)
    with pytest.raises(ValueError, match="sigma"):
        ESMAML(family, IdentityAdaptation(), sigma=-1.0, init_params=theta)
    with pytest.raises(ValueError, match="nan_policy"):
        ESMAML(family, IdentityAdaptation(), nan_policy="ignore", init_params=theta)


# --------------------------------------------------------------------------------------------
# first-order ES-MAML


def first_order(
    family: TaskFamily, theta: Tensor, k: int, alpha: float, correction: bool
) -> tuple[FirstOrderESMAML, ESGradientAdaptation]:
    adaptation = ESGradientAdaptation(k, 0.1, alpha, method="antithetic", shaping="none")
    learner = FirstOrderESMAML(
        family,
        adaptation,
        num_perturbations=16,
        sigma=0.1,
        tasks_per_iteration=NUM_TASKS,
        hessian_correction=correction,
        init_params=theta,
    )
    return learner, adaptation


def adapted_points(
    family: TaskFamily, adaptation: ESGradientAdaptation, tasks: Tasks, theta: Tensor, seed: int
) -> Tensor:
    ids = torch.arange(NUM_TASKS)
    return adaptation.adapt(family, theta.expand(NUM_TASKS, DIM), tasks, ids, seed)


def test_first_order_without_correction_is_the_gradient_at_the_adapted_points() -> None:
    family, tasks, theta = setup()
    learner, adaptation = first_order(family, theta, k=8, alpha=0.3, correction=False)
    residuals, moved = [], []
    for seed in range(300):
        estimate, metrics = learner.meta_gradient(tasks, seed)
        adapted = adapted_points(family, adaptation, tasks, theta, seed)
        query_grad = matvec(tasks["B"], adapted - tasks["d"])
        residuals.append(estimate - query_grad.mean(0))
        moved.append(estimate - matvec(tasks["B"], theta - tasks["d"]).mean(0))
    ok, z = within(torch.stack(residuals), torch.zeros(DIM, dtype=F64))
    assert ok, z
    # Power: the gradient at the unadapted theta is rejected.
    assert not within(torch.stack(moved), torch.zeros(DIM, dtype=F64))[0]
    assert {"meta_objective", "queries", "perturbed_mean", "perturbed_std"} <= set(metrics)
    assert metrics["queries"] == NUM_TASKS * (adaptation.queries + 2 * 16 + 1)


def test_first_order_hessian_correction_given_the_adaptation_queries() -> None:
    """Given the adaptation's queries, the corrected estimate averages (over the meta noise) to
    mean_i (I - alpha H_i) grad f_i(theta'_i) with the ES Hessian
    H_i = 1/(K sigma^2) sum_k (f_ik - mean f_i) p_ik p_ik^T built by hand from the trace."""
    family, tasks, theta = setup()
    k, alpha, sigma = 20, 0.3, 0.1
    learner, adaptation = first_order(family, theta, k=k, alpha=alpha, correction=True)
    ids, eye = torch.arange(NUM_TASKS), torch.eye(DIM, dtype=F64)
    residuals, hessian_errors = [], []
    for seed in range(300):
        estimate, _ = learner.meta_gradient(tasks, seed)
        trace = adaptation.trace(family, theta.expand(NUM_TASKS, DIM), tasks, ids, seed)
        adapted = theta - alpha * trace.gradient
        values = (trace.values[:, :k] + trace.values[:, k:]) / 2  # pair means
        p = trace.directions
        weights = values - values.mean(-1, keepdim=True)
        hessian = (weights[..., None, None] * p[..., :, None] * p[..., None, :]).sum(1)
        hessian = hessian / (k * sigma**2)
        query_grad = matvec(tasks["B"], adapted - tasks["d"])
        residuals.append(estimate - matvec(eye - alpha * hessian, query_grad).mean(0))
        # mean-centring makes E[H] = (1 - 1/K) A exactly for a quadratic
        hessian_errors.append((hessian - (1 - 1 / k) * tasks["A"]).flatten())
    ok, z = within(torch.stack(residuals), torch.zeros(DIM, dtype=F64))
    assert ok, z
    ok, z = within(torch.stack(hessian_errors), torch.zeros(NUM_TASKS * DIM * DIM, dtype=F64))
    assert ok, z


@pytest.mark.parametrize("correction", [False, True])
def test_first_order_against_the_analytic_corrected_gradient(correction: bool) -> None:
    """Loose end to end: with the correction the estimate averages to
    mean_i (I - alpha A_i) grad f_i(theta'_i) up to 4 SE plus 10% of the correction term (the
    ES Hessian is biased by O(1/K) and correlated with theta'); without it, to the plain
    first-order gradient, which is then far from the corrected target."""
    family, tasks, theta = setup()
    k, alpha = 50, 0.3
    learner, adaptation = first_order(family, theta, k=k, alpha=alpha, correction=correction)
    eye = torch.eye(DIM, dtype=F64)
    estimates, corrected, plain = [], [], []
    for seed in range(200):
        estimate, _ = learner.meta_gradient(tasks, seed)
        query_grad = matvec(
            tasks["B"], adapted_points(family, adaptation, tasks, theta, seed) - tasks["d"]
        )
        estimates.append(estimate)
        corrected.append(matvec(eye - alpha * tasks["A"], query_grad).mean(0))
        plain.append(query_grad.mean(0))
    estimates_t, corrected_t, plain_t = map(torch.stack, (estimates, corrected, plain))
    residual = estimates_t - corrected_t
    se = residual.std(0) / math.sqrt(residual.shape[0])
    slack = 0.1 * (corrected_t - plain_t).mean(0).abs()
    close = bool(((residual.mean(0)).abs() <= K_SE * se + slack).all())
    assert close == correction, (residual.mean(0), se, slack)


def test_first_order_rejects_other_adaptations() -> None:
    family, _, theta = setup()
    for adaptation in (
        GradientDescentAdaptation(0.1),
        HillClimbingAdaptation(),
        IdentityAdaptation(),
    ):
        with pytest.raises(TypeError, match="ESGradientAdaptation"):
            FirstOrderESMAML(family, adaptation, init_params=theta)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_steps"):
        FirstOrderESMAML(
            family, ESGradientAdaptation(num_steps=2), hessian_correction=True, init_params=theta
        )


def test_first_order_step_writes_the_gradient_and_metrics() -> None:
    family, tasks, theta = setup()
    adaptation = ESGradientAdaptation(4, 0.1, 0.1, method="antithetic", shaping="none")
    learner = FirstOrderESMAML(
        family,
        adaptation,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        generator=torch.Generator().manual_seed(0),
        init_params=theta,
        tasks_per_iteration=NUM_TASKS,
    )
    metrics = learner.step(tasks)
    assert learner.theta.grad is not None
    torch.testing.assert_close(learner.parameters_flat(), theta - 0.1 * learner.theta.grad)
    assert metrics["grad_norm"] == pytest.approx(float(learner.theta.grad.norm()))
    assert all(math.isfinite(v) for v in metrics.values())


def test_first_order_nan_query_raises_and_keeps_theta() -> None:
    family, tasks, theta = setup(query_hook=nan_on_task_zero)
    learner, _ = first_order(family, theta, k=4, alpha=0.1, correction=False)
    with pytest.raises(FloatingPointError):
        learner.step(tasks)
    assert torch.equal(learner.parameters_flat(), theta)


# --------------------------------------------------------------------------------------------
# evaluate_adaptation


def test_evaluate_adaptation_pre_post_and_queries() -> None:
    family, tasks, theta = setup()
    identity = evaluate_adaptation(family, IdentityAdaptation(), theta, tasks, seed=0)
    torch.testing.assert_close(identity.pre, identity.post)
    assert identity.queries == 0
    ids = torch.arange(NUM_TASKS)
    torch.testing.assert_close(
        identity.pre, family.loss(theta.expand(NUM_TASKS, DIM), tasks, ids, phase="query")
    )
    gd = evaluate_adaptation(
        family, GradientDescentAdaptation(0.2), theta, tasks, seed=0, num_steps=2
    )
    adapted = theta.expand(NUM_TASKS, DIM)
    for _ in range(2):
        adapted = adapted - 0.2 * matvec(tasks["A"], adapted - tasks["c"])
    torch.testing.assert_close(gd.post, family.loss(adapted, tasks, ids, phase="query"))
    assert gd.queries == NUM_TASKS * 2
    summary = gd.summary("eval")
    assert summary["eval_pre_adaptation"] == pytest.approx(float(gd.pre.mean()))
    assert summary["eval_post_adaptation"] == pytest.approx(float(gd.post.mean()))


def test_default_generator_follows_torch_manual_seed() -> None:
    """Without a generator, the learners seed theirs from torch's global RNG: a seed sweep
    with torch.manual_seed gives different runs, and a repeated seed the same run."""
    family, tasks, theta = setup()

    def one_step(seed: int, cls: type) -> Tensor:
        torch.manual_seed(seed)
        adaptation = ESGradientAdaptation(3, 0.1, 0.1, method="antithetic", shaping="none")
        learner = cls(
            family,
            adaptation,
            num_perturbations=4,
            init_params=theta,
            tasks_per_iteration=NUM_TASKS,
        )
        learner.step(tasks)
        return learner.parameters_flat()

    for cls in (ESMAML, FirstOrderESMAML):
        assert torch.equal(one_step(1, cls), one_step(1, cls))
        assert not torch.equal(one_step(1, cls), one_step(2, cls))


def test_load_optimizer_state_keeps_the_configured_hyperparameters() -> None:
    """Moments and step counts come from the state; lr and betas stay the optimizer's own."""
    torch.manual_seed(0)
    param = nn.Parameter(torch.randn(4))
    trained = torch.optim.Adam([param], lr=0.1, betas=(0.8, 0.9))
    for _ in range(3):
        trained.zero_grad()
        param.square().sum().backward()
        trained.step()
    fresh = torch.optim.Adam([param], lr=0.01)
    load_optimizer_state(fresh, trained.state_dict())
    assert fresh.param_groups[0]["lr"] == 0.01 and fresh.param_groups[0]["betas"] == (0.9, 0.999)
    for key, value in trained.state[param].items():
        torch.testing.assert_close(fresh.state[param][key], value, rtol=0, atol=0)


def test_es_maml_ask_evaluate_tell_is_step() -> None:
    """The explicit ask / evaluate / tell loop is exactly ``step``: the population comes from
    its seed (the evaluators' own function), and tell applies the estimate once."""
    from esmaml.adaptation import ESGradientAdaptation
    from esmaml.evaluators import regenerate_population
    from esmaml.meta import ESMAML
    from esmaml.tasks.sine import SineRegression

    family = SineRegression(shots=5, query_shots=5, hidden=(8,))
    tasks = family.sample_tasks(4, generator=torch.Generator().manual_seed(0))

    def learner() -> ESMAML:
        return ESMAML(
            family,
            ESGradientAdaptation(num_queries=4, sigma=0.05, step_size=0.01),
            num_perturbations=4,
            sigma=0.05,
            generator=torch.Generator().manual_seed(3),
        )

    stepped, manual = learner(), learner()
    stepped.step(tasks)
    population = manual.ask()
    assert torch.equal(
        population.members,
        regenerate_population(manual.theta.detach(), population.seed, manual.spec),
    )
    fitness = manual.evaluate(population, tasks)
    assert fitness.values.shape == (8,) and fitness.pivots is None  # antithetic: no pivots
    metrics = manual.tell(population, fitness)
    assert torch.equal(manual.parameters_flat(), stepped.parameters_flat())
    assert metrics["queries"] == 8 * (4 + 1)
