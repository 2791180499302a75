"""`edgellm-gym reproduce`: rerun each seed paper's headline comparison in our simulator.

Each experiment runs the paper's algorithm and the baselines it names on the
same seeds, on a preset that matches the paper's set-up as far as it is known,
and reports our figure (mean and 95% CI over paired seeds) beside the paper's,
plus a sweep over the condition the claim depends on. `--quick` uses fewer
seeds and sweep points. The document `docs/reproduction.md` is written from
the results; nothing in it is typed by hand except the discussion paragraphs
kept in EXPLANATIONS below, which say why our figures differ where they do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgellm_gym.metrics import mean_ci95
from edgellm_gym import env_presets
from training.benchmark import run_benchmark

__all__ = ["Row", "Experiment", "EXPERIMENTS", "run_experiment", "main"]


@dataclass
class Row:
    """One claim: the paper's figure beside ours (mean, 95% CI half-width)."""

    claim: str
    paper: str
    ours: float
    ci95: float
    unit: str
    preset: str


@dataclass
class Experiment:
    name: str
    title: str
    rows: list[Row] = field(default_factory=list)
    sweep_x: list[float] = field(default_factory=list)
    sweep_label: str = ""
    sweep_metric: str = ""
    sweep: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # policy -> [(mean, ci)]
    plot: str = ""


def _by_policy(records: list[dict[str, Any]], metric: str) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {}
    for r in records:
        out.setdefault(r["policy"], []).append(r[metric])
    return {k: np.asarray(v) for k, v in out.items()}


def paired_reduction(ref: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """Mean and CI of 1 - ref/base over paired seeds (share by which ref is lower)."""
    return mean_ci95(1.0 - ref / np.maximum(base, 1e-12))


def paired_ratio(ref: np.ndarray, base: np.ndarray) -> tuple[float, float]:
    """Mean and CI of ref/base over paired seeds."""
    return mean_ci95(ref / np.maximum(base, 1e-12))


def _sweep(exp: Experiment, env_id: str, scenarios: list[Any], policies: list[str], metric: str,
           episodes: int) -> None:
    exp.sweep_metric = metric
    for sc in scenarios:
        recs = run_benchmark(env_id, episodes, 0, sc, policies, progress=False)
        for name, values in _by_policy(recs, metric).items():
            exp.sweep.setdefault(name, []).append(mean_ci95(values))


# ------------------------------------------------------------------ ADSA
def adsa(quick: bool) -> Experiment:
    """ADSA vs FCFS, SRTF and LLF under strict deadlines: queueing delay (paper: 39% lower)."""
    env_id = "edgellm_gym/DeviceScheduling-v0"
    episodes = 5 if quick else 20
    exp = Experiment("adsa", "ADSA vs FCFS, SRTF, LLF: queueing delay under strict deadlines")
    recs = run_benchmark(env_id, episodes, 0, "strict", ["adsa", "fcfs", "srtf", "llf"], progress=False)
    qd = _by_policy(recs, "mean_queueing_delay_s")
    for base in ("fcfs", "srtf", "llf"):
        m, h = paired_reduction(qd["adsa"], qd[base])
        exp.rows.append(Row(f"queueing delay, ADSA vs {base.upper()} (share lower)", "39% lower",
                            100 * m, 100 * h, "%", "strict"))
    base = env_presets("edgellm_gym/DeviceScheduling-v0")["default"]
    slacks = [(1.1, 1.5), (1.1, 2.0), (1.5, 4.0), (3.0, 10.0)] if not quick else [(1.1, 2.0), (3.0, 10.0)]
    exp.sweep_x = [hi for _, hi in slacks]
    exp.sweep_label = "deadline slack upper bound (slack ~ U[lo, hi]; lower = stricter)"
    _sweep(exp, env_id, [replace(base, slack_min=lo, slack_max=hi) for lo, hi in slacks],
           ["adsa", "fcfs", "srtf", "llf"], "mean_queueing_delay_s", max(3, episodes // 2))
    return exp


# ---------------------------------------------------------------- CS-UCB
def cs_ucb(quick: bool) -> Experiment:
    """CS-UCB vs three baselines: throughput (paper: 2.2x, 2.1x, 1.6x) and energy (> 50% lower).

    The abstract does not name the three methods: we take random, round-robin
    and always-cloud (the strongest, set against the smallest claimed factor).
    """
    env_id = "edgellm_gym/EdgeCloudOffload-v0"
    episodes = 4 if quick else 20
    exp = Experiment("cs_ucb", "CS-UCB (PerLLM) vs baselines: throughput and energy")
    pols = ["cs-ucb", "random", "round-robin", "always-cloud"]
    recs = run_benchmark(env_id, episodes, 0, "default", pols, progress=False)
    thr, energy = _by_policy(recs, "throughput_rps"), _by_policy(recs, "energy_per_request_j")
    for base, claim in (("random", "2.2x"), ("round-robin", "2.1x"), ("always-cloud", "1.6x")):
        m, h = paired_ratio(thr["cs-ucb"], thr[base])
        exp.rows.append(Row(f"throughput, CS-UCB / {base}", claim, m, h, "x", "default"))
    for base in ("random", "round-robin", "always-cloud"):
        m, h = paired_reduction(energy["cs-ucb"], energy[base])
        exp.rows.append(Row(f"energy per request, CS-UCB vs {base} (share lower)", "> 50% lower",
                            100 * m, 100 * h, "%", "default"))
    base_sc = env_presets(env_id)["default"]
    factors = [0.003, 0.03, 0.3, 3.0] if not quick else [0.003, 1.0]
    exp.sweep_x = factors
    exp.sweep_label = "bandwidth multiplier on every link (log scale)"
    _sweep(exp, env_id, [replace(base_sc, bw_levels=tuple(f * x for x in base_sc.bw_levels)) for f in factors],
           pols, "throughput_rps", max(2, episodes // 2))
    return exp


# ------------------------------------------------------------------- GUS
def gus(quick: bool) -> Experiment:
    """GUS vs baseline heuristics: satisfied users (paper: at least 1.5x); sweep load (users per window)."""
    env_id = "edgellm_gym/TieredService-v0"
    episodes = 4 if quick else 20
    exp = Experiment("gus", "GUS vs baseline heuristics: satisfied users, and the ILP optimum")
    bases = ["random", "always-cloud", "nearest-tier", "highest-accuracy", "fastest-variant"]
    recs = run_benchmark(env_id, episodes, 0, "default", ["gus", "ilp", *bases], progress=False)
    sat = _by_policy(recs, "satisfied_share")
    for base in bases:
        m, h = paired_ratio(sat["gus"], sat[base])
        exp.rows.append(Row(f"satisfied users, GUS / {base}", ">= 1.5x", m, h, "x", "default"))
    m, h = paired_ratio(sat["gus"], sat["ilp"])
    exp.rows.append(Row("satisfied users, GUS / ILP optimum", "(not stated)", m, h, "x", "default"))
    base_sc = env_presets(env_id)["default"]
    loads = [8, 24, 48, 96] if not quick else [12, 48]
    exp.sweep_x = [float(n) for n in loads]
    exp.sweep_label = "users per 20 s window (load)"
    _sweep(exp, env_id, [replace(base_sc, users_per_window=n) for n in loads],
           ["gus", "always-cloud", "nearest-tier", "random"], "satisfied_share", max(2, episodes // 2))
    return exp


# ------------------------------------------------------------------ FCIM
def fcim(quick: bool) -> Experiment:
    """FCIM vs static and performance-driven allocation: communication overhead (paper: 54.7% lower)
    and completion time (36.9% lower); sweep the arrival rate (contention for devices)."""
    env_id = "edgellm_gym/LayerAllocation-v0"
    episodes = 4 if quick else 20
    exp = Experiment("fcim", "FCIM vs static and performance-driven layer allocation")
    pols = ["fcim", "static", "performance"]
    recs = run_benchmark(env_id, episodes, 0, "default", pols, progress=False)
    comm, done = _by_policy(recs, "comm_overhead"), _by_policy(recs, "mean_completion_time_s")
    for base in ("static", "performance"):
        m, h = paired_reduction(comm["fcim"], comm[base])
        exp.rows.append(Row(f"communication overhead, FCIM vs {base} (share lower)", "54.7% lower",
                            100 * m, 100 * h, "%", "default"))
        m, h = paired_reduction(done["fcim"], done[base])
        exp.rows.append(Row(f"completion time, FCIM vs {base} (share lower)", "36.9% lower",
                            100 * m, 100 * h, "%", "default"))
    base_sc = env_presets(env_id)["default"]
    rates = [0.03, 0.08, 0.15, 0.25] if not quick else [0.03, 0.15]
    exp.sweep_x = rates
    exp.sweep_label = "arrival rate (tasks/s)"
    _sweep(exp, env_id, [replace(base_sc, workload=replace(base_sc.workload, rate_per_s=r)) for r in rates],
           pols + ["hexgen"], "mean_completion_time_s", max(2, episodes // 2))
    return exp


# --------------------------------------------------------------- DILEMMA
def dilemma(quick: bool) -> Experiment:
    """DILEMMA on OPT-350M: quantization ratio (paper: down to 12.75%) with the quality budget met;
    sweep the budget epsilon (a factor on the error of every layer at int4) against latency and ratio."""
    env_id = "edgellm_gym/PlacementQuantization-v0"
    episodes = 3 if quick else 12
    exp = Experiment("dilemma", "DILEMMA (exact ILP) on OPT-350M: quantization ratio and latency vs budget")
    base_sc = env_presets(env_id)["opt-350m"]
    factors = [0.25, 1.0, 4.0, 16.0] if not quick else [0.25, 16.0]
    ratios, met = [], []
    exp.sweep_x = factors
    exp.sweep_label = "quality budget epsilon (x the summed int4 error of all layers)"
    exp.sweep_metric = "per_token_latency_s"
    for f in factors:
        sc = replace(base_sc, budget_min=f, budget_max=f)
        recs = run_benchmark(env_id, episodes, 0, sc, ["dilemma", "fp16_greedy", "uniform_int8", "uniform_int4"],
                             progress=False)
        for name, values in _by_policy(recs, "per_token_latency_s").items():
            exp.sweep.setdefault(name, []).append(mean_ci95(values))
        ratios.append(_by_policy(recs, "quantization_ratio")["dilemma"])
        met.append(_by_policy(recs, "quality_used_frac")["dilemma"] <= 1.0 + 1e-9)
    lowest = int(np.argmin([r.mean() for r in ratios]))
    m, h = mean_ci95(100 * ratios[lowest])
    exp.rows.append(Row(f"quantization ratio (bits used / fp16), lowest over the sweep (epsilon x{factors[lowest]:g})",
                        "down to 12.75%", m, h, "%", "opt-350m"))
    m, h = mean_ci95(100 * ratios[0])
    exp.rows.append(Row(f"quantization ratio at the tightest budget (epsilon x{factors[0]:g})", "-", m, h, "%",
                        "opt-350m"))
    share = float(np.mean(np.concatenate(met)))
    exp.rows.append(Row("episodes with the quality budget met", "loss preserved", 100 * share, 0.0, "%",
                        "opt-350m"))
    return exp


EXPERIMENTS: dict[str, Callable[[bool], Experiment]] = {
    "fcim": fcim,
    "adsa": adsa,
    "cs_ucb": cs_ucb,
    "dilemma": dilemma,
    "gus": gus,
}

# Why our figures differ from the papers', from the model (kept next to the code that makes them).
EXPLANATIONS: dict[str, str] = {
    "fcim": (
        "The paper's gains do not show here. FCIM's bids carry no waiting time, so under contention it "
        "queues behind busy cheap devices (its mean wait is about 3x HexGen's), and its budget and "
        "deadline checks refuse tasks other policies place. The paper allocates one BLOOM-176B task "
        "at a time on 3 RTX 4090 + 3 T4; that model fits none of them, so our preset uses Qwen2.5-14B "
        "(split over 2+ devices, as BLOOM was) and a stream of tasks that share the devices. With "
        "static and performance-driven picking the same RTX 4090s first, their rows coincide."
    ),
    "adsa": (
        "ADSA as specified reorders the queue by transmission time (longest first) whenever transmission "
        "times differ by 0.1 s or more, and runs the head of that order unless some task's slack is "
        "negative. With per-task access latencies of 5-300 ms the reorder is active, so a new arrival "
        "with a longer transmission preempts the running task; each preemption costs a re-prefill here "
        "(vLLM-style recompute), which the paper's set-up may not charge. SRTF, which the abstract does "
        "not name as beaten, keeps the lowest queueing delay in our simulator."
    ),
    "cs_ucb": (
        "PerLLM's energy claim does not carry over: in our cost model an A100 spends about 1/8 of a "
        "Xeon-class CPU server's inference energy per request, so no policy saves energy against "
        "always-cloud; the edge servers buy throughput only when the cloud is congested. The large "
        "ratios against random and round-robin come from their sending requests to CPU servers about "
        "22x slower than the A100. Text requests are a few KB, so bandwidth matters only when it is "
        "cut by orders of magnitude (the sweep). The paper's three comparison methods and its energy "
        "model are unknown to us."
    ),
    "dilemma": (
        "The ratio is bits used over bits at fp16, with bit-widths {16, 8, 4, 2}: 12.5% is the floor. "
        "DILEMMA minimises latency, so where memory and the quality budget allow, the memory-bound decode "
        "favours low bit-widths and the ratio falls toward the floor; a tight budget keeps sensitive "
        "layers (first, last) wide. Our quality budget is a sum of per-layer relative weight errors (a "
        "model for OPT-350M, measured on SmolLM2-135M's weights), not the paper's SQuAD model loss."
    ),
    "gus": (
        "GUS's rule is our reading of the abstract (tightest users first, least-compute feasible node and "
        "variant). Its margin over the heuristics depends on load: the heuristics neither plan a window "
        "nor check deadlines, so they lose more as nodes fill. The paper's baselines and set-up are "
        "unknown to us; ours are in docs/envs/tiered_service.md."
    ),
}


def run_experiment(name: str, quick: bool) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name](quick)


def plot_sweep(exp: Experiment, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, points in exp.sweep.items():
        mean = np.array([p[0] for p in points])
        half = np.array([p[1] for p in points])
        ax.errorbar(exp.sweep_x, mean, yerr=half, marker="o", capsize=3, label=name)
    if min(exp.sweep_x) > 0 and max(exp.sweep_x) / min(exp.sweep_x) > 50:
        ax.set_xscale("log")
    ax.set_xlabel(exp.sweep_label)
    ax.set_ylabel(exp.sweep_metric)
    ax.set_title(exp.title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_document(exps: list[Experiment], path: str, quick: bool) -> None:
    lines = ["# Reproducing the seed papers' headline results", "",
             "Written by `edgellm-gym reproduce" + (" --quick" if quick else "") + "`; do not edit by hand.",
             "Our figure is the mean over paired seeds with its 95% confidence half-width.", ""]
    for exp in exps:
        lines += [f"## {exp.title}", "", "| claim | paper | ours | 95% CI | preset |", "|---|---|---|---|---|"]
        for r in exp.rows:
            lines.append(f"| {r.claim} | {r.paper} | {r.ours:.3g} {r.unit} | ± {r.ci95:.2g} | {r.preset} |")
        if exp.plot:
            lines += ["", f"![{exp.name}]({os.path.basename(exp.plot)})"]
        lines += ["", EXPLANATIONS.get(exp.name, ""), ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    import argparse

    from rich.console import Console
    from rich.table import Table

    p = argparse.ArgumentParser(prog="edgellm-gym reproduce", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer seeds and sweep points (< 3 min)")
    p.add_argument("--only", default=None, help=f"one experiment: {', '.join(EXPERIMENTS)}")
    p.add_argument("--out", default="docs", help="folder for reproduction.md and plots (default docs/)")
    args = p.parse_args(argv)
    names = [args.only] if args.only else list(EXPERIMENTS)
    for n in names:
        if n not in EXPERIMENTS:
            p.error(f"unknown experiment {n!r}; known: {', '.join(EXPERIMENTS)}")
    os.makedirs(args.out, exist_ok=True)
    exps = []
    table = Table(title="paper vs edgellm-gym")
    for col in ("experiment", "claim", "paper", "ours", "95% CI", "preset"):
        table.add_column(col)
    for n in names:
        exp = run_experiment(n, args.quick)
        if exp.sweep:
            exp.plot = os.path.join(args.out, f"reproduction_{n}.png")
            plot_sweep(exp, exp.plot)
        exps.append(exp)
        for r in exp.rows:
            table.add_row(n, r.claim, r.paper, f"{r.ours:.3g} {r.unit}", f"± {r.ci95:.2g}", r.preset)
    Console(width=160).print(table)
    doc = os.path.join(args.out, "reproduction.md")
    write_document(exps, doc, args.quick)
    print(f"wrote {doc}")
    return 0
