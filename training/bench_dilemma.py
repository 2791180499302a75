"""Scaling of DILEMMA's ILP: layers x servers -> seconds, variables, status; HiGHS and CBC side by side.

`python -m training.bench_dilemma [--seeds 3] [--time-limit 60] [--formulation flow]`

Instances come from PlacementQuantization-v0's generator (its default scenario: 8 device types,
speeds, memory, links and budget drawn per seed) with the model and server count of each row, 4
bit-widths {16, 8, 4, 2}. Seconds are the solver's wall time (the model build in PuLP is
reported apart); the median over seeds is shown, with the slowest. The machine may be shared:
timings are noisy. Issue bars: OPT-350M 24 layers x 8 servers optimal < 1 s; 80 x 32 < 10 s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

import numpy as np

from baselines.dilemma import available_solvers, solve_dilemma
from edgellm_gym.envs.placement_quant import PlacementQuantScenario, sample_problem

# (model with that many layers, servers)
SIZES = [("opt-125m", 4), ("opt-350m", 8), ("llama-2-7b", 16), ("qwen2.5-72b", 32)]


def run(seeds: int, time_limit_s: float, formulation: str, sizes=SIZES) -> list[dict]:
    """One row per (size, solver): median and max solve seconds, sizes, statuses."""
    rows = []
    for model, servers in sizes:
        sc = dataclasses.replace(PlacementQuantScenario(), models=(model,), n_servers=servers, solve_ilp=False)
        problems = [sample_problem(sc, np.random.default_rng(seed))[0] for seed in range(seeds)]
        for solver in available_solvers():
            sols = [solve_dilemma(p, solver=solver, time_limit_s=time_limit_s, formulation=formulation)
                    for p in problems]
            times = [s.solve_time_s for s in sols]
            rows.append({
                "layers": problems[0].n_layers, "servers": servers, "bits": problems[0].n_bits, "solver": solver,
                "median_s": float(np.median(times)), "max_s": float(np.max(times)),
                "build_s": float(np.median([s.build_time_s for s in sols])),
                "variables": sols[0].n_variables, "binaries": sols[0].n_binaries,
                "constraints": sols[0].n_constraints,
                "status": ",".join(f"{k}:{[s.status for s in sols].count(k)}" for k in
                                   dict.fromkeys(s.status for s in sols)),
                "objective_ms": ",".join(f"{s.objective_s * 1e3:.4f}" for s in sols),
            })
            print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    return (f"| {r['layers']} x {r['servers']} x {r['bits']} | {r['solver']} | {r['median_s']:.2f} | {r['max_s']:.2f} "
            f"| {r['build_s']:.2f} | {r['variables']} | {r['binaries']} | {r['constraints']} | {r['status']} "
            f"| {r['objective_ms']} |")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.bench_dilemma", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--time-limit", type=float, default=60.0)
    p.add_argument("--formulation", choices=("flow", "pairwise"), default="flow")
    args = p.parse_args(argv)
    print(f"formulation {args.formulation}, time limit {args.time_limit:g} s, {args.seeds} seeds, "
          f"solvers {available_solvers()}")
    print("| layers x servers x bits | solver | median s | max s | build s | variables | binaries | constraints "
          "| status | objective ms per seed |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    run(args.seeds, args.time_limit, args.formulation)
    return 0


if __name__ == "__main__":
    sys.exit(main())
