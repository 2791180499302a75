"""Time `fcim_auction` on 32 bids: `python -m training.bench_fcim [--bids 32] [--layers 64] [--seed 0]`.

Bids are drawn once (layers 1..16, compute time and price proportional to the
layers with a per-device speed and rate, a budget and deadline that leave about
a fifth of the bids infeasible); timeit then repeats the same auction and the
best of the repeats is printed in microseconds per call, with the rounds it ran.
"""

from __future__ import annotations

import argparse
import timeit
from dataclasses import dataclass

import numpy as np

from baselines.fcim import fcim_auction


@dataclass
class Args:
    bids: int = 32
    layers: int = 64
    seed: int = 0
    repeat: int = 7


def parse(argv=None) -> Args:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in vars(Args()).items():
        p.add_argument(f"--{name}", type=int, default=default)
    return Args(**vars(p.parse_args(argv)))


def make_bids(n: int, total_layers: int, rng: np.random.Generator) -> dict:
    layers = rng.integers(1, 17, n)
    times = layers * rng.uniform(0.05, 0.2, n)
    prices = times * rng.uniform(0.5, 2.0, n)
    return dict(prices=prices, layers=layers, times=times, budget=float(np.quantile(prices, 0.8)),
                deadline=float(np.quantile(times, 0.9)), total_layers=total_layers,
                comm_delay=rng.rayleigh(3e-3, (n, n)) * (1 - np.eye(n)), client_delay=rng.rayleigh(3e-3, n))


def main(argv=None) -> int:
    args = parse(argv)
    bids = make_bids(args.bids, args.layers, np.random.default_rng(args.seed))
    result = fcim_auction(**bids)
    timer = timeit.Timer(lambda: fcim_auction(**bids))
    number, _ = timer.autorange()
    best = min(timer.repeat(repeat=args.repeat, number=number)) / number
    print(f"fcim_auction: {args.bids} bids, {args.layers} layers, {len(result.rounds)} rounds "
          f"({'all placed' if result.allocated else f'{result.remaining_layers} left'}): "
          f"{best * 1e6:.1f} us per call (best of {args.repeat} x {number})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
