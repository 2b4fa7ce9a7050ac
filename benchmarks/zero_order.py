"""Zero-order gradient speed: esmaml vs TorchOpt 0.7.3 vs a hand-written batched floor.

    .venv/bin/python benchmarks/zero_order.py [--rounds 7] [--threads N] [--quick]

Cases (antithetic, sigma 0.01, batch 64, MSE loss):
  seed: nn.Linear(32, 1), num_samples=100 (the TorchOpt tutorial's example);
  mlp:  Linear(32, 256) -> ReLU -> Linear(256, 1), num_samples=500.

Per case and library, one "gradient" is the decorated forward plus ``torch.autograd.grad``.
TorchOpt runs its own decorator on a ``torch.func.functional_call`` model (functorch's
``make_functional`` is gone); esmaml runs with its default options (only method, num_samples and
sigma set), and again with only ``compile=True`` added (its first, compiling call is timed
and reported apart). The floor is a hand-written forward of the same 2N perturbed models with
``torch.baddbmm`` on stacked [2N, ...] weights and a per-model loss: the evaluation work alone,
without noise generation or the weighted sum, in the fastest of a few chunkings (models per
baddbmm) on the machine. "vmap-only" is torch.func.vmap of the same loss over a prepared
population, chunked like esmaml's default: the generic batching that esmaml's default mode
builds on, without its noise, f(theta) or estimator. Implementations are interleaved within
each round and the median of the rounds' per-call means is reported, so load from other
processes on a shared machine hits all columns alike; the load average is printed before and
after.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import esmaml
from esmaml.zero_order.evaluation import auto_chunk_size

TARGET_SPEEDUP = 30.0  # esmaml at least this many times faster than TorchOpt
TARGET_FLOOR_RATIO = 2.0  # esmaml at most this many times the hand-written floor


@dataclass
class Case:
    """One benchmark problem: a model, its data and the estimator's settings."""

    name: str
    model: nn.Module
    x: Tensor
    y: Tensor
    num_samples: int
    sigma: float = 0.01
    method: str = "antithetic"

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()]

    def params(self) -> tuple[Tensor, ...]:
        return tuple(p.detach().clone().requires_grad_() for p in self.model.parameters())

    def fmodel(self, params: tuple[Tensor, ...], x: Tensor) -> Tensor:
        return torch.func.functional_call(self.model, dict(zip(self.names, params)), (x,))

    def loss(self, params: tuple[Tensor, ...], x: Tensor, y: Tensor) -> Tensor:
        return F.mse_loss(self.fmodel(params, x), y)


def make_cases() -> list[Case]:
    torch.manual_seed(0)
    x = torch.randn(64, 32) * 0.1
    y = torch.randn(64, 1) * 0.1
    mlp = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 1))
    return [
        Case("seed: Linear(32,1), N=100", nn.Linear(32, 1), x, y, num_samples=100),
        Case("mlp: 32-256-1 ReLU, N=500", mlp, x, y, num_samples=500),
    ]


def torchopt_gradient(case: Case, method: str | None = None) -> Callable[[], tuple[Tensor, ...]]:
    """TorchOpt's decorator on the functional model; returns a one-gradient closure."""
    import torchopt

    distribution = torch.distributions.Normal(loc=0.0, scale=1.0)
    decorated = torchopt.diff.zero_order.zero_order(
        distribution,
        method=method or case.method,
        argnums=0,
        num_samples=case.num_samples,
        sigma=case.sigma,
    )(case.loss)
    params = case.params()
    return lambda: torch.autograd.grad(decorated(params, case.x, case.y), params)


def esmaml_gradient(
    case: Case, method: str | None = None, compile: bool = False
) -> Callable[[], tuple[Tensor, ...]]:
    """esmaml's decorator with default options (or only ``compile=True`` added); returns a
    one-gradient closure."""
    decorated = esmaml.zero_order(
        method=method or case.method,
        num_samples=case.num_samples,
        sigma=case.sigma,
        compile=compile,
    )(case.loss)
    params = case.params()
    return lambda: torch.autograd.grad(decorated(params, case.x, case.y), params)


def batched_loss(params: tuple[Tensor, ...], x: Tensor, y: Tensor) -> Tensor:
    """The MLP's loss for a population: ``params`` are (weight, bias, ...) with a leading dim M
    (``[M, out, in]``, ``[M, out]``), written with baddbmm like the floor; returns ``[M]``."""
    pairs = list(zip(params[0::2], params[1::2]))
    h = x.expand(params[0].shape[0], *x.shape)
    for i, (weight, bias) in enumerate(pairs):
        h = torch.baddbmm(bias.unsqueeze(1), h, weight.transpose(1, 2))
        if i < len(pairs) - 1:
            h = torch.relu(h)
    return (h - y).square().mean(dim=(1, 2))


def esmaml_population_gradient(case: Case) -> Callable[[], tuple[Tensor, ...]]:
    """esmaml with ``batch='population'`` on the hand-batched loss: the floor's evaluation plus
    esmaml's own work (noise, f(theta), estimator, autograd), without vmap."""
    decorated = esmaml.zero_order(
        method=case.method, num_samples=case.num_samples, sigma=case.sigma, batch="population"
    )(batched_loss)
    params = case.params()
    return lambda: torch.autograd.grad(decorated(params, case.x, case.y), params)


def floor_forward(case: Case, chunk: int | None = None) -> Callable[[], Tensor]:
    """The 2N perturbed forwards by hand: baddbmm over stacked weights, one loss per model,
    ``chunk`` models per baddbmm (None: all at once)."""
    linears = [m for m in case.model.modules() if isinstance(m, nn.Linear)]
    population = 2 * case.num_samples
    stacked = []
    for layer in linears:
        with torch.no_grad():
            noise_w = torch.randn(case.num_samples, *layer.weight.shape)
            noise_b = torch.randn(case.num_samples, *layer.bias.shape)
            weight = layer.weight + case.sigma * torch.cat([noise_w, -noise_w])
            bias = layer.bias + case.sigma * torch.cat([noise_b, -noise_b])
        # [2N, in, out] and [2N, 1, out], laid out for baddbmm(bias, h, weight).
        stacked.append((weight.transpose(1, 2).contiguous(), bias.unsqueeze(1).contiguous()))
    size = min(chunk or population, population)
    x = case.x.expand(size, *case.x.shape)
    y = case.y

    @torch.no_grad()
    def forward() -> Tensor:
        losses = []
        for start in range(0, population, size):
            stop = min(start + size, population)
            h = x[: stop - start]
            for i, (weight, bias) in enumerate(stacked):
                h = torch.baddbmm(bias[start:stop], h, weight[start:stop])
                if i < len(stacked) - 1:
                    h = torch.relu(h)
            losses.append((h - y).square().mean(dim=(1, 2)))
        return losses[0] if len(losses) == 1 else torch.cat(losses)  # [2N] losses

    return forward


FLOOR_CHUNKS = (None, 50, 100, 200, 500)


def best_floor(case: Case, clock: Callable[[], float]) -> tuple[Callable[[], Tensor], str]:
    """The fastest of the floor's chunkings on this machine (a floor must not be slowed by a
    poor batch size: on a CPU one huge baddbmm loses to cache-sized chunks)."""
    population = 2 * case.num_samples
    variants = {
        "all" if chunk is None else str(chunk): floor_forward(case, chunk)
        for chunk in FLOOR_CHUNKS
        if chunk is None or chunk < population
    }
    seconds = time_interleaved(variants, rounds=3, min_round_s=0.1, clock=clock)
    best = min(seconds, key=seconds.__getitem__)
    return variants[best], best


def vmap_forward(case: Case) -> Callable[[], Tensor]:
    """The generic batched evaluation alone: torch.func.vmap of the same loss over the 2N
    perturbed parameter sets, chunked as esmaml's default chunks them (what its default batch
    mode runs, minus noise, f(theta), the estimate and autograd)."""
    params = [p.detach() for p in case.params()]
    population = []
    for p in params:
        noise = torch.randn(case.num_samples, *p.shape)
        population.append(p + case.sigma * torch.cat([noise, -noise]))
    batched = torch.func.vmap(
        lambda *leaves: case.loss(leaves, case.x, case.y), chunk_size=auto_chunk_size(population)
    )

    @torch.no_grad()
    def forward() -> Tensor:
        return batched(*population)

    return forward


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    min_round_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median over ``rounds`` of the mean seconds per call, the implementations interleaved."""
    reps = {}
    for name, fn in fns.items():
        start = clock()
        fn()  # warm-up: lazy init, allocator
        once = clock() - start
        if once < 0.5:
            for _ in range(3):
                fn()
            start = clock()
            fn()
            once = clock() - start
        reps[name] = max(1, math.ceil(min_round_s / max(once, 1e-6)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = clock()
            for _ in range(reps[name]):
                fn()
            samples[name].append((clock() - start) / reps[name])
    return {name: statistics.median(values) for name, values in samples.items()}


def exact_gradient(case: Case) -> Tensor:
    params = case.params()
    return flat(torch.autograd.grad(case.loss(params, case.x, case.y), params))


def flat(tensors: tuple[Tensor, ...]) -> Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def cosine_table(case: Case) -> list[str]:
    """First-gradient cosine and norm ratio with the exact gradient, both libraries."""
    exact = exact_gradient(case)
    rows = [
        "| method | library | cosine with exact | norm / exact norm |",
        "| --- | --- | ---: | ---: |",
    ]
    for method in ("antithetic", "forward"):
        for library, make in (("torchopt", torchopt_gradient), ("esmaml", esmaml_gradient)):
            torch.manual_seed(1)
            grad = flat(make(case, method)())
            cos = float(F.cosine_similarity(grad, exact, dim=0))
            ratio = float(grad.norm() / exact.norm())
            rows.append(f"| {method} | {library} | {cos:.3f} | {ratio:.4f} |")
    return rows


def load_average() -> str:
    """The 1-minute load average: other processes on a shared machine skew every column."""
    try:
        return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    except OSError:  # pragma: no cover - not on every platform
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (median reported)")
    parser.add_argument("--min-round-s", type=float, default=0.25, help="seconds per round")
    parser.add_argument("--quick", action="store_true", help="3 short rounds (smoke test)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="wall: perf_counter; cpu: process CPU time (robust to other processes' load, but "
        "counts every thread: use it with --threads 1)",
    )
    args = parser.parse_args()
    rounds, min_round_s = (3, 0.05) if args.quick else (args.rounds, args.min_round_s)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"esmaml {esmaml.__version__}, load average {load_average()}"
    )
    try:
        import torchopt

        print(f"torchopt {torchopt.__version__}")
        have_torchopt = True
    except ImportError as error:  # pragma: no cover - dev dependency
        print(f"torchopt unavailable ({error}); its column is left empty")
        have_torchopt = False

    rows = [
        "| case | torchopt ms | esmaml ms | esmaml compile=True ms | floor ms | vmap-only ms "
        "| esmaml population ms | speedup vs torchopt (compile=True) "
        "| esmaml / floor (compile=True) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    compile_seconds: dict[str, float] = {}
    verdicts = []
    floor_chunks: dict[str, str] = {}
    cases = make_cases()
    for case in cases:
        floor, floor_chunk = best_floor(case, clock)
        floor_chunks[case.name] = floor_chunk
        compiled = esmaml_gradient(case, compile=True)
        start = time.perf_counter()
        compiled()  # the first call compiles: timed apart, then excluded like every warm-up
        compile_seconds[case.name] = time.perf_counter() - start
        fns: dict[str, Callable[[], object]] = {
            "esmaml": esmaml_gradient(case),
            "compiled": compiled,
            "floor": floor,
            "vmap": vmap_forward(case),
            "population": esmaml_population_gradient(case),
        }
        if have_torchopt:
            fns["torchopt"] = torchopt_gradient(case)
        seconds = time_interleaved(fns, rounds, min_round_s, clock)
        ms = {name: 1e3 * value for name, value in seconds.items()}
        speedup = {
            name: ms["torchopt"] / ms[name] if have_torchopt else math.nan
            for name in ("esmaml", "compiled")
        }
        ratio = {name: ms[name] / ms["floor"] for name in ("esmaml", "compiled")}
        torchopt_ms = f"{ms['torchopt']:.3f}" if have_torchopt else "-"
        rows.append(
            f"| {case.name} | {torchopt_ms} | {ms['esmaml']:.3f} | {ms['compiled']:.3f} | "
            f"{ms['floor']:.3f} | {ms['vmap']:.3f} | {ms['population']:.3f} | "
            f"{speedup['esmaml']:.1f}x ({speedup['compiled']:.1f}x) | "
            f"{ratio['esmaml']:.2f}x ({ratio['compiled']:.2f}x) |"
        )
        for name, label in (("esmaml", "default options"), ("compiled", "compile=True")):
            # The speed-up target is the seed case's (TorchOpt's own tutorial); the floor
            # target holds for every case.
            speed = (
                f"speedup {speedup[name]:.1f}x "
                f"({'meets' if speedup[name] >= TARGET_SPEEDUP else 'MISSES'} "
                f">= {TARGET_SPEEDUP:g}x), "
                if case is cases[0]
                else f"speedup {speedup[name]:.1f}x (no target), "
            )
            verdicts.append(
                f"{case.name}, {label}: {speed}esmaml/floor {ratio[name]:.2f}x "
                f"({'meets' if ratio[name] <= TARGET_FLOOR_RATIO else 'MISSES'} "
                f"<= {TARGET_FLOOR_RATIO:g}x)"
            )
    print()
    print("\n".join(rows))
    print()
    print(
        f"targets: >= {TARGET_SPEEDUP:g}x vs torchopt on the seed case, <= "
        f"{TARGET_FLOOR_RATIO:g}x the floor"
    )
    print("(floor: hand-written baddbmm forwards of the 2N perturbed models, in the fastest of")
    print(
        f" the chunkings {[c or 'all' for c in FLOOR_CHUNKS]} models per call: "
        + ", ".join(f"{name}: {chunk}" for name, chunk in floor_chunks.items())
        + ";"
    )
    print(" vmap-only: torch.func.vmap of the same loss over the prepared population, chunked as")
    print(" esmaml's default chunks it, without noise, f(theta), estimator or autograd;")
    print(" esmaml population: batch='population' on a hand-batched baddbmm loss (one call), i.e.")
    print(" a floor-like evaluation plus esmaml's own noise, f(theta), estimator and autograd)")
    print(" esmaml compile=True: the same call with only compile=True added; its first call")
    print(
        " compiles, in "
        + ", ".join(f"{name}: {value:.1f} s" for name, value in compile_seconds.items())
        + " (excluded from its per-gradient time, as every implementation's warm-up is))"
    )
    print(f"timer: {args.clock} clock")
    print("\n".join(verdicts))
    print(f"load average after: {load_average()}")
    if have_torchopt:
        print()
        print(f"first gradient vs exact, {cases[0].name}, sigma {cases[0].sigma}:")
        print("\n".join(cosine_table(cases[0])))


if __name__ == "__main__":
    main()
