"""Layer-allocation baselines the FCIM paper compares with (DESIGN 4.2), for LayerAllocation-v0.

Each reads `env.unwrapped.state` and returns a device index (or the reject
action, N). In this env a picked device takes min(its bid layers, remaining):
a plan is therefore an ordered list of devices, all but the last taking all
the layers they bid. None of these baselines looks at budgets or deadlines
(FCIM does); none rejects a task it can place.
"""

from __future__ import annotations

import numpy as np

from .base import BasePolicy, register_policy

__all__ = ["pipeedge_plan", "hexgen_fitness", "hexgen_plan", "StaticOrder", "PerformanceDriven", "PipeEdge", "HexGen",
           "RandomDevice"]

ENV_ID = "edgellm_gym/LayerAllocation-v0"


def _valid(info) -> np.ndarray:
    return np.flatnonzero(info["action_mask"][:-1])


@register_policy(ENV_ID, "static")
class StaticOrder(BasePolicy):
    """Fixed device order: the first device (scenario order) with room, as a static pipeline would."""

    def act(self, obs, info) -> int:
        idx = _valid(info)
        return int(idx[0]) if idx.size else len(info["action_mask"]) - 1


@register_policy(ENV_ID, "performance")
class PerformanceDriven(BasePolicy):
    """Fastest per layer first (compute time of one layer of this task), price ignored; ties to the lower index."""

    def act(self, obs, info) -> int:
        idx = _valid(info)
        if not idx.size:
            return len(info["action_mask"]) - 1
        return int(idx[np.argmin(self.env.state.per_layer_s[idx])])


@register_policy(ENV_ID, "random")
class RandomDevice(BasePolicy):
    """A uniformly random device with room (the policy's seeded generator); rejects only with none."""

    def act(self, obs, info) -> int:
        idx = _valid(info)
        return int(self.rng.choice(idx)) if idx.size else len(info["action_mask"]) - 1


def pipeedge_plan(per_layer_s, caps, hop_s, client_s, remaining: int, prev: int = -1,
                  order=None) -> list[int]:
    """PipeEdge's dynamic programme: the device sequence minimising the slowest pipeline stage.

    A stage is one device: its compute (`per_layer_s` x layers) plus the hop
    from the previous stage (from `prev`, the task's last placed device, for the
    first one; nothing if -1); the last stage also returns to the client.
    Devices appear in `order` (default: fastest per layer first, then index),
    any subsequence of it; all but the last take their whole `caps`. State:
    (last device, layers placed). Empty list if the caps cannot hold `remaining`.
    """
    per_layer_s, caps = np.asarray(per_layer_s, float), np.asarray(caps, dtype=np.int64)
    hop_s, client_s = np.asarray(hop_s, float), np.asarray(client_s, float)
    if order is None:
        order = [int(d) for d in np.lexsort((np.arange(caps.size), per_layer_s)) if caps[d] > 0]
    R, inf = int(remaining), np.inf
    # f[p][l]: slowest stage so far with order[p] last and l layers placed (l < R); start row = before any device
    m = len(order)
    f = np.full((m + 1, R), inf)
    parent = np.full((m + 1, R), -1, dtype=np.int64)
    f[m, 0] = 0.0  # row m is the start state (prev or nothing), 0 layers placed
    best, best_end = inf, None
    for p, d in enumerate(order):
        c = int(caps[d])
        for q in [m] + list(range(p)):
            src = prev if q == m else order[q]
            hop = hop_s[src, d] if src >= 0 else 0.0
            row = f[q]
            # d takes all its c layers and does not finish: l -> l + c < R
            if c < R:
                cand = np.maximum(row[: R - c], c * per_layer_s[d] + hop)
                tgt = f[p, c:]
                better = cand < tgt
                tgt[better] = cand[better]
                parent[p, c:][better] = q
            # d is the last stage: takes R - l <= c layers
            lo = max(R - c, 0)
            if lo < R:
                ls = np.arange(lo, R)
                end = np.maximum(row[lo:], (R - ls) * per_layer_s[d] + hop + client_s[d])
                k = int(np.argmin(end))
                if end[k] < best:
                    best, best_end = end[k], (p, q, lo + k)
    if best_end is None:
        return []
    p, q, l = best_end
    plan = [order[p]]
    while q != m:
        plan.append(order[q])
        q, l = int(parent[q, l]), l - int(caps[order[q]])
    return plan[::-1]


def _decode(keys, caps, remaining):
    """Random keys -> device order and how many of its first devices the plan uses."""
    order = np.argsort(keys, axis=1, kind="stable")
    covered = np.cumsum(caps[order], axis=1)
    n_used = np.argmax(covered >= remaining, axis=1) + 1
    return order, n_used


def hexgen_fitness(keys, per_layer_s, caps, hop_s, client_s, busy_wait_s, remaining: int, prev: int = -1,
                   prev_wait_s: float = 0.0):
    """Estimated completion time (waiting + compute + communication) of each genome's plan."""
    order, n_used = _decode(keys, caps, remaining)
    P, n = order.shape
    pos = np.arange(n)
    used = pos[None, :] < n_used[:, None]
    before = np.cumsum(caps[order], axis=1) - caps[order]
    took = np.clip(remaining - before, 0, caps[order]) * used
    compute = np.sum(took * per_layer_s[order], axis=1)
    hops = np.sum(hop_s[order[:, :-1], order[:, 1:]] * (pos[None, 1:] < n_used[:, None]), axis=1)
    if prev >= 0:
        hops = hops + hop_s[prev, order[:, 0]]
    last = order[np.arange(P), n_used - 1]
    wait = np.maximum(np.max(np.where(used, busy_wait_s[order], 0.0), axis=1), prev_wait_s)
    return wait + compute + hops + client_s[last]


def hexgen_plan(rng: np.random.Generator, per_layer_s, caps, hop_s, client_s, busy_wait_s, remaining: int,
                prev: int = -1, prev_wait_s: float = 0.0, population: int = 32, generations: int = 25,
                mutation_sigma: float = 0.3, elite: int = 2) -> list[int]:
    """A genetic algorithm over layer splits (HexGen searches its heterogeneous plans with one).

    Genome: one random key per device with room; decoding orders the devices by
    key and uses the shortest prefix whose bid layers cover `remaining`, so every
    genome is a valid split. Fitness: `hexgen_fitness` (lower is better).
    Tournament selection of two, uniform crossover, Gaussian mutation of each
    gene with probability 1/n, `elite` best kept. Devices with caps 0 never appear.
    """
    per_layer_s, caps = np.asarray(per_layer_s, float), np.asarray(caps, dtype=np.int64)
    hop_s, client_s, busy_wait_s = (np.asarray(x, float) for x in (hop_s, client_s, busy_wait_s))
    idx = np.flatnonzero(caps > 0)
    if caps[idx].sum() < remaining:
        return []
    sub = (per_layer_s[idx], caps[idx], hop_s[np.ix_(idx, idx)], client_s[idx], busy_wait_s[idx])
    k = idx.size
    prev_sub = -1
    hop_sub = sub[2]
    if prev >= 0:  # incoming hop from the task's last placed device: extend the matrix with it as row k
        hop_sub = np.zeros((k + 1, k + 1))
        hop_sub[:k, :k] = sub[2]
        hop_sub[k, :k] = hop_s[prev, idx]
        prev_sub = k

    def fitness(pop):
        return hexgen_fitness(pop, sub[0], sub[1], hop_sub, sub[3], sub[4], remaining, prev_sub, prev_wait_s)

    pop = rng.random((population, k))
    fit = fitness(pop)
    for _ in range(generations):
        elite_idx = np.argsort(fit, kind="stable")[:elite]
        a, b = rng.integers(population, size=(2, population - elite))
        parents1 = np.where((fit[a] <= fit[b])[:, None], pop[a], pop[b])
        a, b = rng.integers(population, size=(2, population - elite))
        parents2 = np.where((fit[a] <= fit[b])[:, None], pop[a], pop[b])
        children = np.where(rng.random(parents1.shape) < 0.5, parents1, parents2)
        mutate = rng.random(children.shape) < 1.0 / k
        children = children + mutate * rng.normal(0.0, mutation_sigma, children.shape)
        pop = np.vstack([pop[elite_idx], children])
        fit = np.concatenate([fit[elite_idx], fitness(children)])
    best = pop[int(np.argmin(fit))][None, :]
    order, n_used = _decode(best, sub[1], remaining)
    return [int(idx[d]) for d in order[0, : n_used[0]]]


class _Planner(BasePolicy):
    """Plans a task's whole device sequence at its first step, then follows it."""

    def reset(self, env, seed=None) -> None:
        super().reset(env, seed)
        self._plan: list[int] = []
        self._task = -1

    def plan(self, st) -> list[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def act(self, obs, info) -> int:
        st, reject = self.env.state, len(info["action_mask"]) - 1
        k = len(st.chain)
        if not (self._task == st.task and self._plan[:k] == st.chain and k < len(self._plan)
                and info["action_mask"][self._plan[k]]):
            self._task = st.task
            self._plan = list(st.chain) + self.plan(st)
        return self._plan[k] if k < len(self._plan) else reject


@register_policy(ENV_ID, "pipeedge")
class PipeEdge(_Planner):
    """PipeEdge: the device sequence that minimises the slowest stage (`pipeedge_plan`), price ignored."""

    def plan(self, st) -> list[int]:
        caps = np.where(st.used, 0, st.bid_layers)
        prev = st.chain[-1] if st.chain else -1
        return pipeedge_plan(st.per_layer_s, caps, st.hop_s, st.client_s, st.remaining_layers, prev)


@register_policy(ENV_ID, "hexgen")
class HexGen(_Planner):
    """HexGen: a genetic algorithm (`hexgen_plan`, seeded from the policy's rng) minimising completion time."""

    def __init__(self, population: int = 32, generations: int = 25) -> None:
        self.population, self.generations = population, generations

    def plan(self, st) -> list[int]:
        caps = np.where(st.used, 0, st.bid_layers)
        wait = np.maximum(st.busy_until_s - st.now_s, 0.0)
        prev = st.chain[-1] if st.chain else -1
        prev_wait = float(wait[st.chain].max()) if st.chain else 0.0
        return hexgen_plan(self.rng, st.per_layer_s, caps, st.hop_s, st.client_s, wait, st.remaining_layers,
                           prev, prev_wait, self.population, self.generations)
