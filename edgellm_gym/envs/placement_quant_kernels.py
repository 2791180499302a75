"""Compiled kernels of PlacementQuantization-v0 (edgellm_gym.envs.placement_quant).

Each does, element by element and in order, the float operations of the numpy code it replaced
(the golden trajectories, which include the observation, pin them): no reassociation, no fused
multiply-add (`edgellm_gym.jit.njit`), argmin = the first index of the least value, as numpy's.
"""

from __future__ import annotations

import numpy as np

from ..jit import njit

__all__ = ["lookahead_q"]

_INF = np.inf


@njit
def _search_left(a, x):
    """`np.searchsorted(a, x)` (side "left") for a nondecreasing `a` and a scalar x."""
    lo, hi = 0, a.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit
def lookahead_q(layer, prev, spent, free, acts, hop_from, compute, mem, client_out, error, cum_up, neg_g,
                reserve, limit, pref, up, small, q, fr):
    """q[i] = Q(acts[i]) of `_Lookahead` (see its docstring): the time action acts[i] adds at `layer`
    (the previous layer on `prev`, -1: the client) + the least, over the variants (reserve[v] < 0:
    as is; else one preferred-width layer of memory held back on server reserve[v] until the last
    layer, which goes there), of the greedy completion's time. fr: work array of S floats."""
    L, B, S, V = error.shape[0], mem.shape[0], free.shape[0], reserve.shape[0]
    m_pref, m_up, m_small = mem[pref], mem[up], mem[small]
    for i in range(acts.shape[0]):
        a = acts[i]
        s0, b0 = a // B, a % B
        imm = compute[b0, s0] + hop_from[prev, s0]
        if layer == L - 1:
            q[i] = imm + client_out[s0]
            continue
        k = layer + 1
        # layers k .. end_up - 1 go one width up (while the rest at the preferred width would break the budget)
        end_up = _search_left(neg_g, ((spent + error[layer, b0]) - limit) - cum_up[k])
        best = _INF
        for v in range(V):
            res = reserve[v]
            for t in range(S):
                fr[t] = free[t]
            fr[s0] -= mem[b0]
            if res >= 0:
                fr[res] -= m_pref
                if fr[res] < -1e-6:  # the held-back layer does not fit: this variant's Q is inf
                    continue
            at = s0
            total = 0.0
            for j in range(k, L):
                upped = j < end_up
                size = m_up if upped else m_pref
                w_row = up if upped else pref
                last = j == L - 1
                if last and res >= 0:
                    fr[res] += m_pref
                cap = float(L - 1 - j)  # layers left before the last
                t_best, sc_best = 0, _INF
                for t in range(S):
                    room = np.floor((fr[t] + 1e-6) / size)  # whole layers that fit
                    if last:
                        if res >= 0:
                            room = 1.0 if t == res else 0.0
                        sc = _INF if room < 1.0 else (compute[w_row, t] + hop_from[at, t]) + client_out[t]
                    elif room < 1.0:
                        sc = _INF
                    else:
                        sc = hop_from[at, t] / (room if room <= cap else cap) + compute[w_row, t]
                    if t == 0 or sc < sc_best:
                        t_best, sc_best = t, sc
                t = t_best
                if sc_best == _INF:  # nothing fits: the smallest width, where it fits, else anywhere
                    t_fit, c_fit, t_any, c_any = -1, _INF, 0, _INF
                    for u in range(S):
                        c = (compute[small, u] + hop_from[at, u]) + (client_out[u] if last else 0.0)
                        if u == 0 or c < c_any:
                            t_any, c_any = u, c
                        if fr[u] >= m_small - 1e-6 and (t_fit < 0 or c < c_fit):
                            t_fit, c_fit = u, c
                    if t_fit >= 0:
                        t, c = t_fit, c_fit
                    else:
                        t, c = t_any, c_any
                    total += c - (client_out[t] if last else 0.0)
                    fr[t] -= m_small
                else:
                    total += compute[w_row, t] + hop_from[at, t]
                    fr[t] -= size
                at = t
            total += client_out[at]
            if total < best:
                best = total
        q[i] = imm + best
