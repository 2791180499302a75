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
- leaf(U): the plans using exactly U: the same bound with the servers fixed to U, or the least
  hops through U + U's integral bound (below), whichever is higher.
- walk(U, prefix): the walks over U that start with `prefix`. Bound: the prefix's hops + the least
  hops to visit the rest of U and return + U's compute bound (the higher of the two, as for leaf).
- sigma(U, walk): one whole walk. Bound: its hops + the higher of the integral bound with as many
  layers on each server as the walk visits it, and the Lagrangian bound of `walk_tables` (budget
  multiplied by lam, each run with its server's whole memory), maximised over lam. Opening it runs
  `walk_exact`: the walk's best plan under the exact constraints, if below the best so far.
  On a reversal-symmetric instance (`_reversal_symmetric`) a walk after its reverse (in
  lexicographic order) is skipped: its plans, read backwards, are the reverse's at the same cost.

`compute_bound` is the LP relaxation where a layer's position is forgotten: fractional counts of
layers per (server, width) within each server's memory, widths assigned fractionally to layers
within the budget. The bound returned is the LP's Lagrangian function evaluated at the LP's duals:
a valid lower bound whatever the LP solver's tolerances. The integral bound is the same model
with integer counts (a small MIP; its dual bound). Memory holds whole layers, and that is most of
the gap: against the compute of the optimum over its own server set, the integral bound is equal
on 34 of the env's 40 default instances (seeds 0-39; the LP median 3.5% below) and a median
0.0007% below on qwen2.5-72b x 32 servers (seeds 0-30, max 0.6%; the LP 0.67%, max 1.7%). Each is
one HiGHS model kept across calls, solved again with other column and row bounds.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field

import highspy
import numpy as np

from edgellm_gym.envs.placement_quant import PlacementProblem

from .dilemma_kernels import cover_hops, fresh_state, relay_closure, walk_exact, walk_tables
from .highs import release_thread_pool

__all__ = ["SearchResult", "search_dilemma", "compute_bound"]

_INF = float("inf")
# highspy's bare solver class: highspy.Highs() prints a banner before its output can be turned off
_HIGHS = getattr(highspy, "_Highs", highspy.Highs)
_US = 1e6  # the LP's costs in microseconds: solver tolerances are absolute
_GOLDEN_STEPS = 16
_BEAM = 64  # labels per layer of the quick first pass over a walk
# an exact pass bounds a label by the best of tables at (lam x f, mu x g) for these (f, g): budget
# multipliers far apart; for a walk that comes back to a server also memory multipliers mu x g with
# lam x (0.9..1.1): a label's best memory price depends on its free bytes (on qwen2.5-72b x 32 seed 4's
# hardest walk, 4.5M labels instead of 26M)
_FACTORS = ((1.0, 1.0), (0.5, 1.0), (2.0, 1.0), (0.25, 1.0), (4.0, 1.0))
_MU_LEVELS = (1.0, 0.85, 1.2, 0.7, 1.4, 0.6, 1.7, 0.5, 2.0)
_FACTORS_MU = _FACTORS + ((0.7, 1.0), (1.4, 1.0), (0.9, 1.0), (1.1, 1.0)) + tuple(
    (f, g) for g in _MU_LEVELS[1:] for f in (1.0, 0.9, 1.1))
# a walk whose pass needed more than _FIRST_ALLOWANCE labels: each server it comes back to gets its
# own memory multiplier levels, all combinations of the finest of these sets with up to _MU_COMBOS
# (on qwen2.5-72b x 32 seed 8's walk [7, 29, 30, 29, 30, 29] at the best plan known: 4.7M labels
# instead of 14.6M, 7 s instead of 19 s)
_MU_SETS = (_MU_LEVELS, (1.0, 0.7, 1.4, 0.5, 2.0), (1.0, 0.7, 1.4))
_MU_COMBOS = 27
_FIRST_ALLOWANCE = 250_000  # labels of a walk's first exact passes (then x4 when set aside)
_HELD_MAX = 30_000_000  # labels of passes set aside kept to resume them (7 bytes each)
_TARGET_STEP = 2e-4  # a walk's first exact target: its bound x (1 + this), then x4 each pass
_LOOKUPS_PER_S = 10_000_000  # labels x tables an exact pass handles a second, until the passes so far measure it


@dataclass
class SearchResult:
    """status: "optimal" (proven within gap_rel), "feasible" (stopped with a plan), "infeasible"
    (proven), "not_solved". placement/bit_idx are None without a plan. nodes: heap nodes opened per
    kind; lps / mips: solves of the position-free LP / MIP; labels: labels `walk_exact` kept, summed."""

    status: str
    placement: np.ndarray | None
    bit_idx: np.ndarray | None
    objective_s: float
    nodes: dict = field(default_factory=dict)
    lps: int = 0
    mips: int = 0
    labels: int = 0


@dataclass(frozen=True)
class _Mult:
    """Multipliers of the compute LP: alpha per width (layers counted = layers given the width, in
    microseconds), rho per required server (>= 1 layer), lam on the budget row (scaled to 1), mu per
    server: its memory's price in seconds per byte (for `walk_tables`)."""

    alpha: np.ndarray
    rho: dict
    lam: float
    mu: dict


class _Bounds:
    """The position-free bounds on compute, for (allowed servers, layers each must hold): the LP
    (fractional counts) and the MIP (integral counts). Both are one HiGHS model kept across calls,
    each call changing only column and row bounds: the LP re-solves from the last basis."""

    def __init__(self, p: PlacementProblem) -> None:
        self.p = p
        self.err_scale = p.budget if p.budget > 0 else 1.0
        self.fits = p.mem_bytes[None, :] <= p.capacity_bytes[:, None]  # (S, B)
        self.e = p.error / self.err_scale  # (L, B)
        self.lps = self.mips = 0
        self.us_compute = _US * p.compute_s  # (S, B)
        self.per = p.mem_bytes[None, :] / p.capacity_bytes[:, None]  # a layer's share of a server's memory
        self._int_memo: dict = {}
        self.lp, self.mip = _model(p, self.e, integral=False), _model(p, self.e, integral=True)

    def _set(self, h, allowed, min_layers) -> None:
        """Columns N[s, b] open for s in allowed (where the width fits); row 'layers on s' >= min_layers[s]."""
        S, B = self.p.n_servers, self.p.n_bits
        upper = np.zeros((S, B))
        upper[list(allowed)] = self.p.n_layers
        upper[~self.fits] = 0.0
        h.changeColsBounds(S * B, np.arange(S * B, dtype=np.int32), np.zeros(S * B), upper.ravel())
        h.changeRowsBounds(S, np.arange(S, 2 * S, dtype=np.int32), np.asarray(min_layers, float),
                           np.full(S, highspy.kHighsInf))

    def __call__(self, allowed, required) -> tuple[float, _Mult | None]:
        """(bound in seconds, the LP's multipliers) for plans whose servers are within `allowed`
        and include `required`; inf if the LP is infeasible."""
        p, S, B = self.p, self.p.n_servers, self.p.n_bits
        A = [s for s in allowed if self.fits[s].any()]
        if any(s not in A for s in required) or not A:
            return _INF, None
        need = np.zeros(S)
        need[list(required)] = 1.0
        self._set(self.lp, A, need)
        self.lps += 1
        self.lp.run()
        status = self.lp.getModelStatus()
        if status == highspy.HighsModelStatus.kInfeasible:
            return _INF, None
        if status != highspy.HighsModelStatus.kOptimal:
            return 0.0, None  # no usable duals: compute >= 0 is still a bound
        dual = np.asarray(self.lp.getSolution().row_dual)
        mult = _Mult(alpha=dual[2 * S + 1:2 * S + 1 + B].copy(),
                     rho={s: max(0.0, dual[S + s]) for s in required},
                     lam=max(0.0, -dual[2 * S]),
                     mu={s: max(0.0, -dual[s]) / _US / p.capacity_bytes[s] for s in A})
        return self.value(mult, A, required), mult

    def integer(self, servers, min_layers) -> float:
        """The position-free bound with integral counts (seconds): the least compute of L layers on
        exactly `servers` when servers[i] holds at least min_layers[i] layers, each layer's width
        still chosen fractionally within the budget (for integral counts that part is a
        transportation problem, integral anyway). The MIP's dual bound; inf if it is infeasible.
        Memoised."""
        key = (tuple(servers), tuple(min_layers))
        if key not in self._int_memo:
            need = np.zeros(self.p.n_servers)
            need[list(servers)] = min_layers
            self._set(self.mip, servers, need)
            self.mips += 1
            self.mip.run()
            status = self.mip.getModelStatus()
            bound = self.mip.getInfo().mip_dual_bound
            if status == highspy.HighsModelStatus.kInfeasible:
                self._int_memo[key] = _INF
            else:
                self._int_memo[key] = max(0.0, bound / _US) if np.isfinite(bound) else 0.0
        return self._int_memo[key]

    def value(self, mult: _Mult | None, allowed, required) -> float:
        """The LP's Lagrangian function (seconds) at multipliers `mult` (from an earlier call) for
        (allowed, required): a valid lower bound (compute >= 0 without multipliers). A required
        server's ">= 1 layer" multiplier is the best one given alpha (its term is concave in it,
        largest at its least cost - alpha): a server new to `required` gets one without an LP."""
        if mult is None:
            return 0.0
        A = np.asarray(list(allowed), np.int64)
        fits = self.fits[A]
        usable = fits.any(axis=1)
        req = np.zeros(self.p.n_servers, bool)
        req[list(required)] = True
        req = req[A]
        if (req & ~usable).any():
            return _INF
        cost = np.where(fits, self.us_compute[A] - mult.alpha[None, :], _INF)
        rho = np.where(req, np.maximum(0.0, cost.min(axis=1, initial=_INF)), 0.0)
        # fractional knapsack per server: all of its memory on the most negative cost per byte
        best = np.minimum(0.0, ((cost - rho[:, None]) / self.per[A]).min(axis=1, initial=_INF))
        total = float((best + rho)[usable].sum())
        total += float(np.min(mult.alpha[None, :] + mult.lam * self.e, axis=1).sum()) - mult.lam
        return max(0.0, total / _US)


def _model(p: PlacementProblem, e: np.ndarray, integral: bool):
    """The position-free model as a HiGHS object. Columns: N[s, b] (layers of width b on s), then
    x[g, b] (how many layers of group g take width b; a group is the layers with equal errors,
    which the model cannot tell apart: a mirrored error profile halves these columns). Rows: memory
    per server (<= 1), layers per server (>= a bound set per call), the budget (e scaled to it,
    <= 1), per width sum_s N = sum_g x, per group sum_b x = its size. Objective: compute in
    microseconds. Every N column starts closed."""
    S, B = p.n_servers, p.n_bits
    e_group, size = np.unique(e, axis=0, return_counts=True)
    G = len(e_group)
    nN, nx = S * B, G * B
    cols = []  # (rows, values) per column
    for s in range(S):
        for b in range(B):
            cols.append(([s, S + s, 2 * S + 1 + b], [p.mem_bytes[b] / p.capacity_bytes[s], 1.0, 1.0]))
    for g in range(G):
        for b in range(B):
            cols.append(([2 * S, 2 * S + 1 + b, 2 * S + 1 + B + g], [e_group[g, b], -1.0, 1.0]))
    inf = highspy.kHighsInf
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = nN + nx, 2 * S + 1 + B + G
    lp.col_cost_ = np.concatenate([_US * p.compute_s.ravel(), np.zeros(nx)])
    lp.col_lower_ = np.zeros(nN + nx)
    lp.col_upper_ = np.concatenate([np.zeros(nN), np.repeat(size, B).astype(float)])
    lp.row_lower_ = np.concatenate([np.full(S, -inf), np.zeros(S), [-inf], np.zeros(B), size])
    lp.row_upper_ = np.concatenate([np.full(S, 1.0 + 1e-9), np.full(S, inf), [1.0 + 1e-9], np.zeros(B), size])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.cumsum([0] + [len(r) for r, _ in cols]).astype(np.int32)
    lp.a_matrix_.index_ = np.concatenate([r for r, _ in cols]).astype(np.int32)
    lp.a_matrix_.value_ = np.concatenate([v for _, v in cols]).astype(float)
    if integral:
        lp.integrality_ = [highspy.HighsVarType.kInteger] * nN + [highspy.HighsVarType.kContinuous] * nx
    h = _HIGHS()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    if integral:
        h.setOptionValue("mip_rel_gap", 1e-9)
        h.setOptionValue("time_limit", 10.0)
    h.passModel(lp)
    return h


def compute_bound(p: PlacementProblem, allowed, required=()) -> float:
    """The position-free LP lower bound (seconds) on the compute of any plan whose servers are
    within `allowed` and include `required`."""
    try:
        return _Bounds(p)(list(allowed), tuple(required))[0]
    finally:
        release_thread_pool()


class _Walks:
    """Hop times within one server set U: shortest times through U (a relay hosts a layer, so it
    must be in U), client to each server and back. charge[i]: a lower bound on what one more visit
    of server U[i] adds to the compute (the compute LP's multiplier of its ">= 1 layer" row: the
    LP's value is convex in that row's right-hand side); a relay pays it."""

    def __init__(self, p: PlacementProblem, U, charge=None) -> None:
        self.U = list(U)
        self.charge = np.zeros(len(self.U)) if charge is None else np.asarray(charge, float)
        d = p.transfer_s[np.ix_(self.U, self.U)]
        np.fill_diagonal(d, 0.0)
        self.d = d = relay_closure(d, self.charge)
        cin, cout = p.client_in_s[self.U], p.client_out_s[self.U]
        self.din = np.minimum(cin, ((cin + self.charge)[:, None] + d).min(axis=0))
        self.dout = np.minimum(cout, (d + (self.charge + cout)[None, :]).min(axis=1))
        self.index = {s: i for i, s in enumerate(self.U)}

    def cover(self, visit, first: int = -1) -> float:
        """Least hops (+ relay charges) visiting every server of `visit` then the client, from the
        client (first=-1) or from server `first` (no hop in)."""
        pos = np.array([self.index[s] for s in visit], np.int64)
        return float(cover_hops(self.d, self.din, self.dout, pos, -1 if first < 0 else self.index[first]))

    def extra(self, walk) -> float:
        """The charges of a walk's visits beyond each server's first."""
        seen, total = set(), 0.0
        for s in walk:
            if s in seen:
                total += self.charge[self.index[s]]
            seen.add(s)
        return total


def _hops(p: PlacementProblem, walk) -> float:
    h = p.client_in_s[walk[0]] + p.client_out_s[walk[-1]]
    for a, b in zip(walk, walk[1:]):
        h += p.transfer_s[a, b]
    return float(h)


class _Walk:
    """One walk: its arrays for the kernels, its hops, and its Lagrangian bound."""

    def __init__(self, p: PlacementProblem, walk, mult: _Mult | None) -> None:
        self.p = p
        self.sigma = np.asarray(walk, np.int64)
        self.hops = _hops(p, walk)
        distinct = sorted(set(walk))
        self.servers = np.array(distinct, np.int64)
        self.dist = np.array([distinct.index(s) for s in walk], np.int64)
        K, D = len(walk), len(distinct)
        self.rel = np.zeros((K, D), np.bool_)
        for k in range(K):
            self.rel[k, self.dist[k:]] = True
        runs = np.bincount(self.dist, minlength=D)
        # a server the walk comes back to: each of its runs leaves at least one smallest layer to the others
        self.cap_run = p.capacity_bytes[self.sigma] - (runs[self.dist] - 1) * p.mem_bytes.min()
        self.mu_base = np.array([mult.mu.get(s, 0.0) if mult is not None and runs[i] > 1 else 0.0
                                 for i, s in enumerate(distinct)])

    def kernel_args(self, lam: float, mu: np.ndarray, factors) -> tuple:
        """`walk_exact`'s arguments up to the error table: one table per (f, g) of `factors`, at budget
        multiplier lam x f and memory multipliers mu x g (mu per distinct server)."""
        p = self.p
        lams = np.array([lam * f for f, _ in factors])
        mus = np.array([mu * g for _, g in factors]).reshape(len(factors), -1)
        tables = [walk_tables(self.sigma, a, m[self.dist], self.cap_run, p.compute_s, p.mem_bytes, p.error)
                  for a, m in zip(lams, mus)]
        base = np.cumsum([0] + [t[3].shape[0] for t in tables[:-1]])
        start = np.stack([t[0] for t in tables])
        off = np.stack([t[1] + b for t, b in zip(tables, base)])
        cnt = np.stack([t[2] for t in tables])
        need = np.concatenate([t[3] for t in tables])
        val = np.concatenate([t[4] for t in tables])
        return (self.sigma, self.dist, self.rel, lams, mus, start, off, cnt, need, val, p.compute_s, p.mem_bytes,
                p.capacity_bytes, p.error)

    def reversed(self) -> "_Walk":
        """The walk read backwards, with the same memory multipliers (its distinct servers are the
        same)."""
        r = _Walk(self.p, self.sigma[::-1].tolist(), None)
        r.mu_base = self.mu_base
        return r

    def value(self, lam: float, t: float) -> float:
        """hops + the tables' least value - lam x budget - mu x capacity, mu = t x mu_base."""
        p = self.p
        mu = t * self.mu_base
        start = walk_tables(self.sigma, lam, mu[self.dist], self.cap_run, p.compute_s, p.mem_bytes, p.error)[0]
        return self.hops + start[0, 0] - lam * p.budget - float(mu @ p.capacity_bytes[self.servers])

    def bound(self, lam_ref: float, t_ref: float, target: float) -> tuple[float, float, float]:
        """(bound, lam, t): the best value found, first at (lam_ref, t_ref) (the last walk's best:
        walks of one instance have similar multipliers), then by golden sections on log(lam) and on
        the scale t of the memory multipliers; stops once it reaches `target`."""
        has_mu = bool(self.mu_base.any())
        best = [-_INF, 0.0, 0.0]

        def g(lam, t):
            v = self.value(lam, t)
            if v > best[0]:
                best[:] = [v, lam, t]
            return v

        g(lam_ref, t_ref if has_mu else 0.0)
        if best[0] >= target or best[0] == _INF:
            return best[0], best[1], best[2]
        g(0.0, 0.0)
        t = t_ref if has_mu else 0.0
        lo = np.log(lam_ref)
        _golden(lambda x: g(np.exp(x), t), lo - 4.0, lo + 4.0, target, best)
        if has_mu and best[0] < target:
            lam = best[1]
            _golden(lambda x: g(lam, x), 0.0, 4.0, target, best)
            t = best[2]
            lo = np.log(best[1]) if best[1] > 0 else lo
            _golden(lambda x: g(np.exp(x), t), lo - 1.0, lo + 1.0, target, best)
        return best[0], best[1], best[2]


def _golden(f, a: float, b: float, target: float, best: list, steps: int = _GOLDEN_STEPS) -> None:
    """Golden-section search for the maximum of a unimodal f on [a, b]; stops once best[0] >= target
    (f records its best point in `best`)."""
    phi = (np.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = b - phi * (b - a), a + phi * (b - a)
    f1, f2 = f(x1), f(x2)
    for _ in range(steps):
        if best[0] >= target:
            return
        if f1 < f2:
            a, x1, f1 = x1, x2, f2
            x2 = a + phi * (b - a)
            f2 = f(x2)
        else:
            b, x2, f2 = x2, x1, f1
            x1 = b - phi * (b - a)
            f1 = f(x1)


def search_dilemma(p: PlacementProblem, time_limit_s: float | None = 60.0, gap_rel: float = 1e-6,
                   max_labels: int = 20_000_000) -> SearchResult:
    """DILEMMA's optimum (module docstring); the same problem as `baselines.dilemma.solve_dilemma`.

    Stops at `time_limit_s` (status "feasible" with the best plan so far, or "not_solved"); an exact
    pass, which cannot stop midway, gets at most the labels half the time left allows (`_allowance`),
    so the limit holds. A walk whose exact pass needs more than `max_labels` labels is given up (the
    answer is then at best "feasible"): 7 bytes a label, and one layer's labels in full."""
    try:
        return _search(p, time_limit_s, gap_rel, max_labels)
    finally:
        release_thread_pool()


def _search(p: PlacementProblem, time_limit_s: float | None, gap_rel: float, max_labels: int) -> SearchResult:
    t0 = time.perf_counter()
    deadline = _INF if time_limit_s is None else t0 + time_limit_s
    L, S = p.n_layers, p.n_servers
    bounds = _Bounds(p)
    order = sorted((s for s in range(S) if bounds.fits[s].any()),
                   key=lambda s: (p.compute_s[s][bounds.fits[s]].min(), s))  # fast servers first
    mirror = _reversal_symmetric(p)
    state = _State(p, gap_rel, max_labels, deadline, mirror)
    spaces: dict = {}

    root, mult = bounds(order, ())
    state.lam_ref = mult.lam / _US / bounds.err_scale if mult is not None and mult.lam > 0 else _lam_scale(p)
    if order:  # else no layer fits anywhere: the heap stays empty, the answer "infeasible"
        state.push(root + _Walks(p, order).cover(()), "set", ((), 0, True, mult))
    while True:
        if not state.heap or state.heap[0][0] >= state.cut():
            if not state.revive():
                break
        if time.perf_counter() > deadline:
            state.complete = False
            break
        bound, _, kind, data = heapq.heappop(state.heap)
        state.counts[kind] += 1
        if kind == "set":  # supersets of I adding servers of order[nxt:]
            I, nxt, evaluated, mult = data
            if not evaluated:
                allowed = list(I) + order[nxt:]
                hop = _Walks(p, allowed).cover(I)
                b = hop + bounds.value(mult, allowed, I)
                if b < state.cut():
                    lp, mult = bounds(allowed, I)
                    state.push(max(b, hop + lp), "set", (I, nxt, True, mult))
                continue
            if I:
                state.push(bound, "leaf", (I, False, mult))
            for j in range(nxt, len(order)):
                state.push(bound, "set", (I + (order[j],), j + 1, False, mult))
        elif kind == "leaf":  # exactly the servers U
            U, evaluated, mult = data
            if not evaluated:
                plain = _Walks(p, U)
                hop = plain.cover(U)
                b = hop + bounds.value(mult, U, U)
                if b < state.cut():
                    lp, mult = bounds(U, U)
                    b = max(b, hop + lp)
                    if b < state.cut():
                        ib = bounds.integer(U, [1] * len(U))
                        charge = [mult.rho.get(s, 0.0) / _US for s in U] if mult is not None else None
                        ws = _Walks(p, U, charge)
                        spaces[U] = (ws, plain, ib)
                        state.push(max(b, ws.cover(U) + lp, hop + ib), "leaf", (U, True, (lp, mult)))
                continue
            cf, mult = mult
            ws, plain, ib = spaces[U]
            for s in U:
                rest = [u for u in U if u != s]
                state.push(p.client_in_s[s] + max(ws.cover(rest, first=s) + cf, plain.cover(rest, first=s) + ib),
                           "walk", (U, cf, mult, (s,)))
        elif kind == "walk":  # walks over U starting with `prefix`
            U, cf, mult, prefix = data
            ws, plain, ib = spaces[U]
            raw_in = _hops(p, prefix) - p.client_out_s[prefix[-1]]
            h_in = raw_in + ws.extra(prefix)
            if set(prefix) == set(U) and (not mirror or prefix <= prefix[::-1]):
                visits = [prefix.count(u) for u in U]
                ib_walk = bounds.integer(U, visits) if max(visits) > 1 else ib
                out = p.client_out_s[prefix[-1]]
                state.push(max(h_in + out + cf, raw_in + out + ib_walk), "sigma", (prefix, mult, None))
            if len(prefix) >= L:
                continue
            for t in U:
                if t != prefix[-1]:
                    nxt_prefix = prefix + (t,)
                    left = [u for u in U if u not in nxt_prefix]
                    again = ws.charge[ws.index[t]] if t in prefix else 0.0
                    hop = raw_in + p.transfer_s[prefix[-1], t]
                    state.push(max(hop + again + ws.cover(left, first=t) + cf, hop + plain.cover(left, first=t) + ib),
                               "walk", (U, cf, mult, nxt_prefix))
        elif kind == "sigma":  # one walk: its Lagrangian bound
            walk, mult, _ = data
            w = _Walk(p, walk, mult)
            b, lam, t = w.bound(state.lam_ref, state.t_ref, state.cut())
            if lam > 0:
                state.lam_ref = lam
            if w.mu_base.any():
                state.t_ref = t
            state.push(max(b, bound), "exact", _Pass(w, lam, t * w.mu_base))
        else:  # "exact": one exact pass over a walk
            state.exact_pass(data, bound)
    return state.result(bounds.lps, bounds.mips)


def _factors(lam: float, mu: np.ndarray, fine: bool) -> tuple:
    """The (budget, memory) multiplier factors of a walk's tables (`_Walk.kernel_args`): with `fine`,
    per-server memory levels for the servers it comes back to (_MU_COMBOS at most)."""
    if lam <= 0:
        return ((1.0, 1.0),)
    back = np.flatnonzero(mu > 0)
    if not len(back):
        return _FACTORS
    levels = next((lv for lv in _MU_SETS if len(lv) ** len(back) <= _MU_COMBOS), None)
    if not fine or levels is None:
        return _FACTORS_MU
    grid = []
    for combo in itertools.product(levels, repeat=len(back)):
        g = np.ones(len(mu))
        g[back] = combo
        grid += [(f, g) for f in (1.0, 0.9, 1.1)]
    return _FACTORS + tuple(grid[1:])


class _Pass:
    """A walk's exact passes: its multipliers, tables (built at the first pass, again finer once a
    pass needed more than _FIRST_ALLOWANCE labels; dropped while set aside), the next target's
    distance above the bound (x bound), the labels a pass may use, and a pass set aside: its
    target and `walk_exact` state (None: none kept)."""

    def __init__(self, walk: "_Walk", lam: float, mu: np.ndarray) -> None:
        self.walk, self.lam, self.mu = walk, lam, mu
        self.args, self.fine, self.beamed, self.turned = None, False, False, False
        self.step = _TARGET_STEP
        self.allowance = _FIRST_ALLOWANCE
        self.target, self.state = _INF, None

    def __lt__(self, other) -> bool:  # heap ties are broken by the counter before this is reached
        return False


class _State:
    """The search's heap, best plan and counters."""

    def __init__(self, p: PlacementProblem, gap_rel: float, max_labels: int, deadline: float,
                 mirror: bool) -> None:
        self.p, self.gap_rel, self.max_labels, self.deadline = p, gap_rel, max_labels, deadline
        self.mirror = mirror
        self.pass_work, self.pass_s = 0, 0.0  # labels x tables and seconds of the exact passes: their rate
        self.ub, self.plan = _INF, None
        self.complete = True
        self.counts = {"set": 0, "leaf": 0, "walk": 0, "sigma": 0, "exact": 0}
        self.aside: list = []  # (bound, tie, _Pass): exact passes that needed more labels
        self.held = 0  # labels of the passes set aside, kept to resume them
        self.labels = 0
        self.heap: list = []
        self.tie = itertools.count()
        self.lam_ref, self.t_ref = 1.0, 1.0

    def cut(self) -> float:
        """Nodes whose bound reaches this cannot hold a plan better than the best by gap_rel."""
        return self.ub - self.gap_rel * abs(self.ub) if self.ub < _INF else _INF

    def push(self, bound: float, kind: str, data) -> None:
        if bound < self.cut():
            heapq.heappush(self.heap, (bound, next(self.tie), kind, data))

    def exact_pass(self, ps: "_Pass", bound: float) -> None:
        """One exact pass over a walk whose plans all cost >= `bound`: the best plan below a target
        a little above the bound (below the best plan known at most). Found: the walk is done. None
        below the target: the walk goes back on the heap with the target as its bound, the next
        target 4x as far (or the best plan known, past half way to it). A pass that needs more
        labels than its allowance (x4 each time, up to max_labels) is set aside until the heap has
        nothing cheaper (`revive`): meanwhile a better plan may come and prune it. Its labels are
        kept (up to _HELD_MAX in all) and it resumes where it stopped, at its target or the lower
        one the best plan then allows. On a reversal-symmetric instance the first such pass is also
        run on the reversed walk (the same plans read backwards, often far fewer labels one way):
        the walk keeps the direction that answered, or got further."""
        p, w = self.p, ps.walk
        state, ps.state = ps.state, None
        if state is not None:
            self.held -= state[1]
        if ps.args is None:
            ps.args = w.kernel_args(ps.lam, ps.mu, _factors(ps.lam, ps.mu, ps.fine))
        if not ps.beamed:
            # a quick plan (beam) before the exact passes: an early good plan prunes more
            ps.beamed = True
            val, widths, runs, n_lab, _ = walk_exact(*ps.args, p.budget, _INF, self.max_labels, _BEAM,
                                                     fresh_state(len(w.servers)))
            self.labels += max(n_lab, 0)
            self._offer(w, val, widths, runs)
        last = self.cut() - w.hops
        if bound - w.hops >= last:
            return
        if state is None:
            target = bound - w.hops + ps.step * abs(bound)
            if target >= (bound - w.hops + last) / 2:
                target = last  # most of the way: one pass to the best plan known instead of two
            state = fresh_state(len(w.servers))
        else:
            target = min(ps.target, last)
        allowance = self._allowance(ps.allowance, state[1], len(ps.args[3]))
        val, widths, runs, n_lab, state = self._run(ps.args, target, allowance, state)
        if n_lab < 0 and self.mirror and not ps.turned and state[0] > 0:
            ps.turned = True
            rw = w.reversed()
            if not np.array_equal(rw.sigma, w.sigma):
                r_args = rw.kernel_args(ps.lam, ps.mu, _factors(ps.lam, ps.mu, ps.fine))
                r = self._run(r_args, target, self._allowance(ps.allowance, 0, len(r_args[3])),
                              fresh_state(len(w.servers)))
                if r[3] >= 0 or r[4][0] > state[0]:
                    ps.walk, ps.args, w = rw, r_args, rw
                    val, widths, runs, n_lab, state = r
        if n_lab < 0:
            if allowance < ps.allowance or ps.allowance >= self.max_labels:
                self.complete = False  # given up: the answer can no longer be proven optimal
                return
            ps.allowance = min(4 * ps.allowance, self.max_labels)
            ps.args, ps.fine = None, True
            if self.held + state[1] <= _HELD_MAX:
                ps.target, ps.state = target, state
                self.held += state[1]
            heapq.heappush(self.aside, (bound, next(self.tie), ps))
            return
        self.labels += n_lab
        if val < _INF:
            self._offer(w, val, widths, runs)
        elif target < last:
            ps.step *= 4.0
            self.push(target + w.hops, "exact", ps)

    def _allowance(self, allowance: int, held: int, n_tables: int) -> int:
        """A pass's label allowance (labels in all, `held` of them from before) within the time left:
        a pass cannot be stopped midway, and stops only at the end of a layer. A label costs about as
        many table lookups as the pass has tables; the rate of lookups is the passes' so far, and half
        the time left is planned for (a layer's labels can be millions)."""
        if self.deadline == _INF:
            return allowance
        rate = self.pass_work / self.pass_s if self.pass_s > 0.05 else _LOOKUPS_PER_S
        return min(allowance, held + max(1, int(0.5 * (self.deadline - time.perf_counter()) * rate / n_tables)))

    def _run(self, args, target: float, allowance: int, state) -> tuple:
        """One call of `walk_exact`, its work (labels x tables) and seconds counted (the passes' rate)."""
        start, t0 = state[1], time.perf_counter()
        out = walk_exact(*args, self.p.budget, target, allowance, 0, state)
        self.pass_s += time.perf_counter() - t0
        self.pass_work += ((out[3] if out[3] >= 0 else out[4][1]) - start) * len(args[3])
        return out

    def _offer(self, w: "_Walk", val: float, widths, runs) -> None:
        if val + w.hops < self.ub:
            self.ub, self.plan = val + w.hops, (w.sigma[runs], widths)

    def revive(self) -> bool:
        """Put the set-aside pass of least bound back on the heap if it may still beat the best
        plan; False when none may (the search is over)."""
        while self.aside:
            bound, _, ps = heapq.heappop(self.aside)
            if bound < self.cut():
                self.push(bound, "exact", ps)
                return True
            if ps.state is not None:
                self.held -= ps.state[1]
                ps.state = None
        return False

    def result(self, lps: int, mips: int) -> SearchResult:
        if self.plan is None:
            return SearchResult("infeasible" if self.complete else "not_solved", None, None, float("nan"),
                                dict(self.counts), lps, mips, self.labels)
        return SearchResult("optimal" if self.complete else "feasible", self.plan[0].copy(), self.plan[1].copy(),
                            self.ub, dict(self.counts), lps, mips, self.labels)


def _reversal_symmetric(p: PlacementProblem) -> bool:
    """True if reversing a plan (layer l -> layer L-1-l, the walk read backwards) keeps its cost and
    feasibility exactly: errors mirrored, links symmetric, client in = out. The search then opens
    only walks that are not after their reverse (lexicographically)."""
    return bool(np.array_equal(p.error, p.error[::-1]) and np.array_equal(p.transfer_s, p.transfer_s.T)
                and np.array_equal(p.client_in_s, p.client_out_s))


def _lam_scale(p: PlacementProblem) -> float:
    """A typical exchange rate (seconds per unit of error) between compute and error: where to
    start looking for the budget's multiplier when the LP gave none."""
    if p.n_bits < 2:
        return 1.0
    dc = np.abs(np.diff(p.compute_s, axis=1)).mean()
    de = np.abs(np.diff(p.error, axis=1)).mean()
    return float(dc / de) if de > 0 and dc > 0 else 1.0
