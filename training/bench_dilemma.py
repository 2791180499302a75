"""Scaling of DILEMMA's exact solvers: layers x servers -> seconds, sizes, status; the exact search
beside the PuLP ILP with HiGHS and with CBC.

`python -m training.bench_dilemma [--seeds 3] [--time-limit 60] [--solvers search highs cbc]`

Instances come from PlacementQuantization-v0's generator (its default scenario: 8 device types,
speeds, memory, links and budget drawn per seed) with the model and server count of each row, 4
bit-widths {16, 8, 4, 2}; seed i of every row is `sample_problem(..., default_rng(i))`. Seconds
are the solver's wall time (the ILP's model build in PuLP is reported apart); the median over
seeds is shown, with the slowest. Variables/binaries/constraints are the ILP's sizes; nodes the
search's heap nodes opened (median). The last column flags a seed where two solvers that both
claim "optimal" disagree by more than the relative gap 1e-6 (it should never print). The machine
may be shared: timings are noisy. Issue bars: OPT-350M 24 layers x 8 servers optimal < 1 s;
80 x 32 < 10 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np
from tqdm import tqdm

from baselines.dilemma import DEFAULT_GAP_REL, available_solvers, solve_dilemma
from edgellm_gym.envs.placement_quant import PlacementQuantScenario, sample_problem

# (model with that many layers, servers)
SIZES = [("opt-125m", 4), ("opt-350m", 8), ("llama-2-7b", 16), ("qwen2.5-72b", 32)]


def run(seeds: int, time_limit_s: float, solvers: list[str], sizes=SIZES) -> list[dict]:
    """One row per (size, solver): median and max solve seconds, sizes, statuses, objectives."""
    rows = []
    for model, servers in sizes:
        sc = dataclasses.replace(PlacementQuantScenario(), models=(model,), n_servers=servers, solve_ilp=False)
        problems = [sample_problem(sc, np.random.default_rng(seed))[0] for seed in range(seeds)]
        optimal: dict[int, float] = {}
        for solver in solvers:
            sols = [solve_dilemma(p, solver=solver, time_limit_s=time_limit_s)
                    for p in tqdm(problems, desc=f"{problems[0].n_layers} x {servers} {solver}", leave=False)]
            disagree = []
            for i, s in enumerate(sols):
                if s.status != "optimal":
                    continue
                if i in optimal and abs(s.objective_s - optimal[i]) > DEFAULT_GAP_REL * optimal[i]:
                    disagree.append(i)
                optimal.setdefault(i, s.objective_s)
            times = [s.solve_time_s for s in sols]
            rows.append({
                "layers": problems[0].n_layers, "servers": servers, "bits": problems[0].n_bits, "solver": solver,
                "median_s": float(np.median(times)), "max_s": float(np.max(times)),
                "build_s": float(np.median([s.build_time_s for s in sols])),
                "variables": sols[0].n_variables, "binaries": sols[0].n_binaries,
                "constraints": sols[0].n_constraints, "nodes": int(np.median([s.nodes for s in sols])),
                "status": ",".join(f"{k}:{[s.status for s in sols].count(k)}" for k in
                                   dict.fromkeys(s.status for s in sols)),
                "objective_ms": ",".join(f"{s.objective_s * 1e3:.4f}" for s in sols),
                "disagree": disagree,
            })
            print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    sizes = (f"{r['variables']} | {r['binaries']} | {r['constraints']} | -" if r["variables"] else
             f"- | - | - | {r['nodes']}")
    flag = "seeds " + " ".join(map(str, r["disagree"])) if r["disagree"] else ""
    return (f"| {r['layers']} x {r['servers']} x {r['bits']} | {r['solver']} | {r['median_s']:.2f} | {r['max_s']:.2f} "
            f"| {r['build_s']:.2f} | {sizes} | {r['status']} | {r['objective_ms']} | {flag} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.bench_dilemma", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--solvers", nargs="+", default=available_solvers(), choices=["search", "highs", "cbc"],
                   help="default: every one available here")
    args = p.parse_args(argv)
    missing = sorted(set(args.solvers) - set(available_solvers()))
    if missing:
        p.error(f"not available here: {missing} (available: {available_solvers()})")
    print(f"time limit {args.time_limit:g} s, {args.seeds} seeds, solvers {args.solvers}")
    print("| layers x servers x bits | solver | median s | max s | build s | variables | binaries | constraints "
          "| nodes | status | objective ms per seed | optima disagree |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    run(args.seeds, args.time_limit, args.solvers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
