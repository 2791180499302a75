"""GUS, the greedy of the accuracy-time trade-off paper (DESIGN 4.5), and the window ILP optimum.

The GUS paper is known to us by its abstract only (three tiers, model variants
of different accuracy and cost, users with a minimum accuracy and a deadline,
maximise satisfied users under node capacity; the ILP is NP-hard; GUS is a
fast greedy that beats baseline heuristics by at least 50% in satisfied users).
The rule below is ours, in the spirit the abstract and DESIGN 4.5 give:

GUS over one window (all its users known at the window's start):
1. order users tightest first: by deadline, ascending; ties by higher minimum
   accuracy, then by index;
2. for each user in that order, the feasible pairs (node, variant) are those
   whose variant is deployed on the node, meets the user's accuracy, fits the
   node's remaining capacity, and, inserted in the node's EDF order, finishes
   the user by its deadline without pushing any user already placed there past
   its own;
3. take the cheapest feasible pair: least compute time (node-seconds, the
   resource the users compete for); ties to the lowest pair index; update the
   node's load; no feasible pair: reject the user.
Every user GUS serves is satisfied, so GUS's count is a lower bound on the ILP.

The ILP (our formulation; exact for the env's service model): x[u, n, m] in
{0, 1} for the pairs that could satisfy u alone; maximise sum x subject to
sum_{n,m} x[u, n, m] <= 1 per user, sum p x <= capacity per node, and per node
n and per candidate user u the EDF condition sum_{v: D[v,n] <= D[u,n]} p[v,n,m]
x[v,n,m] <= D[u,n] (D = deadline - network time). On one processor with all
jobs present at time 0, a set meets its deadlines iff EDF does, iff these
inequalities hold, so the ILP counts exactly the users the env satisfies.
"""

from __future__ import annotations

import numpy as np

from edgellm_gym.envs.tiered_service import evaluate_window

from .base import BasePolicy, register_policy
from .highs import release_thread_pool

__all__ = ["gus_assign", "ilp_assign", "GUS", "WindowILP", "ILP_MARGIN_S"]

ENV_ID = "edgellm_gym/TieredService-v0"
ILP_MARGIN_S = 1e-6  # deadlines tightened by this much in the ILP, against solver tolerances


def gus_assign(min_accuracy, deadline_s, net_s, compute_s, accuracy, capacity_s) -> np.ndarray:
    """GUS over one window (see the module docstring). Shapes: min_accuracy, deadline_s (K,);
    net_s (K, N); compute_s (K, N, M) (+inf where not deployed); accuracy (M,); capacity_s (N,).

    Returns (K,) pair indices node * M + variant, -1 for rejected users.
    """
    min_accuracy, deadline_s = np.asarray(min_accuracy, float), np.asarray(deadline_s, float)
    compute_s, accuracy = np.asarray(compute_s, float), np.asarray(accuracy, float)
    k, n_nodes, n_var = compute_s.shape
    used = np.zeros(n_nodes)
    # per node, the placed users in EDF order: edf deadline, user, compute, finish
    d_job = [np.empty(0) for _ in range(n_nodes)]
    u_job = [np.empty(0, dtype=np.int64) for _ in range(n_nodes)]
    p_job = [np.empty(0) for _ in range(n_nodes)]
    assignment = np.full(k, -1, dtype=np.int64)
    for u in np.lexsort((np.arange(k), -min_accuracy, deadline_s)):
        d_u = deadline_s[u] - np.asarray(net_s[u], float)  # (N,)
        cost = np.full((n_nodes, n_var), np.inf)
        for n in range(n_nodes):
            before = (d_job[n] < d_u[n]) | ((d_job[n] == d_u[n]) & (u_job[n] < u))
            ahead = p_job[n][before].sum()
            finish = np.cumsum(p_job[n])
            after = ~before
            push = np.min(d_job[n][after] - finish[after]) if after.any() else np.inf
            p = compute_s[u, n]
            ok = ((accuracy >= min_accuracy[u]) & np.isfinite(p) & (used[n] + p <= capacity_s[n])
                  & (ahead + p <= d_u[n]) & (p <= push))
            cost[n, ok] = p[ok]
        best = int(np.argmin(cost))  # first minimum: lowest pair index on ties
        if not np.isfinite(cost.flat[best]):
            continue
        n, m = divmod(best, n_var)
        assignment[u] = best
        used[n] += compute_s[u, n, m]
        i = int(np.sum((d_job[n] < d_u[n]) | ((d_job[n] == d_u[n]) & (u_job[n] < u))))
        d_job[n] = np.insert(d_job[n], i, d_u[n])
        u_job[n] = np.insert(u_job[n], i, u)
        p_job[n] = np.insert(p_job[n], i, compute_s[u, n, m])
    return assignment


def _solver(time_limit_s: float | None):
    import pulp

    highs = pulp.HiGHS(msg=False, gapRel=0.0, gapAbs=0.0, threads=1, timeLimit=time_limit_s)
    if highs.available():
        return highs
    return pulp.PULP_CBC_CMD(msg=False, gapRel=0.0, gapAbs=0.0, threads=1, timeLimit=time_limit_s)


def ilp_assign(min_accuracy, deadline_s, net_s, compute_s, accuracy, capacity_s,
               time_limit_s: float | None = None) -> np.ndarray:
    """The window ILP of the module docstring, solved to optimality with PuLP (HiGHS if
    available, else CBC). Same arguments and result as `gus_assign`.

    Raises RuntimeError if the solver does not prove optimality (e.g. the time limit).
    """
    import pulp

    min_accuracy, deadline_s = np.asarray(min_accuracy, float), np.asarray(deadline_s, float)
    net_s, compute_s = np.asarray(net_s, float), np.asarray(compute_s, float)
    accuracy, capacity_s = np.asarray(accuracy, float), np.asarray(capacity_s, float)
    k, n_nodes, n_var = compute_s.shape
    d = deadline_s[:, None] - net_s  # (K, N) EDF deadlines
    with np.errstate(invalid="ignore"):
        cand = ((accuracy[None, None, :] >= min_accuracy[:, None, None]) & np.isfinite(compute_s)
                & (compute_s <= capacity_s[None, :, None]) & (compute_s <= d[:, :, None] - ILP_MARGIN_S))
    assignment = np.full(k, -1, dtype=np.int64)
    pairs = list(zip(*np.nonzero(cand)))
    if not pairs:
        return assignment
    prob = pulp.LpProblem("tiered_window", pulp.LpMaximize)
    x = {(u, n, m): prob.add_variable(f"x_{u}_{n}_{m}", 0, 1, cat="Binary") for u, n, m in pairs}
    prob += pulp.lpSum(x.values())
    for u in range(k):
        mine = [x[u, n, m] for n in range(n_nodes) for m in range(n_var) if cand[u, n, m]]
        if len(mine) > 1:
            prob += pulp.lpSum(mine) <= 1
    for n in range(n_nodes):
        on_n = [(u, m) for u, nn, m in pairs if nn == n]
        if not on_n:
            continue
        if sum(compute_s[u, n, m] for u, m in on_n) > capacity_s[n]:
            prob += pulp.lpSum(compute_s[u, n, m] * x[u, n, m] for u, m in on_n) <= capacity_s[n]
        for t in sorted({d[u, n] for u, _ in on_n}):
            terms = [(u, m) for u, m in on_n if d[u, n] <= t]
            if sum(compute_s[u, n, m] for u, m in terms) > t - ILP_MARGIN_S:  # else always satisfied
                prob += pulp.lpSum(compute_s[u, n, m] * x[u, n, m] for u, m in terms) <= t - ILP_MARGIN_S
    try:
        status = prob.solve(_solver(time_limit_s))
    finally:
        release_thread_pool()
    if pulp.LpStatus[status] != "Optimal":
        raise RuntimeError(f"window ILP not solved to optimality: {pulp.LpStatus[status]}")
    for (u, n, m), var in x.items():
        if var.value() is not None and var.value() > 0.5:
            assignment[u] = n * n_var + m
    satisfied, _ = evaluate_window(assignment, min_accuracy, deadline_s, net_s, compute_s, accuracy)
    if not np.all(satisfied[assignment >= 0]):  # pragma: no cover - would be a formulation bug
        raise RuntimeError("window ILP solution serves a user the env would not satisfy")
    return assignment


class _WindowPlanner(BasePolicy):
    """Plans each window at its first decision from `env.unwrapped.state`, then plays the plan.

    Meant to start with the episode (the benchmark resets it with the env). A
    policy reset mid-window plans the whole window anyway, ignoring the load
    of the users decided before it came; a planned pair masked for that reason
    is replaced by a rejection.
    """

    def reset(self, env, seed=None) -> None:
        super().reset(env, seed)
        self._plan_start, self._plan = -1, np.empty(0, dtype=np.int64)

    def plan(self, st) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def act(self, obs, info) -> int:
        st = self.env.state
        if st.window_start != self._plan_start:
            self._plan_start, self._plan = st.window_start, self.plan(st)
        a = int(self._plan[st.user - st.window_start])
        reject = self.env.reject_action
        return reject if a < 0 or not info["action_mask"][a] else a

    @staticmethod
    def window_args(st) -> tuple:
        w = st.window()
        return (st.min_accuracy[w], st.deadline_s[w], st.net_s[w], st.compute_s[w], st.accuracy, st.capacity_s)


@register_policy(ENV_ID, "gus", kind="reference")
class GUS(_WindowPlanner):
    """GUS (module docstring): tightest users first, cheapest feasible (node, variant), per window."""

    def plan(self, st) -> np.ndarray:
        return gus_assign(*self.window_args(st))


@register_policy(ENV_ID, "ilp", kind="optimal")
class WindowILP(_WindowPlanner):
    """The window ILP optimum (PuLP; HiGHS, else CBC), solved once per window and played."""

    def __init__(self, time_limit_s: float | None = None) -> None:
        self.time_limit_s = time_limit_s

    def plan(self, st) -> np.ndarray:
        return ilp_assign(*self.window_args(st), time_limit_s=self.time_limit_s)
