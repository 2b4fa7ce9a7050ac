"""Render results/paper.md and its figures from results/data/paper/ alone (deterministic).

Imported by scripts/paper_results.py, which also trains the runs. Every number is computed here
from the data files; the verdicts follow fixed rules stated in the text (a 95% interval that
excludes zero), and results/paper_notes.md (hand-written context, no numbers of its own) is
appended verbatim.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import rl_results
from paper_figures import LABEL, curves, low_k_figure
from results_runs import ENV
from rl_results import gains

from esmaml.sweep import Interval, seed_interval

Records = dict[str, list[dict[str, Any]]]
ENV_LINE = " ".join(f"{key}={value}" for key, value in ENV.items())
SCRIPT = ".venv/bin/python scripts/paper_results.py"


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------


def last(records: list[dict[str, Any]], key: str = "post") -> list[float]:
    return [r["evals"][key][-1] for r in records]


def first(records: list[dict[str, Any]], key: str = "post") -> list[float]:
    return [r["evals"][key][0] for r in records]


def welch(a: list[float], b: list[float]) -> Interval:
    """mean(a) - mean(b) and its 95% Welch interval (unequal variances, Welch-Satterthwaite
    degrees of freedom): independent seeds, not paired."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return Interval(sum(a) / len(a) - sum(b) / len(b), math.nan, math.nan, 0)
    result = stats.ttest_ind(a, b, equal_var=False)
    low, high = result.confidence_interval(0.95)
    diff = sum(a) / len(a) - sum(b) / len(b)
    return Interval(diff, float(low), float(high), len(a) + len(b))


def ci(interval: Interval, digits: int = 1, sign: bool = True) -> str:
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    if math.isnan(interval.low):
        return f.format(interval.mean)
    return f"{f.format(interval.mean)} [{f.format(interval.low)}, {f.format(interval.high)}]"


def direction(interval: Interval) -> int:
    """+1 / -1 when the 95% interval lies above / below zero, else 0."""
    if interval.low > 0:
        return 1
    if interval.high < 0:
        return -1
    return 0


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------

RL_HEADER = (
    "| experiment | method | seeds | iterations | env steps / run | wall / run | CPU / run | "
    "post return, it 0 | post return, last | gain (last - it 0) | learns? |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
)


def rl_row(name: str, method: str, records: list[dict[str, Any]]) -> str:
    iterations = records[0]["config"]["iterations"]
    steps = sum(r["evals"]["env_steps"][-1] for r in records) / len(records)
    wall = sum(r["provenance"]["process_s"] for r in records) / len(records)
    cpu = sum(r["provenance"]["cpu_s"] for r in records) / len(records)
    gain = seed_interval(gains(records))
    learns = {1: "yes", -1: "**worse**", 0: "not shown"}[direction(gain)]
    return (
        f"| {name} | {method} | {len(records)} | {iterations} | {steps / 1e6:.1f}M | "
        f"{wall:.0f} s | {cpu:.0f} s | {ci(seed_interval(first(records)), sign=False)} | "
        f"{ci(seed_interval(last(records)), sign=False)} | {ci(gain)} | {learns} |"
    )


def caption(records: list[dict[str, Any]], what: str) -> str:
    return rl_results.caption(records, what, SCRIPT, "results/data/paper")


def difference_rows(pairs: list[tuple[str, str, str]], data: Records) -> list[str]:
    """Welch intervals of final post-adaptation return differences (A - B)."""
    lines = [
        "| comparison | A - B, last post return | A - B, gain | reading |",
        "|---|---:|---:|---|",
    ]
    for label, a, b in pairs:
        if a not in data or b not in data:
            continue
        final = welch(last(data[a]), last(data[b]))
        gain = welch(gains(data[a]), gains(data[b]))
        reading = {1: "A better", -1: "B better", 0: "no difference shown"}[direction(final)]
        lines.append(f"| {label} | {ci(final)} | {ci(gain)} | {reading} |")
    return lines


# ---------------------------------------------------------------------------------------------
# sine
# ---------------------------------------------------------------------------------------------

SINE_LABEL = {
    "sine_maml": "MAML (torch.func, exact second order)",
    "sine_es_gd": "ES-MAML, gradient-descent adaptation",
    "sine_es_grad": "ES-MAML, ES-gradient adaptation",
    "sine_es_hc": "ES-MAML, hill-climbing adaptation",
}


def at_or_before(record: dict[str, Any], key: str, bound: float) -> tuple[float, float, int]:
    """The last held-out evaluation with ``key <= bound``: (post MSE, time_s, updates)."""
    evals = record["evals"]
    index = max(i for i, value in enumerate(evals[key]) if value <= bound + 1e-9)
    return evals["post"][index], evals["time_s"][index], evals["updates"][index]


def sine_section(data: Records) -> tuple[list[str], dict[str, Any]]:
    """Tables for MAML vs ES-MAML on sine; also the facts the claims table needs."""
    names = [n for n in SINE_LABEL if n in data]
    if "sine_maml" not in names:
        return [], {}
    maml = {r["seed"]: r for r in data["sine_maml"]}
    lines = [
        "| method | seeds | iterations | training time s | post MSE, last | post MSE @ T "
        "(equal wall clock) | ratio to MAML @ T | post MSE, MAML @ same iteration | "
        "ES / MAML @ same iteration |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    facts: dict[str, Any] = {}
    for name in names:
        records = [r for r in data[name] if r["seed"] in maml]
        at_t, ratio_t, maml_same, ratio_same = [], [], [], []
        for r in records:
            reference = maml[r["seed"]]
            budget = reference["evals"]["time_s"][-1]
            post, _, _ = at_or_before(r, "time_s", budget)
            at_t.append(post)
            ratio_t.append(post / reference["evals"]["post"][-1])
            same, _, _ = at_or_before(reference, "updates", r["evals"]["updates"][-1])
            maml_same.append(same)
            ratio_same.append(r["evals"]["post"][-1] / same)
        iterations = records[0]["evals"]["updates"][-1]
        time_s = sum(r["evals"]["time_s"][-1] for r in records) / len(records)
        ratio = seed_interval(ratio_t)
        facts[name] = {"ratio_at_T": ratio, "post_at_T": seed_interval(at_t)}
        lines.append(
            f"| {SINE_LABEL[name]} | {len(records)} | {iterations} | {time_s:.0f} | "
            f"{ci(seed_interval(last(records)), 3, False)} | "
            f"{ci(seed_interval(at_t), 3, False)} | {ci(ratio, 2, False)} | "
            f"{ci(seed_interval(maml_same), 3, False)} | "
            f"{ci(seed_interval(ratio_same), 2, False)} |"
        )
    steps_lines = [
        "| method | MSE, 0 steps (pre) | after 1 step | after 5 steps | after 10 steps |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in names:
        cells = []
        for k in (0, 1, 5, 10):
            values = [
                next(p["post_adaptation"] for p in r["steps"]["curve"] if p["steps"] == k)
                for r in data[name]
            ]
            cells.append(ci(seed_interval(values), 3, False))
        steps_lines.append(f"| {SINE_LABEL[name]} | {' | '.join(cells)} |")
    # MAML's plateau: the held-out post MSE over the last quarter of its training.
    quarter = []
    for r in data["sine_maml"]:
        final_it = r["evals"]["updates"][-1]
        earlier, _, _ = at_or_before(r, "updates", 0.75 * final_it)
        quarter.append(r["evals"]["post"][-1] - earlier)
    facts["maml_last_quarter"] = seed_interval(quarter)
    return [*lines, "", "__STEPS__", *steps_lines], facts


# ---------------------------------------------------------------------------------------------
# the document
# ---------------------------------------------------------------------------------------------

NAV_K = [(f"nav_{m}_k{k}", m, k) for k in (20, 10, 5) for m in ("es", "hc", "pg")]
SPARSE = [
    (f"{task}_{m}_300it", m, title)
    for task, title in (("four_corners", "FourCorners"), ("six_circles", "SixCircles"))
    for m in ("hc", "es", "dpp", "pg")
]
ORDER = [
    ("nav_es_k20", "linear (shipped)"),
    ("nav_es_mlp", "MLP 32-32, tanh"),
    ("nav_es_gauss", "linear, Gaussian actions"),
]
FIRST_ORDER = [
    ("nav_es_k20", "zero-order ES-MAML (shipped nav2d_es)"),
    ("nav_fo", "first-order, z-scored inner step (as nav2d_es)"),
    ("nav_fo_unshaped", "first-order, unshaped inner step (alpha 0.005)"),
    ("nav_fo_unshaped_hessian", "first-order + Hessian correction, unshaped inner step"),
]
MUJOCO = [
    ("mujoco_fb_es", "ES-MAML, HalfCheetah forward-backward"),
    ("mujoco_gv_es", "ES-MAML, HalfCheetah goal-velocity"),
]


def table(rows: list[tuple[str, str]], data: Records, what: str) -> list[str]:
    present = [(n, m) for n, m in rows if n in data]
    if not present:
        return ["(not run yet)", ""]
    records = [r for n, _ in present for r in data[n]]
    return [RL_HEADER, *(rl_row(n, m, data[n]) for n, m in present), "", caption(records, what)]


def verdict_of(interval: Interval | None, claim_sign: int, competitive: bool = False) -> str:
    """``competitive`` claims (A at least as good as B) are contradicted only by an interval
    below zero; without one they are consistent, not shown to be equivalent."""
    if interval is None or math.isnan(interval.low):
        return "not run"
    found = direction(interval)
    if found == claim_sign:
        return "**supported** (A better)" if competitive else "**supported**"
    if found == -claim_sign:
        return "**contradicted**"
    if competitive:
        return "**consistent** (no difference shown)"
    return "**not supported** (no difference shown)"


def best_of(names: list[str], data: Records) -> str | None:
    present = [n for n in names if n in data]
    if not present:
        return None
    return max(present, key=lambda n: sum(last(data[n])) / len(data[n]))


def render(data: Records, out: Path, notes: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    intro = [
        "# ES-MAML's claims, tested side by side over seeds",
        "",
        "Every RL number is over training seeds 0-4, one run each. The measure is the held-out",
        "post-adaptation return (50 test-pool tasks, evaluation seeds a substream disjoint from",
        "training's) at the **last** evaluation, and the *gain*: that minus the same evaluation",
        "of the initial meta-parameters (iteration 0). Cells give the mean over seeds and, in",
        "brackets, its 95% Student-t interval (4 degrees of freedom). Comparisons between two",
        "methods give the difference of their means with a 95% Welch interval (independent",
        "seeds). A verdict is **supported** only when that interval excludes zero in the claimed",
        "direction. Budgets are this machine's (2 cores), not the paper's: the reference trains",
        "10,000 iterations on ~450 workers; here every method of a comparison runs the same",
        "number of meta-iterations with the same episodes per iteration (each config says how),",
        "and the tables give env steps and wall clock beside iterations. Wall clock is the",
        "whole `esmaml train` process on a shared 2-core machine that ran two or three runs at",
        "once; CPU seconds (one intra-op thread) are the steadier measure of cost.",
        "",
    ]
    lines: list[str] = []
    # 1. ES vs PG at equal episodes, K = 20.
    lines += ["## 1. ES-MAML vs PG-MAML at equal env steps (K = 20)", ""]
    rows = [(n, LABEL[m]) for n, m, k in NAV_K if k == 20]
    rows += [(n, f"{title}: {LABEL[m]}") for n, m, title in SPARSE]
    lines += table(rows, data, "Table 1. ES-MAML vs PG-MAML, K = 20, 300 iterations.")
    pairs = [
        ("Navigation2D: ES-gradient - PG", "nav_es_k20", "nav_pg_k20"),
        ("Navigation2D: hill climbing - PG", "nav_hc_k20", "nav_pg_k20"),
    ]
    for task, title in (("four_corners", "FourCorners"), ("six_circles", "SixCircles")):
        for m in ("hc", "es", "dpp"):
            pairs.append((f"{title}: {m.upper()} - PG", f"{task}_{m}_300it", f"{task}_pg_300it"))
    lines += ["", *difference_rows(pairs, data), ""]
    panels = [
        ("Navigation2D", [(f"nav_{m}_k20", LABEL[m]) for m in ("es", "hc", "pg")]),
        ("FourCorners", [(f"four_corners_{m}_300it", LABEL[m]) for m in LABEL]),
        ("SixCircles", [(f"six_circles_{m}_300it", LABEL[m]) for m in LABEL]),
    ]
    if curves(panels, data, out / "paper_es_vs_pg.png"):
        lines += ["![ES-MAML vs PG-MAML against env steps](paper_es_vs_pg.png)", ""]
    # 2. Low K.
    lines += ["## 2. Low query budgets: K = 5, 10, 20 on Navigation2D", ""]
    lines += table(
        [(n, f"K = {k}: {LABEL[m]}") for n, m, k in sorted(NAV_K, key=lambda x: (-x[2], x[1]))],
        data,
        "Table 2. K adaptation episodes per task; PG-MAML gets K + 4 query episodes so that "
        "both spend 300 (K + 2) episodes an iteration. 300 iterations.",
    )
    pairs = []
    for k in (5, 10, 20):
        pairs.append((f"K = {k}: ES-gradient - PG", f"nav_es_k{k}", f"nav_pg_k{k}"))
        pairs.append((f"K = {k}: hill climbing - PG", f"nav_hc_k{k}", f"nav_pg_k{k}"))
    lines += ["", *difference_rows(pairs, data), ""]
    if low_k_figure(data, out / "paper_low_k.png"):
        lines += ["![Gain against K](paper_low_k.png)", ""]
    # 3. Policies.
    lines += ["## 3. Policies: linear vs MLP, deterministic vs Gaussian", ""]
    lines += table(ORDER, data, "Table 3. ES-MAML (ES-gradient, K = 20) on Navigation2D.")
    pairs = [
        ("linear - MLP", "nav_es_k20", "nav_es_mlp"),
        ("deterministic - Gaussian", "nav_es_k20", "nav_es_gauss"),
    ]
    lines += ["", *difference_rows(pairs, data), ""]
    spread = [
        f"{label}: sd of the last post return across seeds {_sd(last(data[n])):.1f}"
        for n, label in ORDER
        if n in data
    ]
    if spread:
        lines += ["Stability (seed-to-seed spread): " + "; ".join(spread) + ".", ""]
    # 4. Zero vs first order.
    lines += ["## 4. Zero-order vs first-order ES-MAML, with and without the Hessian", ""]
    lines += table(
        FIRST_ORDER,
        data,
        "Table 4. Navigation2D, K = 20, 300 iterations; both spend 6,600 episodes an iteration.",
    )
    pairs = [
        ("zero-order - first-order", "nav_es_k20", "nav_fo"),
        (
            "first-order + Hessian - first-order (unshaped)",
            "nav_fo_unshaped_hessian",
            "nav_fo_unshaped",
        ),
    ]
    lines += ["", *difference_rows(pairs, data), ""]
    # 5. Exploration.
    lines += ["## 5. Exploration on sparse rewards: hill climbing vs ES-gradient vs DPP", ""]
    pairs = []
    for task, title in (("four_corners", "FourCorners"), ("six_circles", "SixCircles")):
        pairs.append((f"{title}: HC - ES-gradient", f"{task}_hc_300it", f"{task}_es_300it"))
        pairs.append((f"{title}: DPP - ES-gradient", f"{task}_dpp_300it", f"{task}_es_300it"))
    lines += ["The runs of Table 1 (sparse rows).", "", *difference_rows(pairs, data), ""]
    # 6. MuJoCo.
    lines += ["## 6. MuJoCo: HalfCheetah forward-backward and goal-velocity", ""]
    lines += table(
        MUJOCO,
        data,
        "Table 6. 16 antithetic pairs, K = 5, horizon 200 (38.4k env steps an iteration), "
        "10 held-out tasks, 50 iterations (the shipped configs' budget).",
    )
    lines += [""]
    # 7. Sine.
    lines += ["## 7. Sine regression: MAML at its plateau vs ES-MAML", ""]
    sine, facts = sine_section(data)
    if sine:
        split = sine.index("__STEPS__")
        sine_records = [r for n in SINE_LABEL for r in data.get(n, [])]
        lines += sine[:split]
        lines += [
            caption(
                sine_records,
                "Table 7. Held-out MSE (100 test-pool tasks, 10 shots, lower is better). "
                "T is each seed's MAML training time; an ES run is read at its last "
                "evaluation within T, and MAML at the ES run's last iteration.",
            ),
            "",
            *sine[split + 1 :],
            "",
            caption(
                sine_records,
                "Table 8. The final meta-parameters of each run after 0, 1, 5 and 10 "
                "adaptation steps (`esmaml evaluate RUN --steps 0 1 5 10`).",
            ),
            "",
            f"MAML's plateau: its held-out post MSE changed by "
            f"{ci(facts['maml_last_quarter'], 3)} over the last quarter of its training.",
            "",
        ]
    # Claims.
    claims_lines = [
        "## The claims and their verdicts",
        "",
        "Claims from shared/REFERENCE.md section 3 (the paper reports figures, no tables) and",
        "the issue's comparisons. Rule: supported when the 95% interval of the stated",
        "difference excludes zero in the claimed direction.",
        "",
        "| claim | test | interval | verdict |",
        "|---|---|---:|---|",
    ]

    def claim(text: str, test: str, a: str, b: str, competitive: bool = False) -> None:
        if a in data and b in data:
            interval = welch(last(data[a]), last(data[b]))
            verdict = verdict_of(interval, 1, competitive)
            claims_lines.append(f"| {text} | {test} | {ci(interval)} | {verdict} |")
        else:
            claims_lines.append(f"| {text} | {test} | | not run |")

    for task, title in (("four_corners", "FourCorners"), ("six_circles", "SixCircles")):
        for m in ("hc", "dpp"):
            claim(
                f"{m.upper()} explores where PG-MAML fails on sparse navigation ({title})",
                f"last post return, {m.upper()} - PG (§1)",
                f"{task}_{m}_300it",
                f"{task}_pg_300it",
            )
        claim(
            f"HC explores better than ES-gradient on sparse rewards ({title})",
            "last post return, HC - ES (§5)",
            f"{task}_hc_300it",
            f"{task}_es_300it",
        )
        claim(
            f"DPP helps ES-gradient adaptation ({title})",
            "last post return, DPP - ES (§5)",
            f"{task}_dpp_300it",
            f"{task}_es_300it",
        )
    claim(
        "Linear policies suffice (at least as good as MLP)",
        "linear - MLP (§3)",
        "nav_es_k20",
        "nav_es_mlp",
        competitive=True,
    )
    claim(
        "Deterministic policies adapt better than Gaussian",
        "deterministic - Gaussian (§3)",
        "nav_es_k20",
        "nav_es_gauss",
    )
    for k in (5, 10, 20):
        best = best_of([f"nav_es_k{k}", f"nav_hc_k{k}"], data)
        claim(
            f"ES-MAML competitive with PG-MAML at K = {k} (Navigation2D)",
            f"best ES-MAML variant ({best}) - PG (§2)",
            best or f"nav_es_k{k}",
            f"nav_pg_k{k}",
            competitive=True,
        )
    claim("Zero-order ES-MAML vs first-order", "zero - first order (§4)", "nav_es_k20", "nav_fo")
    claim(
        "The Hessian correction helps first-order ES-MAML",
        "with - without (§4)",
        "nav_fo_unshaped_hessian",
        "nav_fo_unshaped",
    )
    claims_lines.append(
        "| ES-MAML competitive with PG-MAML on MuJoCo forward-backward and goal-velocity | "
        "§6 (ES-MAML only) | | not testable here: PG-MAML steps torch-native envs only |"
    )
    if facts:
        best = min(
            (n for n in facts if n in SINE_LABEL and n != "sine_maml"),
            key=lambda n: facts[n]["ratio_at_T"].mean,
            default=None,
        )
        if best is not None:
            ratio = facts[best]["ratio_at_T"]
            within = "**yes**" if ratio.mean <= 1.5 else f"**no**: {ratio.mean:.2f}x"
            claims_lines.append(
                f"| Sine: ES-MAML's best variant within 1.5x of MAML's held-out MSE at equal "
                f"wall clock | §7, {SINE_LABEL[best]} / MAML @ T | {ci(ratio, 2, False)} | "
                f"{within} |"
            )
    lines = [*intro, *claims_lines, "", *lines]
    if notes.is_file():
        lines += [notes.read_text().rstrip(), ""]
    (out / "paper.md").write_text("\n".join(lines))


def _sd(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
