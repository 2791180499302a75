"""DILEMMA's optimum by an exact best-first search over server sets and walks (not an ILP solver).

The ILP (baselines.dilemma) is hard for branch-and-bound solvers: its LP bound mixes layer
paths that each break memory, and layers that differ only in their error give many near-equal
plans. This search uses the problem's structure instead. A plan is (1) the set U of servers it
uses, (2) its walk: the servers of its runs of consecutive layers, in order (a server may come
back), (3) the runs' lengths and a width per layer. Every plan has exactly one (U, walk). The
search keeps one heap of nodes, each with a lower bound on every plan below it, and always opens
the least; it stops when the least bound reaches the best plan found (within gap_rel): that plan
is optimal. Node kinds, from the top:

- set(I, next): the sets U that hold I and add servers from `order[next:]`. Bound: the least hops
  of a client-to-client walk through every server of I (relays allowed) + a lower bound on the
  compute of L layers on the allowed servers, each of I holding one or more (`compute_bound`).
- leaf(U): the plans using exactly U (the same bound with the walk and the servers fixed to U).
- walk(U, prefix): the walks over U that start with `prefix`. Bound: the prefix's hops + the least
  hops to visit the rest of U and return + U's compute bound.
- sigma(U, walk): one whole walk. Bound: its hops + the Lagrangian bound of `walk_tables` (budget
  multiplied by lam, each run with its server's whole memory), maximised over lam. Opening it runs
  `walk_exact`: the walk's best plan under the exact constraints, if below the best so far.

`compute_bound` is the LP relaxation where a layer's position is forgotten: fractional counts of
layers per (server, width) within each server's memory, widths assigned fractionally to layers
within the budget. The bound returned is the LP's Lagrangian function evaluated at the LP's duals:
a valid lower bound whatever the LP solver's tolerances.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import scipy.sparse

from edgellm_gym.envs.placement_quant import PlacementProblem

from .dilemma_kernels import cover_hops, walk_exact, walk_tables

__all__ = ["SearchResult", "search_dilemma", "compute_bound"]

_INF = float("inf")
_US = 1e6  # the LP's costs in microseconds: solver tolerances are absolute
_LAM_GOLDEN_STEPS = 28
_BEAM = 64  # labels per layer of the quick first pass over a walk


@dataclass
class SearchResult:
    """status: "optimal" (proven within gap_rel), "feasible" (stopped with a plan), "infeasible"
    (proven), "not_solved". placement/bit_idx are None without a plan. nodes: heap nodes opened per
    kind; lps: LP solves; labels: labels `walk_exact` kept, summed."""

    status: str
    placement: np.ndarray | None
    bit_idx: np.ndarray | None
    objective_s: float
    nodes: dict = field(default_factory=dict)
    lps: int = 0
    labels: int = 0


class _Bounds:
    """The position-free LP bound on compute for (allowed servers, servers that must hold a layer)."""

    def __init__(self, p: PlacementProblem) -> None:
        self.p = p
        L, B = p.n_layers, p.n_bits
        self.err_scale = p.budget if p.budget > 0 else 1.0
        self.fits = p.mem_bytes[None, :] <= p.capacity_bytes[:, None]  # (S, B)
        self.e = p.error / self.err_scale  # (L, B)
        self.lps = 0
        # the layer part of the LP (x[l, b]), the same in every call
        self.n_x = L * B
        rows = np.repeat(np.arange(L), B)
        self.one = scipy.sparse.csr_matrix((np.ones(L * B), (rows, np.arange(L * B))), shape=(L, L * B))

    def __call__(self, allowed, required) -> tuple[float, tuple]:
        """(bound in seconds, the LP's multipliers) for plans whose servers are within `allowed`
        and include `required`; inf if the LP is infeasible."""
        p, L, B = self.p, self.p.n_layers, self.p.n_bits
        A = [s for s in allowed if self.fits[s].any()]
        req = set(required)
        if any(s not in A for s in req) or not A:
            return _INF, ()
        cols = [(s, b) for s in A for b in range(B) if self.fits[s, b]]
        nN = len(cols)
        cost = np.concatenate([[_US * p.compute_s[s, b] for s, b in cols], np.zeros(self.n_x)])
        col_s = np.array([A.index(s) for s, _ in cols])
        col_b = np.array([b for _, b in cols])
        mem = np.array([p.mem_bytes[b] / p.capacity_bytes[s] for s, b in cols])
        req_idx = [A.index(s) for s in required]
        # rows <=: memory per allowed server, >= 1 layer per required server (as -sum <= -1), error
        ub_rows = [scipy.sparse.csr_matrix((mem, (col_s, np.arange(nN))), shape=(len(A), nN))]
        ub_rhs = [np.full(len(A), 1.0 + 1e-9)]
        if req_idx:
            sel = np.isin(col_s, req_idx)
            r = np.array([req_idx.index(i) for i in col_s[sel]])
            ub_rows.append(scipy.sparse.csr_matrix((-np.ones(sel.sum()), (r, np.flatnonzero(sel))),
                                                   shape=(len(req_idx), nN)))
            ub_rhs.append(-np.ones(len(req_idx)))
        A_ub = scipy.sparse.hstack([scipy.sparse.vstack(ub_rows), scipy.sparse.csr_matrix((len(A) + len(req_idx),
                                                                                              self.n_x))])
        err_row = scipy.sparse.hstack([scipy.sparse.csr_matrix((1, nN)),
                                       scipy.sparse.csr_matrix(self.e.reshape(1, -1))])
        A_ub = scipy.sparse.vstack([A_ub, err_row]).tocsr()
        b_ub = np.concatenate(ub_rhs + [[1.0 + 1e-9]])
        # rows =: per width, layers counted on servers = layers given that width; one width per layer
        link_N = scipy.sparse.csr_matrix((np.ones(nN), (col_b, np.arange(nN))), shape=(B, nN))
        link_x = scipy.sparse.csr_matrix((-np.ones(L * B), (np.tile(np.arange(B), L), np.arange(L * B))),
                                         shape=(B, L * B))
        A_eq = scipy.sparse.vstack([scipy.sparse.hstack([link_N, link_x]),
                                    scipy.sparse.hstack([scipy.sparse.csr_matrix((L, nN)), self.one])]).tocsr()
        b_eq = np.concatenate([np.zeros(B), np.ones(L)])
        self.lps += 1
        res = scipy.optimize.linprog(cost, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=b_eq, bounds=(0, None),
                                     method="highs")
        if res.status == 2:
            return _INF, ()
        if res.status != 0:
            return 0.0, ()  # no usable duals: compute >= 0 is still a bound
        alpha = res.eqlin.marginals[:B]
        ineq = res.ineqlin.marginals
        rho = np.zeros(len(A))
        rho[req_idx] = np.maximum(0.0, -ineq[len(A):len(A) + len(req_idx)])
        lam = max(0.0, -ineq[-1])
        mult = (tuple(A), alpha.copy(), {A[i]: rho[i] for i in req_idx}, lam)
        return self.value(mult, A, required), mult

    def value(self, mult, allowed, required) -> float:
        """The LP's Lagrangian function (seconds) at multipliers `mult` (from an earlier call) for
        (allowed, required): a valid lower bound. Servers of `required` without a multiplier get 0."""
        if not mult:
            return 0.0
        p, B = self.p, self.p.n_bits
        _, alpha, rho_of, lam = mult
        total = 0.0
        for s in allowed:
            if not self.fits[s].any():
                if s in required:
                    return _INF
                continue
            rho = rho_of.get(s, 0.0) if s in required else 0.0
            best = 0.0  # fractional knapsack: all of the memory on the most negative cost per byte
            for b in range(B):
                if self.fits[s, b]:
                    best = min(best, (_US * p.compute_s[s, b] - alpha[b] - rho) / (p.mem_bytes[b] / p.capacity_bytes[s]))
            total += best + rho
        total += float(np.min(alpha[None, :] + lam * self.e, axis=1).sum()) - lam * 1.0
        return max(0.0, total / _US)


def compute_bound(p: PlacementProblem, allowed, required=()) -> float:
    """The position-free LP lower bound (seconds) on the compute of any plan whose servers are
    within `allowed` and include `required`."""
    return _Bounds(p)(list(allowed), tuple(required))[0]


class _Walks:
    """Hop times within one server set U: shortest times through U (a relay hosts a layer, so it
    must be in U), client to each server and back."""

    def __init__(self, p: PlacementProblem, U) -> None:
        self.U = list(U)
        d = p.transfer_s[np.ix_(self.U, self.U)].copy()
        np.fill_diagonal(d, 0.0)
        for m in range(len(self.U)):
            d = np.minimum(d, d[:, [m]] + d[[m], :])
        self.d = d
        self.din = (p.client_in_s[self.U][:, None] + d).min(axis=0)
        self.dout = (d + p.client_out_s[self.U][None, :]).min(axis=1)
        self.index = {s: i for i, s in enumerate(self.U)}

    def cover(self, visit, first: int = -1) -> float:
        """Least hops visiting every server of `visit` then the client, from the client (first=-1)
        or from server `first` (no hop in)."""
        pos = np.array([self.index[s] for s in visit], np.int64)
        return float(cover_hops(self.d, self.din, self.dout, pos, -1 if first < 0 else self.index[first]))


def _hops(p: PlacementProblem, walk) -> float:
    h = p.client_in_s[walk[0]] + p.client_out_s[walk[-1]]
    for a, b in zip(walk, walk[1:]):
        h += p.transfer_s[a, b]
    return float(h)


class _Walk:
    """One walk's arrays for the kernels."""

    def __init__(self, walk) -> None:
        self.sigma = np.asarray(walk, np.int64)
        distinct = sorted(set(walk))
        self.dist = np.array([distinct.index(s) for s in walk], np.int64)
        K, D = len(walk), len(distinct)
        self.rel = np.zeros((K, D), np.bool_)
        for k in range(K):
            self.rel[k, self.dist[k:]] = True


def search_dilemma(p: PlacementProblem, time_limit_s: float | None = 60.0, gap_rel: float = 1e-6,
                   max_labels: int = 20_000_000) -> SearchResult:
    """DILEMMA's optimum (module docstring); the same problem as `baselines.dilemma.solve_dilemma`."""
    t0 = time.perf_counter()
    deadline = _INF if time_limit_s is None else t0 + time_limit_s
    L, S = p.n_layers, p.n_servers
    bounds = _Bounds(p)
    usable = [s for s in range(S) if bounds.fits[s].any()]
    order = sorted(usable, key=lambda s: (p.compute_s[s][bounds.fits[s]].min(), s))
    compute, mem, cap, error = p.compute_s, p.mem_bytes, p.capacity_bytes, p.error
    budget = float(p.budget)
    ub, plan = _INF, None
    complete = True
    counts = {"set": 0, "leaf": 0, "walk": 0, "sigma": 0, "exact": 0}
    labels = 0
    heap: list = []
    tie = itertools.count()
    walks_of: dict = {}
    lam_ref = [None]

    def cut() -> float:
        return ub - gap_rel * abs(ub) if ub < _INF else _INF

    def push(bound: float, kind: str, data) -> None:
        if bound < cut():
            heapq.heappush(heap, (bound, next(tie), kind, data))

    def walk_bound(walk, target: float) -> tuple[float, float]:
        """(bound, lam): the walk's hops + the best Lagrangian value found, stopping once >= target."""
        w = _Walk(walk)
        hops = _hops(p, walk)

        def g(lam: float) -> float:
            start = walk_tables(w.sigma, lam, compute, mem, cap, error)[0]
            return hops + start[0, 0] - lam * budget

        best = (g(0.0), 0.0)
        if best[0] >= target or best[0] == _INF:
            return best
        ref = lam_ref[0] if lam_ref[0] else _lam_scale(p)
        vr = g(ref)
        best = max(best, (vr, ref))
        if vr >= target:
            return best
        # golden section on log(lam) over [ref / 1e3, ref x 1e3] (g is concave, so unimodal there)
        a, b = np.log(ref) - 7.0, np.log(ref) + 7.0
        phi = (np.sqrt(5.0) - 1.0) / 2.0
        x1, x2 = b - phi * (b - a), a + phi * (b - a)
        f1, f2 = g(np.exp(x1)), g(np.exp(x2))
        for _ in range(_LAM_GOLDEN_STEPS):
            best = max(best, (f1, np.exp(x1)), (f2, np.exp(x2)))
            if best[0] >= target:
                break
            if f1 < f2:
                a, x1, f1 = x1, x2, f2
                x2 = a + phi * (b - a)
                f2 = g(np.exp(x2))
            else:
                b, x2, f2 = x2, x1, f1
                x1 = b - phi * (b - a)
                f1 = g(np.exp(x1))
        return best

    root, mult = bounds(order, ())
    if mult:
        lam_ref[0] = mult[3] / _US / bounds.err_scale or None
    push(root + _walk_floor(p, order), "set", ((), 0, True, mult))
    while heap:
        if time.perf_counter() > deadline:
            complete = False
            break
        bound, _, kind, data = heapq.heappop(heap)
        if bound >= cut():
            break
        if kind == "set":
            I, nxt, evaluated, mult = data
            if not evaluated:
                allowed = list(I) + order[nxt:]
                hop = _Walks(p, allowed).cover(I)
                cheap = hop + bounds.value(mult, allowed, I)
                if cheap >= cut():
                    continue
                lp, mult = bounds(allowed, I)
                push(max(cheap, hop + lp), "set", (I, nxt, True, mult))
                continue
            counts["set"] += 1
            if I:
                push(bound, "leaf", (I, False, mult))
            for j in range(nxt, len(order)):
                push(bound, "set", (I + (order[j],), j + 1, False, mult))
        elif kind == "leaf":
            U, evaluated, mult = data
            if not evaluated:
                ws = _Walks(p, U)
                hop = ws.cover(U)
                cheap = hop + bounds.value(mult, U, U)
                if cheap >= cut():
                    continue
                lp, _ = bounds(U, U)
                push(max(cheap, hop + lp), "leaf", (U, True, max(cheap, hop + lp) - hop))
                continue
            counts["leaf"] += 1
            cf = mult
            ws = walks_of.setdefault(U, _Walks(p, U))
            for s in U:
                h = p.client_in_s[s] + ws.cover([u for u in U if u != s], first=s)
                push(h + cf, "walk", (U, cf, (s,)))
        elif kind == "walk":
            U, cf, prefix = data
            counts["walk"] += 1
            ws = walks_of[U]
            if set(prefix) == set(U):
                push(_hops(p, prefix) + cf, "sigma", (prefix, False, None))
            if len(prefix) >= L:
                continue
            h_in = _hops(p, prefix) - p.client_out_s[prefix[-1]]
            for t in U:
                if t == prefix[-1]:
                    continue
                nxt_prefix = prefix + (t,)
                left = [u for u in U if u not in nxt_prefix]
                push(h_in + p.transfer_s[prefix[-1], t] + ws.cover(left, first=t) + cf, "walk", (U, cf, nxt_prefix))
        elif kind == "sigma":
            walk, evaluated, lam = data
            if not evaluated:
                b, lam = walk_bound(walk, cut())
                push(max(b, bound), "sigma", (walk, True, lam))
                continue
            counts["sigma"] += 1
            w = _Walk(walk)
            hops = _hops(p, walk)
            tables = walk_tables(w.sigma, lam, compute, mem, cap, error)
            args = (w.sigma, w.dist, w.rel, lam, *tables, compute, mem, cap, error, budget)
            # a quick plan first (beam), then the walk's optimum below the best plan known
            val, widths, runs, n_lab = walk_exact(*args, _INF, max_labels, _BEAM)
            counts["exact"] += 1
            labels += max(n_lab, 0)
            if val + hops < ub:
                ub, plan = val + hops, (w.sigma[runs], widths)
            if ub == _INF:
                continue  # the beam found no plan; the exact pass below needs a target
            val, widths, runs, n_lab = walk_exact(*args, cut() - hops, max_labels, 0)
            counts["exact"] += 1
            if n_lab < 0:
                complete = False
                continue
            labels += n_lab
            if val + hops < ub:
                ub, plan = val + hops, (w.sigma[runs], widths)
    nodes = {k: v for k, v in counts.items()}
    if plan is None:
        status = "infeasible" if complete else "not_solved"
        return SearchResult(status, None, None, float("nan"), nodes, bounds.lps, labels)
    status = "optimal" if complete else "feasible"
    return SearchResult(status, plan[0].copy(), plan[1].copy(), ub, nodes, bounds.lps, labels)


def _walk_floor(p: PlacementProblem, servers) -> float:
    """The least round trip client -> one server -> client (every plan pays at least that)."""
    s = list(servers)
    return float((p.client_in_s[s] + p.client_out_s[s]).min()) if s else _INF


def _lam_scale(p: PlacementProblem) -> float:
    """A typical exchange rate (seconds per unit of error) between compute and error: where to
    start looking for the budget's multiplier when the LP gave none."""
    dc = np.abs(np.diff(p.compute_s, axis=1)).mean()
    de = np.abs(np.diff(p.error, axis=1)).mean()
    return float(dc / de) if de > 0 and dc > 0 else 1.0
