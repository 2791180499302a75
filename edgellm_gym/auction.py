"""FCIM's per-round rule (winner, runner-up, second-price reward), shared by the
LayerAllocation env (its "fcim" payment rule) and the FCIM policy in
`baselines/fcim.py`, whose docstring states the whole auction (DESIGN 4.2).

The env's step kernel pays with a compiled copy of `fcim_chosen_reward`
(`envs/layer_allocation_kernels.py`, the same operations in the same order):
a change to the rule here must be made there too.
"""

from __future__ import annotations

__all__ = ["fcim_winner_reward", "fcim_pool_round", "fcim_bid_ratios", "fcim_chosen_reward"]


def fcim_winner_reward(p1: float, l1: float, p2: float | None, l2: float | None, remaining: int,
                       min_price_per_layer: float, mean_price_per_layer: float, alpha: float = 0.1,
                       beta: float = 0.3, gamma: float = 0.6, delta: float = 0.1) -> float:
    """Step 3: the reward to winner (p1, l1) given the runner-up (p2, l2), None when w1 is the only feasible bid."""
    if p2 is None:
        return p1
    if gamma > alpha + beta:
        return p2 / l2 * remaining if remaining < l1 else p1
    if p1 / l1 <= min_price_per_layer:  # w1 has the pool's lowest price per layer
        return p2 / l2 * remaining
    return max(p2 * l1 / l2, p1) - delta * l1 * (p1 / l1 - mean_price_per_layer)


def fcim_pool_round(p, l, a, b, c, feasible, pool, remaining: int, chosen: int | None = None,
                    alpha: float = 0.1, beta: float = 0.3, gamma: float = 0.6,
                    delta: float = 0.1) -> tuple[int, int, float] | None:
    """One round over the bids `pool` (indices, in bid order) of precomputed per-bid sequences.

    `p`, `l`: prices and layers; `a`, `b`, `c`: L / l, T / l, P / l; `feasible`:
    P <= budget and T <= deadline. Returns (w1, w2 or -1, reward to w1), or None
    when no bid of the pool is feasible. With `chosen` (a bid index in `pool`),
    that bid wins whatever its score or feasibility and is paid by the same
    rule, the runner-up being the best feasible other bid. Plain Python on
    lists: for the few dozen bids of an auction it is faster than numpy.
    """
    pa = [a[i] for i in pool]
    pb = [b[i] for i in pool]
    cs = [c[i] for i in pool]
    # min-max normalisation over the pool, (v - lo) / (hi - lo), 0 where all are equal, computed only
    # for the bids that are scored
    lo_a, hi_a, lo_b, hi_b, lo_c, hi_c = min(pa), max(pa), min(pb), max(pb), min(cs), max(cs)
    span_a, span_b, span_c = hi_a - lo_a, hi_b - lo_b, hi_c - lo_c
    flat_a, flat_b, flat_c = hi_a == lo_a, hi_b == lo_b, hi_c == lo_c
    # the two heads of a stable ascending sort of the feasible bids: strict < keeps the earlier on ties
    w1 = w2 = -1
    s1 = s2 = float("inf")
    for i, x, y, z in zip(pool, pa, pb, cs):
        if i == chosen or not feasible[i]:
            continue
        s = (alpha * (0.0 if flat_a else (x - lo_a) / span_a) + beta * (0.0 if flat_b else (y - lo_b) / span_b)
             + gamma * (0.0 if flat_c else (z - lo_c) / span_c))
        if s < s1 and chosen is None:
            w2, s2, w1, s1 = w1, s1, i, s
        elif s < s2:
            w2, s2 = i, s
    if chosen is not None:
        w1 = chosen
    elif w1 < 0:
        return None
    reward = fcim_winner_reward(p[w1], l[w1], p[w2] if w2 >= 0 else None, l[w2] if w2 >= 0 else None,
                                remaining, lo_c, _sum_in_order(cs) / len(cs), alpha, beta, gamma, delta)
    return w1, w2, float(reward)


def _sum_in_order(xs) -> float:
    """x0 + x1 + ... left to right: Python >= 3.12's sum() of floats is compensated (other bits),
    and LayerAllocation's compiled copy of this rule sums in order; this keeps both alike on any
    Python."""
    total = 0.0
    for x in xs:
        total += x
    return total


def fcim_bid_ratios(p, l, t, total_layers: int) -> tuple[list[float], list[float], list[float]]:
    """The per-bid ratios a = L / l, b = T / l, c = P / l of `fcim_pool_round`, with l at least 1."""
    safe = [max(x, 1) for x in l]
    return ([total_layers / x for x in safe], [ti / x for ti, x in zip(t, safe)],
            [pi / x for pi, x in zip(p, safe)])


def fcim_chosen_reward(p, l, t, feasible, total_layers: int, pool, remaining: int, chosen: int,
                       alpha: float = 0.1, beta: float = 0.3, gamma: float = 0.6, delta: float = 0.1) -> float:
    """The reward to `chosen` of `fcim_pool_round(..., chosen=chosen)`, bit for bit, from the bids'
    prices `p`, layers `l` and times `t` (the ratios L / l, T / l, P / l with l at least 1).

    The round is skipped when the rule needs no runner-up: with gamma > alpha +
    beta, a winner whose bid does not exceed the remaining layers is paid its
    own price whatever the other bids (step 3), and so is a winner with no
    other feasible bid in the pool.
    """
    if gamma > alpha + beta and remaining >= l[chosen]:
        return float(p[chosen])
    for i in pool:
        if feasible[i] and i != chosen:
            break
    else:  # no runner-up: the winner is paid its price
        return float(p[chosen])
    a, b, c = fcim_bid_ratios(p, l, t, total_layers)
    return fcim_pool_round(p, l, a, b, c, feasible, pool, remaining, chosen, alpha, beta, gamma, delta)[2]
