"""The sine section of results/paper.md: MAML at its plateau against the ES-MAML variants at
equal wall clock and equal iterations, and held-out MSE after 0, 1, 5 and 10 steps."""

from __future__ import annotations

from typing import Any

from paper_stats import ci, last

from esmaml.sweep import seed_interval

Records = dict[str, list[dict[str, Any]]]


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


# A held-out sine MSE above this is a diverged adaptation, not a poor fit: amplitudes are at
# most 5, so predicting zero everywhere costs at most 12.5.
MSE_DIVERGED = 1e3


def steps_caveats(label: str, steps: int, points: dict[int, dict[str, Any]]) -> list[str]:
    """Sentences for the cells of the steps table that a bare mean would misstate: seeds
    whose adaptation diverged, and tasks left out of a seed's mean as non-finite."""
    out = []
    diverged = {
        s: p["post_adaptation"] for s, p in points.items() if p["post_adaptation"] > MSE_DIVERGED
    }
    if diverged:
        each = ", ".join(f"seed {s}: {v:.1e}" for s, v in sorted(diverged.items()))
        out.append(
            f"- {label}, {steps} steps: adaptation diverges on some held-out tasks "
            f"({each}), so the cell gives the worst seed instead of a mean."
        )
    dropped = {s: p["nonfinite_tasks"] for s, p in points.items() if p.get("nonfinite_tasks")}
    if dropped:
        each = ", ".join(f"{n} in seed {s}" for s, n in sorted(dropped.items()))
        out.append(
            f"- {label}, {steps} steps: tasks whose MSE overflowed to inf or NaN are left "
            f"out of that seed's mean ({each}, of 100)."
        )
    return out


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
    divergence: list[str] = []
    for name in names:
        cells = []
        for k in (0, 1, 5, 10):
            points = {
                r["seed"]: next(p for p in r["steps"]["curve"] if p["steps"] == k)
                for r in data[name]
            }
            values = [p["post_adaptation"] for p in points.values()]
            cell = ci(seed_interval(values), 3, False)
            if max(values) > MSE_DIVERGED:
                cell = f"{max(values):.1e} in one seed (diverged)"
            cells.append(cell)
            divergence += steps_caveats(SINE_LABEL[name], k, points)
        steps_lines.append(f"| {SINE_LABEL[name]} | {' | '.join(cells)} |")
    if divergence:
        steps_lines += ["", *divergence]
    # MAML's plateau: the held-out post MSE over the last quarter of its training.
    quarter = []
    for r in data["sine_maml"]:
        final_it = r["evals"]["updates"][-1]
        earlier, _, _ = at_or_before(r, "updates", 0.75 * final_it)
        quarter.append(r["evals"]["post"][-1] - earlier)
    facts["maml_last_quarter"] = seed_interval(quarter)
    return [*lines, "", "__STEPS__", *steps_lines], facts
