"""Compiled kernels of DILEMMA's exact search (baselines.dilemma_search): one walk's bound and optimum.

A walk sigma = (sigma_0, ..., sigma_{K-1}) is the sequence of servers a plan's runs of consecutive
layers sit on (consecutive servers differ; a server may come back). Given the walk, a plan is the
length of each run (>= 1 layer) and a width per layer; its hops are fixed by the walk.

- `walk_tables`: for a multiplier lam >= 0 on the quality budget, the least compute + lam x error
  of the layers l..L-1, layer l in run k, as a Pareto list of (bytes the rest of run k still
  needs on its server, value) per (l, k), and start[l, k], the same with run k starting at layer l
  on a server with all its memory. Each run has its server's whole memory (a server that comes
  back gets it again): a relaxation, so these are lower bounds.
- `walk_exact`: the least-compute plan of the walk under the exact constraints (memory summed over
  every run on a server, the budget), by labels over the layers: a label is a partial plan (cost,
  error, bytes used on the walk's servers); labels are dropped when dominated or when their cost
  + the `walk_tables` bound - lam x (budget left) reaches the target.
"""

from __future__ import annotations

import numpy as np

from edgellm_gym.jit import njit

__all__ = ["walk_tables", "walk_exact", "cover_hops"]

_INF = np.inf


@njit
def _grow(a, n):
    """a copy of 1-D `a` with room for at least n entries."""
    out = np.empty(max(n, 2 * a.shape[0]), a.dtype)
    out[:a.shape[0]] = a
    return out


@njit
def _grow2(a, n):
    """a copy of 2-D `a` with room for at least n rows."""
    out = np.empty((max(n, 2 * a.shape[0]), a.shape[1]), a.dtype)
    out[:a.shape[0]] = a
    return out


@njit
def walk_tables(sigma, lam, compute, mem, cap, error):
    """(start, off, cnt, need, val) for the walk `sigma` at multiplier `lam` (module docstring).

    start: (L + 1, K + 1), inf where no plan; start[L, K] = 0. The Pareto list of (l, k) is
    need[off[l, k]:off[l, k] + cnt[l, k]] (increasing) and val[...] (decreasing): the least value
    of layers l..L-1 with layer l in run k whose run-k layers from l on need at most `need` bytes
    is the val of the last entry with need <= the bytes free."""
    L, B, K = error.shape[0], mem.shape[0], sigma.shape[0]
    start = np.full((L + 1, K + 1), _INF)
    start[L, K] = 0.0
    off = np.zeros((L + 1, K + 1), np.int64)
    cnt = np.zeros((L + 1, K + 1), np.int64)
    need = np.empty(1024)
    val = np.empty(1024)
    n = 0
    cn = np.empty(64)
    cv = np.empty(64)
    for l in range(L - 1, -1, -1):
        for k in range(K - 1, -1, -1):
            off[l, k] = n
            if k > l or K - 1 - k > L - 1 - l:
                continue
            s = sigma[k]
            nc = 0
            m0, c0 = off[l + 1, k], cnt[l + 1, k]
            for b in range(B):
                if mem[b] > cap[s]:
                    continue
                w = compute[s, b] + lam * error[l, b]
                if nc + c0 + 1 > cn.shape[0]:
                    cn = _grow(cn, nc + c0 + 1)
                    cv = _grow(cv, nc + c0 + 1)
                for i in range(m0, m0 + c0):  # layer l + 1 in the same run
                    nd = need[i] + mem[b]
                    if nd <= cap[s]:
                        cn[nc] = nd
                        cv[nc] = w + val[i]
                        nc += 1
                nxt = start[l + 1, k + 1]  # run k ends at layer l
                if nxt < _INF:
                    cn[nc] = mem[b]
                    cv[nc] = w + nxt
                    nc += 1
            if nc == 0:
                continue
            order = np.argsort(cn[:nc], kind="mergesort")
            if n + nc > need.shape[0]:
                need = _grow(need, n + nc)
                val = _grow(val, n + nc)
            best = _INF
            for j in range(nc):
                i = order[j]
                if cv[i] < best:
                    if n > off[l, k] and need[n - 1] == cn[i]:
                        n -= 1  # same bytes, a lower value: replace
                    need[n] = cn[i]
                    val[n] = cv[i]
                    n += 1
                    best = cv[i]
            cnt[l, k] = n - off[l, k]
            start[l, k] = best
    return start, off, cnt, need[:n], val[:n]


@njit
def _rest(l, k, room, start, off, cnt, need, val):
    """The tables' bound on layers l..L-1 when layer l - 1 is in run k and its server has `room`
    bytes free: layer l continues run k (the last entry with need <= room) or starts run k + 1."""
    lo, hi = off[l, k], off[l, k] + cnt[l, k]
    best = start[l, k + 1]
    a, z = lo, hi
    while a < z:
        mid = (a + z) >> 1
        if need[mid] <= room:
            a = mid + 1
        else:
            z = mid
    if a > lo and val[a - 1] < best:
        best = val[a - 1]
    return best


@njit
def walk_exact(sigma, dist, rel, lam, start, off, cnt, need, val, compute, mem, cap, error, budget, target,
               max_labels, beam):
    """The least compute of a plan along `sigma` below `target` (seconds, hops excluded).

    dist[k]: index of sigma[k] among the walk's distinct servers; rel[k, d]: distinct server d is
    sigma[k] or comes later (its bytes matter for dominance). (start, ..., val): `walk_tables` at
    `lam`. Returns (cost, widths, runs, n_labels): cost inf and empty arrays when no plan is below
    the target; n_labels -1 when more than `max_labels` labels were needed (no answer).
    beam > 0: a heuristic instead, keeping per layer only the `beam` labels of least bound (a plan,
    not necessarily the best)."""
    L, B, K, D = error.shape[0], mem.shape[0], sigma.shape[0], rel.shape[1]
    min_err = np.empty(L + 1)  # the least error of layers l..L-1
    min_err[L] = 0.0
    for l in range(L - 1, -1, -1):
        e = _INF
        for b in range(B):
            e = min(e, error[l, b])
        min_err[l] = min_err[l + 1] + e
    cap_n = 1024
    cost = np.empty(cap_n)
    err = np.empty(cap_n)
    used = np.empty((cap_n, D))
    parent = np.empty(cap_n, np.int64)
    run = np.empty(cap_n, np.int64)
    width = np.empty(cap_n, np.int64)
    n = 0
    tcap = 1024  # candidates of one layer
    tc = np.empty(tcap)
    te = np.empty(tcap)
    tu = np.empty((tcap, D))
    tp = np.empty(tcap, np.int64)
    tr = np.empty(tcap, np.int64)
    tw = np.empty(tcap, np.int64)
    tb = np.empty(tcap)
    lo, hi = 0, 0  # the labels of layer l - 1
    total = 0
    for l in range(L):
        nt = 0
        n_src = 1 if l == 0 else hi - lo
        for si in range(n_src):
            src = -1 if l == 0 else lo + si
            k = 0 if l == 0 else run[src]
            kk_hi = 1 if l == 0 else min(k + 2, K)  # layer l continues run k or starts run k + 1
            for kk in range(k, kk_hi):
                if K - 1 - kk > L - 1 - l:
                    continue
                s, d = sigma[kk], dist[kk]
                for b in range(B):
                    nu = (0.0 if src < 0 else used[src, d]) + mem[b]  # a server that comes back keeps its bytes
                    if nu > cap[s]:
                        continue
                    ne = (0.0 if src < 0 else err[src]) + error[l, b]
                    if ne + min_err[l + 1] > budget:
                        continue
                    nc = (0.0 if src < 0 else cost[src]) + compute[s, b]
                    bound = nc
                    if l == L - 1:
                        if kk != K - 1 or nc >= target:
                            continue
                    else:
                        bound = nc + _rest(l + 1, kk, cap[s] - nu, start, off, cnt, need, val) - lam * (budget - ne)
                        if bound >= target:
                            continue
                    if nt >= tcap:
                        tcap *= 2
                        tc, te, tp, tr, tw, tb = _grow(tc, tcap), _grow(te, tcap), _grow(tp, tcap), \
                            _grow(tr, tcap), _grow(tw, tcap), _grow(tb, tcap)
                        tu = _grow2(tu, tcap)
                    tc[nt], te[nt], tp[nt], tr[nt], tw[nt], tb[nt] = nc, ne, src, kk, b, bound
                    for j in range(D):
                        tu[nt, j] = 0.0 if src < 0 else used[src, j]
                    tu[nt, d] = nu
                    nt += 1
        # keep the candidates no other candidate of the same run dominates (cost, error, bytes);
        # by cost (exact) or by bound (beam, up to `beam` labels)
        order = np.argsort(tb[:nt] if beam > 0 else tc[:nt], kind="mergesort")
        new_lo = n
        for j in range(nt):
            if beam > 0 and n - new_lo >= beam:
                break
            i = order[j]
            kk = tr[i]
            dominated = False
            for q in range(new_lo, n):
                if run[q] != kk or err[q] > te[i] or cost[q] > tc[i]:
                    continue
                worse = False
                for dd in range(D):
                    if rel[kk, dd] and used[q, dd] > tu[i, dd]:
                        worse = True
                        break
                if not worse:
                    dominated = True
                    break
            if dominated:
                continue
            if n >= cap_n:
                cap_n *= 2
                cost, err, parent, run, width = _grow(cost, cap_n), _grow(err, cap_n), _grow(parent, cap_n), \
                    _grow(run, cap_n), _grow(width, cap_n)
                used = _grow2(used, cap_n)
            cost[n], err[n], parent[n], run[n], width[n] = tc[i], te[i], tp[i], kk, tw[i]
            used[n] = tu[i]
            n += 1
        total += n - new_lo
        if total > max_labels:
            return _INF, np.empty(0, np.int64), np.empty(0, np.int64), -1
        lo, hi = new_lo, n
        if lo == hi:
            return _INF, np.empty(0, np.int64), np.empty(0, np.int64), total
    best, arg = _INF, -1
    for q in range(lo, hi):
        if cost[q] < best:
            best, arg = cost[q], q
    widths = np.empty(L, np.int64)
    runs = np.empty(L, np.int64)
    q = arg
    for l in range(L - 1, -1, -1):
        widths[l], runs[l] = width[q], run[q]
        q = parent[q]
    return best, widths, runs, total


@njit
def cover_hops(d, din, dout, pos, first):
    """The least hops of a walk over the servers of a hop-time matrix d (shortest times between them,
    relays included) that visits every server pos[i]. With first < 0: from the client (din[i]: its
    least time to server i) and back to it (dout[i]); otherwise from server `first` (no client hop
    in). With pos empty: the cheapest round trip through one server, or `first`'s way back."""
    k, m = pos.shape[0], d.shape[0]
    if k == 0:
        if first >= 0:
            return dout[first]
        best = _INF
        for i in range(m):
            best = min(best, din[i] + dout[i])
        return best
    full = (1 << k) - 1
    dp = np.full((1 << k, k), _INF)
    for i in range(k):
        dp[1 << i, i] = din[pos[i]] if first < 0 else d[first, pos[i]]
    for mask in range(1, full + 1):
        for i in range(k):
            v = dp[mask, i]
            if v == _INF or not (mask >> i) & 1:
                continue
            for j in range(k):
                if (mask >> j) & 1:
                    continue
                nv = v + d[pos[i], pos[j]]
                if nv < dp[mask | (1 << j), j]:
                    dp[mask | (1 << j), j] = nv
    best = _INF
    for i in range(k):
        best = min(best, dp[full, i] + dout[pos[i]])
    return best
