"""FCIM: the multi-round reverse auction that splits a model's layers over bidding devices (DESIGN 4.2).

Follows the authors' public code (sama1habibi/LLM-Edge-Inference-FCIM-ADSA, FCIM.py)
as DESIGN 4.2 and issue 3 state it. Each bid i offers l_i layers for compute
time T_i at price P_i. Per round, over the bids still in the pool:

1. ratios a_i = L / l_i, b_i = T_i / l_i, c_i = P_i / l_i, each min-max normalised
   over the whole pool, feasible or not (0 when all equal);
   score_i = alpha a_i + beta b_i + gamma c_i (lower is better);
2. feasible bids: P_i <= budget and T_i <= deadline; a stable sort by score
   (equal scores keep bid order) gives the winner w1 and runner-up w2;
3. reward to w1 (one feasible bid: P_w1):
   - gamma > alpha + beta: (P_w2 / l_w2) x remaining if remaining < l_w1, else P_w1;
   - otherwise: (P_w2 / l_w2) x remaining if w1 has the pool's lowest price per
     layer, else max(P_w2 l_w1 / l_w2, P_w1) - delta l_w1 (P_w1 / l_w1 - mean
     price per layer of the pool);
4. w1 takes min(l_w1, remaining) layers, processing for T_w1 / l_w1 per layer
   taken; the hop delay from the previous winner adds to communication; w1
   leaves the pool. Stop when no layers remain or no feasible bid is left;
   then add the client delay of the last winner.

The lowest and mean price per layer are over the pool (as the authors' code
does). An infeasible bid stays in the pool: it still shapes the normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgellm_gym.auction import fcim_pool_round, fcim_winner_reward
from edgellm_gym.metrics import jain_index

from .base import BasePolicy, register_policy

__all__ = ["FCIMRound", "FCIMResult", "fcim_scores", "fcim_winner_reward", "fcim_pool_round", "fcim_round",
           "fcim_auction", "FCIM"]

ENV_ID = "edgellm_gym/LayerAllocation-v0"


@dataclass(frozen=True)
class FCIMRound:
    """One round: the winning bid's index, the layers it took and the reward paid to it."""

    winner: int
    layers: int
    reward: float


@dataclass(frozen=True)
class FCIMResult:
    """The rounds in order and the auction's totals (times in seconds, money in the bids' unit)."""

    rounds: tuple[FCIMRound, ...]
    remaining_layers: int  # > 0 when the auction stopped for want of a feasible bid
    total_cost: float
    comm_time_s: float
    processing_time_s: float
    comm_overhead: float  # comm / (comm + processing); 0 with no rounds
    jain_layers: float  # over the winners; 0 with no rounds, as the authors' code
    jain_rewards: float
    cost_efficiency: float  # layers allocated / total cost; 0 when nothing was paid

    @property
    def allocated(self) -> bool:
        """Every layer found a device."""
        return self.remaining_layers == 0

    @property
    def winners(self) -> tuple[int, ...]:
        return tuple(r.winner for r in self.rounds)

    @property
    def completion_time_s(self) -> float:
        return self.comm_time_s + self.processing_time_s


def fcim_scores(prices, layers, times, total_layers: int, alpha: float = 0.1, beta: float = 0.3,
                gamma: float = 0.6) -> np.ndarray:
    """Step 1: the score of every bid given (the whole pool); lower is better."""
    p, l, t = (np.asarray(x, dtype=float) for x in (prices, layers, times))
    x = np.stack((total_layers / l, t / l, p / l))
    lo = x.min(axis=1, keepdims=True)
    span = x.max(axis=1, keepdims=True) - lo
    x = (x - lo) / np.where(span == 0, 1.0, span)
    return alpha * x[0] + beta * x[1] + gamma * x[2]


def _validated(prices, layers, times):
    p, t = np.asarray(prices, dtype=float), np.asarray(times, dtype=float)
    l = np.asarray(layers)
    if not (p.ndim == l.ndim == t.ndim == 1 and p.size == l.size == t.size):
        raise ValueError(f"prices, layers, times must be 1-d of equal length, got {p.shape}, {l.shape}, {t.shape}")
    if l.size and (np.any(l < 1) or np.any(l != np.floor(l))):
        raise ValueError(f"layers must be integers >= 1, got {l.tolist()}")
    return p, l.astype(np.int64), t


def fcim_round(prices, layers, times, budget: float, deadline: float, total_layers: int, remaining: int,
               chosen: int | None = None, alpha: float = 0.1, beta: float = 0.3, gamma: float = 0.6,
               delta: float = 0.1) -> tuple[int, int, float] | None:
    """One round over all the given bids as the pool: (winner, runner-up or -1, reward).

    With `chosen`, that bid is made the winner (whatever its score or
    feasibility) and is paid by the same rule, the runner-up being the best
    feasible other bid: this is how LayerAllocation-v0 pays a device an agent
    picked. Without, None when no bid is feasible.
    """
    p, l, t, a, b, c, feasible = _lists(*_validated(prices, layers, times), budget, deadline, total_layers)
    return fcim_pool_round(p, l, a, b, c, feasible, list(range(len(p))), remaining, chosen,
                           alpha, beta, gamma, delta)


def _lists(p, l, t, budget, deadline, total_layers):
    p, l, t = p.tolist(), l.tolist(), t.tolist()
    return (p, l, t, [total_layers / x for x in l], [ti / li for ti, li in zip(t, l)],
            [pi / li for pi, li in zip(p, l)], [pi <= budget and ti <= deadline for pi, ti in zip(p, t)])


def fcim_auction(prices, layers, times, budget: float, deadline: float, total_layers: int, comm_delay,
                 client_delay, alpha: float = 0.1, beta: float = 0.3, gamma: float = 0.6,
                 delta: float = 0.1) -> FCIMResult:
    """The whole multi-round auction for one task of `total_layers` layers (module docstring).

    `comm_delay[i][j]`: delay from bid i's device to bid j's; `client_delay[i]`:
    from bid i's device to the client. Budget and deadline apply to each bid.
    """
    p, l, t = _validated(prices, layers, times)
    n = p.size
    comm_delay, client_delay = np.asarray(comm_delay, dtype=float), np.asarray(client_delay, dtype=float)
    if comm_delay.shape != (n, n) or client_delay.shape != (n,):
        raise ValueError(f"comm_delay must be {n}x{n} and client_delay of length {n}, "
                         f"got {comm_delay.shape} and {client_delay.shape}")
    if total_layers < 0:
        raise ValueError(f"total_layers must be >= 0, got {total_layers}")
    p, l, t, a, b, c, feasible = _lists(p, l, t, budget, deadline, total_layers)
    pool = list(range(n))
    remaining, prev = int(total_layers), -1
    rounds: list[FCIMRound] = []
    comm = proc = 0.0
    while remaining > 0 and pool:
        found = fcim_pool_round(p, l, a, b, c, feasible, pool, remaining, None, alpha, beta, gamma, delta)
        if found is None:
            break
        w1, _, reward = found
        take = min(l[w1], remaining)
        proc += take * (t[w1] / l[w1])
        if prev >= 0:
            comm += float(comm_delay[prev, w1])
        rounds.append(FCIMRound(w1, take, reward))
        remaining -= take
        pool.remove(w1)
        prev = w1
    if prev >= 0:
        comm += float(client_delay[prev])
    took = np.array([r.layers for r in rounds], dtype=float)
    paid = np.array([r.reward for r in rounds], dtype=float)
    cost = float(paid.sum())
    return FCIMResult(
        rounds=tuple(rounds), remaining_layers=remaining, total_cost=cost, comm_time_s=float(comm),
        processing_time_s=float(proc), comm_overhead=float(comm / (comm + proc)) if comm + proc > 0 else 0.0,
        jain_layers=jain_index(took) if rounds else 0.0, jain_rewards=jain_index(paid) if rounds else 0.0,
        cost_efficiency=float(took.sum() / cost) if cost > 0 else 0.0,
    )


@register_policy(ENV_ID, "fcim", kind="reference")
class FCIM(BasePolicy):
    """The auction over the devices still free for the current task; act = this round's winner.

    Bids do not change while one task is being placed (time stands still), and
    min-max normalisation ignores the scale L, so re-running the auction on the
    remaining pool and layers each step replays the one-shot auction round by
    round. When the auction cannot place every layer (no feasible bid left) the
    task is rejected at once instead of after the rounds that would fail.
    """

    def __init__(self, alpha: float = 0.1, beta: float = 0.3, gamma: float = 0.6, delta: float = 0.1) -> None:
        self.params = dict(alpha=alpha, beta=beta, gamma=gamma, delta=delta)

    def act(self, obs, info) -> int:
        st = self.env.state
        idx = np.flatnonzero(info["action_mask"][:-1])
        reject = len(info["action_mask"]) - 1
        if idx.size == 0:
            return reject
        res = fcim_auction(st.bid_price_usd[idx], st.bid_layers[idx], st.bid_time_s[idx], st.budget_usd,
                           st.deadline_s - st.now_s, st.remaining_layers, st.hop_s[np.ix_(idx, idx)],
                           st.client_s[idx], **self.params)
        return int(idx[res.rounds[0].winner]) if res.allocated else reject
