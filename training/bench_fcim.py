"""Time `fcim_auction` on 32 bids: `python -m training.bench_fcim [--bids 32] [--layers 64] [--seed 0]`.

Bids are drawn once (layers 1..16, compute time and price proportional to the
layers with a per-device speed and rate, a budget and deadline that leave about
a fifth of the bids infeasible); timeit then repeats the same auction and the
best of the repeats is printed in microseconds per call, with the rounds it ran.

`--utility N` also answers issue 3 item 4: over N episodes of each
LayerAllocation-v0 preset driven by the FCIM policy, the whole auction of every
task (at its first step, over the devices with room) is run and each round's
reward is compared with the winner's bid price for the layers it took.
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
    utility: int = 0


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


def utility_shares(preset: str, episodes: int) -> dict[str, float]:
    """Rounds of FCIM's auctions in the env where reward >= / > / < the winner's price for its layers."""
    import gymnasium as gym

    import edgellm_gym  # noqa: F401
    from baselines.fcim import FCIM

    env = gym.make("edgellm_gym/LayerAllocation-v0", scenario=preset)
    st_of, policy = env.unwrapped, FCIM()
    margins = []
    for seed in range(episodes):
        obs, info = env.reset(seed=seed)
        policy.reset(env, seed=seed)
        while True:
            st = st_of.state
            if not st.chain:
                idx = np.flatnonzero(info["action_mask"][:-1])
                res = fcim_auction(st.bid_price_usd[idx], st.bid_layers[idx], st.bid_time_s[idx], st.budget_usd,
                                   st.deadline_s - st.now_s, st.total_layers, st.hop_s[np.ix_(idx, idx)],
                                   st.client_s[idx])
                for r in res.rounds:
                    w = idx[r.winner]
                    price = st.bid_price_usd[w] / st.bid_layers[w] * r.layers
                    margins.append((r.reward - price) / price)
            obs, _, term, trunc, info = env.step(policy.act(obs, info))
            if term or trunc:
                break
    m = np.asarray(margins)
    tol = 1e-9
    return {"rounds": float(m.size), "reward_ge_price": float(np.mean(m >= -tol)),
            "reward_gt_price": float(np.mean(m > tol)), "reward_lt_price": float(np.mean(m < -tol)),
            "worst_margin": float(m.min()), "best_margin": float(m.max())}


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
    for preset in ("default", "small", "jetson") if args.utility else ():
        u = utility_shares(preset, args.utility)
        print(f"utility {preset:8s}: {int(u['rounds'])} rounds; reward >= price {u['reward_ge_price']:.4f}, "
              f"> price {u['reward_gt_price']:.4f}, < price {u['reward_lt_price']:.4f}; "
              f"(reward - price) / price in [{u['worst_margin']:.3f}, {u['best_margin']:.3f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
