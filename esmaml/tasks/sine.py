"""Few-shot sine regression (Finn et al. 2017), the standard supervised MAML benchmark.

A task is ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]``, ``x ~ U[-5, 5]``;
each task carries a K-shot support set (what adaptation may fit) and a query set (what the
adapted model is judged on). The model is a batched :class:`~esmaml.models.FunctionalMLP` on
flat parameters, so a ``[population, queries]`` grid of models is one ``loss`` call.

:class:`NonDifferentiableSine` is the same problem with quantised weights: its gradient is zero
almost everywhere, so gradient-based MAML cannot adapt or meta-learn while ES-MAML can.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from esmaml.models import FunctionalMLP, check_hidden
from esmaml.tasks.base import PHASES, SPLITS, Phase, Split, TaskFamily, Tasks, check_task_ids

#: Activations whose derivative is zero almost everywhere (see ``esmaml.models.ACTIVATIONS``).
NON_DIFFERENTIABLE_ACTIVATIONS: frozenset[str] = frozenset({"step", "sign"})

#: The task fields a :class:`SineRegression` task dict holds.
SINE_FIELDS: tuple[str, ...] = (
    "amplitude",
    "phase",
    "x_support",
    "y_support",
    "x_query",
    "y_query",
)


def _check_range(name: str, bounds: Sequence[float]) -> tuple[float, float]:
    low, high = (float(b) for b in bounds)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"{name} must be finite (low, high), got {tuple(bounds)}")
    if not low <= high:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {tuple(bounds)}")
    return low, high


def _check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def check_params(params: Tensor, num_params: int, where: str) -> Tensor:
    """``params`` must be a floating tensor ``[*B, D]`` with ``D == num_params``."""
    if not isinstance(params, Tensor):
        raise TypeError(f"{where}: params must be a tensor [*B, D], got {type(params).__name__}")
    if not params.is_floating_point():
        raise TypeError(f"{where}: params must be a floating tensor, got dtype {params.dtype}")
    if params.ndim == 0 or params.shape[-1] != num_params:
        raise ValueError(
            f"{where}: params must have last dim num_params={num_params}, "
            f"got shape {tuple(params.shape)}"
        )
    return params


def check_phase(phase: str) -> Phase:
    if phase not in PHASES:
        raise ValueError(f"phase={phase!r} is unknown; valid: {', '.join(PHASES)}")
    return phase  # type: ignore[return-value]


def check_split(split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is unknown; valid: {', '.join(SPLITS)}")
    return split  # type: ignore[return-value]


def check_task_range(task_ids: Tensor, num_tasks: int, where: str) -> None:
    """Every id in ``[0, num_tasks)``: negative ids would silently wrap around when indexing."""
    if task_ids.numel() == 0:
        return
    try:
        low, high = int(task_ids.min()), int(task_ids.max())
    except RuntimeError:
        # Inside torch.func.vmap over the ids their values cannot be read; indexing still
        # rejects ids >= num_tasks there (only negative ids would go unchecked).
        return
    if low < 0 or high >= num_tasks:
        raise IndexError(
            f"{where}: task_ids must lie in [0, {num_tasks}) (the number of tasks), "
            f"got values in [{low}, {high}]"
        )


def gather_tasks(tasks: Tasks, key: str, task_ids: Tensor, where: str) -> Tensor:
    """``tasks[key][task_ids]``: ``[n, ...] -> [*task_ids.shape, ...]`` with range checks."""
    if key not in tasks:
        raise KeyError(f"{where}: tasks lack the field {key!r}; present: {sorted(tasks)}")
    value = tasks[key]
    check_task_range(task_ids, value.shape[0], where)
    return value[task_ids.to(value.device)]


class SineRegression(TaskFamily):
    """Sine regression tasks with an MLP regressor on flat parameters.

    Tasks (``n`` of them): ``amplitude [n]``, ``phase [n]``, ``x_support [n, K, 1]``,
    ``y_support [n, K, 1]``, ``x_query [n, Q, 1]``, ``y_query [n, Q, 1]``, with
    ``y = amplitude * sin(x - phase)``.

    Loss: ``mean_k (f_params(x_k) - y_k)^2`` over the support set (``phase='adapt'``) or the query
    set (``phase='query'``). The zero predictor scores ``E[A^2]/2 = (0.1^2 + 0.1*5 + 5^2)/6 ≈ 4.3``.

    Args:
        shots: K, support examples per task.
        query_shots: Q, query examples per task.
        hidden: hidden widths of the MLP ``[1, *hidden, 1]``.
        activation: hidden activation (``relu``, ``tanh``, or non-differentiable ``step``/``sign``).
        quantize: round weights to multiples of this in the forward pass (0 = off).
        amplitude_range, phase_range, x_range: the uniform task and input distributions.
        device: where tasks are generated and losses computed.
    """

    def __init__(
        self,
        shots: int = 10,
        query_shots: int = 10,
        *,
        hidden: Sequence[int] = (40, 40),
        activation: str = "relu",
        quantize: float = 0.0,
        amplitude_range: tuple[float, float] = (0.1, 5.0),
        phase_range: tuple[float, float] = (0.0, math.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
        device: torch.device | str | None = None,
    ):
        self.shots = _check_positive_int("shots", shots)
        self.query_shots = _check_positive_int("query_shots", query_shots)
        self.amplitude_range = _check_range("amplitude_range", amplitude_range)
        self.phase_range = _check_range("phase_range", phase_range)
        self.x_range = _check_range("x_range", x_range)
        self.model = FunctionalMLP(
            [1, *check_hidden(hidden), 1],
            activation=activation,
            output_activation="identity",
            quantize=quantize,
        )
        self.num_params = self.model.num_params
        # Zero-order methods work either way; gradient MAML needs a non-zero gradient.
        self.differentiable = activation not in NON_DIFFERENTIABLE_ACTIVATIONS and quantize == 0
        self.stochastic = False
        self._device = torch.device(device) if device is not None else torch.device("cpu")

    # -- device ------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> SineRegression:
        """Generate future tasks and initial parameters on ``device`` (in place; returns self)."""
        self._device = torch.device(device)
        return self

    # -- protocol ----------------------------------------------------------------------------
    def as_module(self, params: Tensor) -> torch.nn.Module:
        return self.model.to_module(params)

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """nn.Linear's default init, flattened: ``[D]`` on the family's device."""
        return self.model.init_params(generator).to(self._device)

    def sample_tasks(
        self, n: int, *, split: Split = "train", generator: torch.Generator | None = None
    ) -> Tasks:
        """``n`` tasks. Train and test draw from one distribution (pools keep them disjoint).

        Values are drawn on the generator's device (the family's device when it is None), then
        moved, so a CPU generator gives the same tasks whatever the family's device.
        """
        _check_positive_int("number of tasks", n)
        check_split(split)
        where = generator.device if generator is not None else self._device

        def uniform(shape: tuple[int, ...], bounds: tuple[float, float]) -> Tensor:
            low, high = bounds
            return torch.rand(shape, generator=generator, device=where) * (high - low) + low

        amplitude = uniform((n,), self.amplitude_range)
        phase = uniform((n,), self.phase_range)
        x_support = uniform((n, self.shots, 1), self.x_range)
        x_query = uniform((n, self.query_shots, 1), self.x_range)
        tasks = {
            "amplitude": amplitude,
            "phase": phase,
            "x_support": x_support,
            "y_support": self.target(x_support, amplitude, phase),
            "x_query": x_query,
            "y_query": self.target(x_query, amplitude, phase),
        }
        return {key: value.to(self._device) for key, value in tasks.items()}

    @staticmethod
    def target(x: Tensor, amplitude: Tensor, phase: Tensor) -> Tensor:
        """``y = A sin(x - phase)`` for ``x [n, k, 1]`` and per-task ``A, phase [n]``."""
        return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])

    def loss(
        self,
        params: Tensor,
        tasks: Tasks,
        task_ids: Tensor,
        *,
        phase: Phase = "query",
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """MSE ``[*B]`` of ``params [*B, D]`` on the support/query set of tasks ``task_ids``.

        ``task_ids`` broadcasts against the batch dims of ``params`` (e.g. params
        ``[P, K, D]`` with ids ``[P, 1]``); the result has the broadcast shape. ``generator`` is
        unused: the loss is deterministic.
        """
        where = f"{type(self).__name__}.loss"
        check_params(params, self.num_params, where)
        check_task_ids(task_ids, tasks, params.shape[:-1])
        split = "support" if check_phase(phase) == "adapt" else "query"
        x = gather_tasks(tasks, f"x_{split}", task_ids, where)  # [*T, k, 1]
        y = gather_tasks(tasks, f"y_{split}", task_ids, where)
        if x.device != params.device:
            raise ValueError(
                f"{where}: params are on {params.device} but tasks on {x.device}; "
                "move one (family.to(device) generates tasks on device)"
            )
        # Cast the data, not the params, so float64 params (gradient checks) stay float64.
        pred = self.model.apply(params, x.to(params.dtype))  # [*B, k, 1]
        return (pred - y.to(params.dtype)).square().mean(dim=(-2, -1))


class NonDifferentiableSine(SineRegression):
    """Sine regression with weights quantised to multiples of ``quantize`` (default 0.05).

    The forward pass uses ``round(w / q) * q`` for every weight and bias, so the loss is
    piecewise constant in the parameters: its gradient is zero almost everywhere (exactly zero
    under autograd, whose derivative of ``round`` is 0) although the loss changes when a weight
    crosses a rounding boundary. MAML's inner step ``theta - alpha * grad`` is then the identity
    and its meta-gradient vanishes; ES-MAML smooths the loss with Gaussian perturbations
    (``E_g f(theta + sigma g)`` is differentiable) and still makes progress.

    Quantisation was chosen over a ``step`` activation because the latter still has a non-zero
    gradient in the output layer (the loss is linear in it); use
    ``SineRegression(activation='step')`` for that partially non-differentiable variant.
    """

    def __init__(self, shots: int = 10, query_shots: int = 10, *, quantize: float = 0.05, **kwargs):
        if not quantize > 0:
            raise ValueError(f"NonDifferentiableSine needs quantize > 0, got {quantize}")
        super().__init__(shots, query_shots, quantize=quantize, **kwargs)
