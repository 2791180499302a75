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

__all__ = ["walk_tables", "walk_exact", "fresh_state", "relay_closure", "cover_hops"]

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
def walk_tables(sigma, lam, mu_run, cap_run, compute, mem, error):
    """(start, off, cnt, need, val) for the walk `sigma` at multiplier `lam` (module docstring).

    Run k's layers also pay mu_run[k] per byte (a multiplier on the memory of a server the walk
    comes back to: a run alone does not see the other runs' bytes) and may use cap_run[k] bytes.

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
    w = np.empty(B)
    ptr = np.empty(B, np.int64)
    for l in range(L - 1, -1, -1):
        for k in range(K - 1, -1, -1):
            off[l, k] = n
            if k > l or K - 1 - k > L - 1 - l:
                continue
            s = sigma[k]
            cap_k = cap_run[k]
            m0, c0 = off[l + 1, k], cnt[l + 1, k]
            nxt = start[l + 1, k + 1]  # run k ends at layer l
            if n + B * (c0 + 1) > need.shape[0]:
                need = _grow(need, n + B * (c0 + 1))
                val = _grow(val, n + B * (c0 + 1))
            # list b: layer l at width b, then (run k ends: nxt) or (layer l + 1 in run k: entry i);
            # each is increasing in bytes. Merge the B lists by bytes, keeping the Pareto entries.
            for b in range(B):
                w[b] = compute[s, b] + lam * error[l, b] + mu_run[k] * mem[b]
                ptr[b] = -1 if nxt < _INF else 0
                if mem[b] > cap_k:
                    ptr[b] = c0  # exhausted
            best = _INF
            while True:
                bb, nb, vb = -1, _INF, _INF
                for b in range(B):
                    i = ptr[b]
                    if i >= c0:
                        continue
                    nd = mem[b] if i < 0 else need[m0 + i] + mem[b]
                    if nd > cap_k:
                        ptr[b] = c0
                        continue
                    v = w[b] + (nxt if i < 0 else val[m0 + i])
                    if nd < nb or (nd == nb and v < vb):
                        bb, nb, vb = b, nd, v
                if bb < 0:
                    break
                ptr[bb] += 1
                if vb < best:
                    if n > off[l, k] and need[n - 1] == nb:
                        n -= 1  # same bytes, a lower value: replace
                    need[n] = nb
                    val[n] = vb
                    n += 1
                    best = vb
            cnt[l, k] = n - off[l, k]
            start[l, k] = best
    return start, off, cnt, need[:n], val[:n]


@njit
def _rest(j, l, k, room, start, off, cnt, need, val):
    """Table j's bound on layers l..L-1 when layer l - 1 is in run k and its server has `room`
    bytes free: layer l continues run k (the last entry with need <= room) or starts run k + 1."""
    lo, hi = off[j, l, k], off[j, l, k] + cnt[j, l, k]
    best = start[j, l, k + 1]
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
def walk_exact(sigma, dist, rel, lams, mus, start, off, cnt, need, val, compute, mem, cap, error, budget,
               target, max_labels, beam, state):
    """The least compute of a plan along `sigma` below `target` (seconds, hops excluded).

    dist[k]: index of sigma[k] among the walk's distinct servers; rel[k, d]: distinct server d is
    sigma[k] or comes later (its bytes matter for dominance). (start, off, cnt): `walk_tables`'
    arrays of several tables stacked on axis 0, their lists concatenated in (need, val) (off
    counts from the start of the concatenation), table j at budget multiplier lams[j] and memory
    multipliers mus[j] (per distinct server, as mu_run); a label's bound is the best of the
    tables' (tried in order, up to the first that reaches the target).
    Returns (cost, widths, runs, n_labels, state): cost inf and empty arrays when no plan is below
    the target; n_labels -1 when more than `max_labels` labels were needed: no answer yet, but
    `state` (the labels so far, see `fresh_state`) resumes the pass where it stopped, at this
    target or a lower one (labels whose bound reaches it are skipped). Only the current layer's
    labels are held in full; every label keeps its parent, run and width (7 bytes).
    beam > 0: a heuristic instead, keeping per layer only the `beam` labels of least bound (a plan,
    not necessarily the best)."""
    L, B, K, D = error.shape[0], mem.shape[0], sigma.shape[0], rel.shape[1]
    sigma_of = np.empty(D, np.int64)  # distinct server -> server
    for k in range(K):
        sigma_of[dist[k]] = sigma[k]
    min_err = np.empty(L + 1)  # the least error of layers l..L-1
    min_err[L] = 0.0
    for l in range(L - 1, -1, -1):
        e = _INF
        for b in range(B):
            e = min(e, error[l, b])
        min_err[l] = min_err[l + 1] + e
    # every label: parent (global index), run, width; the previous layer's labels in full
    l0, n_all, p_base, parent, run_of, width_of, p_cost, p_err, p_run, p_used, p_bound = state
    n_prev = p_cost.shape[0]
    tcap = 1024  # candidates of one layer
    tc, te, tb = np.empty(tcap), np.empty(tcap), np.empty(tcap)
    tp, tr, tw = np.empty(tcap, np.int64), np.empty(tcap, np.int64), np.empty(tcap, np.int64)
    tu = np.empty((tcap, D))
    bits = np.empty(1)  # a float's bits, for hashing
    free = np.empty(D)  # a candidate's free bytes per distinct server
    rest = np.empty((64, lams.shape[0]))  # the tables' values of the rest per (run, bytes) key of a layer
    rest_run, rest_nu = np.empty(64, np.int64), np.empty(64)
    for l in range(l0, L):
        nt = 0
        rest_row = dict()
        rest_row[np.int64(-1)] = np.int64(-1)
        n_rows = 0
        for src in range(n_prev):
            if p_bound[src] >= target:
                continue  # kept by a pass at a higher target
            k = 0 if l == 0 else p_run[src]
            kk_hi = 1 if l == 0 else min(k + 2, K)  # layer l continues run k or starts run k + 1
            for kk in range(k, kk_hi):
                if K - 1 - kk > L - 1 - l:
                    continue
                s, d = sigma[kk], dist[kk]
                for b in range(B):
                    nu = p_used[src, d] + mem[b]  # a server that comes back keeps its bytes
                    if nu > cap[s]:
                        continue
                    ne = p_err[src] + error[l, b]
                    if ne + min_err[l + 1] > budget:
                        continue
                    nc = p_cost[src] + compute[s, b]
                    bound = nc
                    if l == L - 1:
                        if kk != K - 1 or nc >= target:
                            continue
                    else:
                        for i in range(D):
                            free[i] = cap[sigma_of[i]] - (nu if i == d else p_used[src, i])
                        # the tables' values of the rest depend on (run, bytes on its server) only:
                        # computed once per layer and key
                        bits[0] = nu
                        key = np.int64(kk) * np.int64(1000003) ^ bits.view(np.int64)[0]
                        row = np.int64(-1)
                        if key in rest_row:
                            row = rest_row[key]
                        if row >= 0 and (rest_run[row] != kk or rest_nu[row] != nu):
                            row = -1
                        elif row < 0:
                            if n_rows >= rest.shape[0]:
                                rest, rest_run, rest_nu = _grow2(rest, n_rows + 1), _grow(rest_run, n_rows + 1), \
                                    _grow(rest_nu, n_rows + 1)
                            row = np.int64(n_rows)
                            rest[row, :] = np.nan
                            rest_run[row], rest_nu[row] = kk, nu
                            rest_row[key] = row
                            n_rows += 1
                        bound = -_INF
                        for j in range(lams.shape[0]):
                            bj = nc
                            for i in range(D):  # table j charged mu per byte the rest uses; it has at most free[i]
                                if mus[j, i] > 0.0:
                                    bj -= mus[j, i] * free[i]
                            if row < 0:
                                r = _rest(j, l + 1, kk, cap[s] - nu, start, off, cnt, need, val)
                            else:
                                r = rest[row, j]
                                if np.isnan(r):
                                    r = rest[row, j] = _rest(j, l + 1, kk, cap[s] - nu, start, off, cnt, need, val)
                            bj += r - lams[j] * (budget - ne)
                            bound = max(bound, bj)
                            if bound >= target:
                                break
                        if bound >= target:
                            continue
                    if nt >= tcap:
                        tcap *= 2
                        tc, te, tp, tr, tw, tb = _grow(tc, tcap), _grow(te, tcap), _grow(tp, tcap), \
                            _grow(tr, tcap), _grow(tw, tcap), _grow(tb, tcap)
                        tu = _grow2(tu, tcap)
                    tc[nt], te[nt], tp[nt], tr[nt], tw[nt], tb[nt] = nc, ne, src, kk, b, bound
                    for j in range(D):
                        tu[nt, j] = p_used[src, j]
                    tu[nt, d] = nu
                    nt += 1
        # keep the candidates no other candidate dominates: same run, the same bytes on the servers
        # that still matter, cost and error no higher (labels with other bytes are not compared: a
        # weaker test, still exact). In order of cost (exact) or of bound (beam, up to `beam`).
        order = np.argsort(tb[:nt] if beam > 0 else tc[:nt], kind="mergesort")
        c_cost, c_err, c_run, c_bound = np.empty(nt), np.empty(nt), np.empty(nt, np.int64), np.empty(nt)
        c_used = np.empty((nt, D))
        n = 0
        buckets = dict()
        buckets[np.int64(-1)] = np.int64(-1)
        for j in range(nt):
            if beam > 0 and n >= beam:
                break
            i = order[j]
            kk = tr[i]
            h = np.int64(kk)
            for dd in range(D):
                if rel[kk, dd]:
                    bits[0] = tu[i, dd]
                    h = h * np.int64(1000003) ^ bits.view(np.int64)[0]
            q = np.int64(-1)
            if h in buckets:
                q = buckets[h]
            if q >= 0:
                same = c_run[q] == kk
                for dd in range(D):
                    if rel[kk, dd] and c_used[q, dd] != tu[i, dd]:
                        same = False
                if same and c_err[q] <= te[i] and c_cost[q] <= tc[i]:
                    continue
            c_cost[n], c_err[n], c_run[n], c_bound[n] = tc[i], te[i], kk, tb[i]
            c_used[n] = tu[i]
            if n_all + n >= parent.shape[0]:
                parent, run_of, width_of = _grow(parent, n_all + n + 1), _grow(run_of, n_all + n + 1), \
                    _grow(width_of, n_all + n + 1)
            parent[n_all + n] = -1 if l == 0 else p_base + tp[i]
            run_of[n_all + n] = kk
            width_of[n_all + n] = tw[i]
            if q < 0 or te[i] < c_err[q]:
                buckets[h] = np.int64(n)  # the bucket's label of least error
            n += 1
        p_base = n_all
        n_all += n
        p_cost, p_err, p_run, p_used, p_bound, n_prev = c_cost[:n], c_err[:n], c_run[:n], c_used[:n], c_bound[:n], n
        if n == 0:
            return _INF, np.empty(0, np.int64), np.empty(0, np.int64), n_all, state
        if n_all > max_labels and l < L - 1:
            return _INF, np.empty(0, np.int64), np.empty(0, np.int64), -1, \
                (l + 1, n_all, p_base, parent, run_of, width_of, p_cost, p_err, p_run, p_used, p_bound)
    best, arg = _INF, -1
    for q in range(n_prev):
        if p_cost[q] < best:
            best, arg = p_cost[q], q
    widths = np.empty(L, np.int64)
    runs = np.empty(L, np.int64)
    q = p_base + arg
    for l in range(L - 1, -1, -1):
        widths[l], runs[l] = width_of[q], run_of[q]
        q = parent[q]
    return best, widths, runs, n_all, state


def fresh_state(n_distinct: int) -> tuple:
    """`walk_exact`'s state before layer 0: (next layer, labels, first label of the last layer,
    parent, run, width of every label, and the last layer's labels in full: cost, error, run,
    bytes per distinct server, bound); one empty label."""
    return (0, 0, 0, np.empty(1024, np.int32), np.empty(1024, np.int16), np.empty(1024, np.int8), np.zeros(1),
            np.zeros(1), np.zeros(1, np.int64), np.zeros((1, n_distinct)), np.full(1, -np.inf))


@njit
def relay_closure(d, charge):
    """Shortest times in place (Floyd-Warshall): d[i, j] through relays m, each paying charge[m]."""
    m_ = d.shape[0]
    for m in range(m_):
        for i in range(m_):
            via = d[i, m] + charge[m]
            for j in range(m_):
                if via + d[m, j] < d[i, j]:
                    d[i, j] = via + d[m, j]
    return d


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
