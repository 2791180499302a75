"""Compiled kernels of PlacementQuantization-v0 (edgellm_gym.envs.placement_quant).

Each does, element by element and in order, the float operations of the numpy code it replaced
(the golden trajectories, which include the observation, pin them): no reassociation, no fused
multiply-add (`edgellm_gym.jit.njit`), argmin = the first index of the least value, as numpy's.
"""

from __future__ import annotations

import numpy as np

from ..jit import njit, pairwise_sum

__all__ = ["advance", "fits_uniformly", "instance_arrays", "lookahead_q", "lookahead_tables", "route_features",
           "start_episode", "update_mask", "write_lookahead"]

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
def lookahead_q(layer, prev, spent, free, acts, q, hop_from, compute, mem, client_out, error, cum_up, neg_g,
                reserve, limit, pref, up, small, order, ws, rec):
    """q[i] = Q(acts[i]) of `_Lookahead` (see its docstring): the time action acts[i] adds at `layer`
    (the previous layer on `prev`, -1: the client) + the least, over the variants (reserve[0] = -1:
    as is; else one preferred-width layer of memory held back on server reserve[v] until the last
    layer, which goes there), of the greedy completion's time. order[b]: the servers by increasing
    compute[b] (stable). ws (7, S), rec (6, L): work arrays.

    The plain walk (variant 0) records its route in rec: per layer, the server chosen, the bytes
    taken, the previous server and the time before it, the least score (inf: nothing fit) and the
    layer size in force. A variant that holds a layer back follows that route while its one
    different server, reserve[v], makes no different choice (the same score there, or a score above
    the least where another server won), then goes to reserve[v] at the last layer; at the first
    layer where it might choose otherwise, its state there is rebuilt and it walks on from it."""
    L, B, S, V = error.shape[0], mem.shape[0], free.shape[0], reserve.shape[0]
    m_pref, m_up, m_small = mem[pref], mem[up], mem[small]
    fr_init = ws[4]
    for t in range(S):  # whole layers that fit now, at the preferred width and one up
        ws[2, t] = np.floor((free[t] + 1e-6) / m_pref)
        ws[3, t] = np.floor((free[t] + 1e-6) / m_up)
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
        for t in range(S):
            fr_init[t] = free[t]
        fr_init[s0] -= mem[b0]
        best = _INF
        for v in range(V):
            res = reserve[v]
            if res < 0:  # the plain walk, from layer k
                fr, room = ws[0], ws[1]
                size = m_up if k < end_up else m_pref
                for t in range(S):
                    fr[t] = fr_init[t]
                    room[t] = ws[2 if size == m_pref else 3, t]
                room[s0] = np.floor((fr[s0] + 1e-6) / size)
                j0, at, total = k, s0, 0.0
            else:
                f_plain = fr_init[res]
                f_held = f_plain - m_pref
                if f_held < -1e-6:  # the held-back layer does not fit: this variant's Q is inf
                    continue
                j0 = -1  # the layer where this variant might leave the plain route
                size = 0.0
                for j in range(k, L - 1):
                    if rec[5, j] != size:
                        size = rec[5, j]
                        r_plain = np.floor((f_plain + 1e-6) / size)
                        r_held = np.floor((f_held + 1e-6) / size)
                    t = int(rec[0, j])
                    cap = float(L - 1 - j)
                    if r_plain < 1.0 and r_held < 1.0 or (r_plain >= 1.0 and r_held >= 1.0 and
                                                          (r_plain if r_plain <= cap else cap) ==
                                                          (r_held if r_held <= cap else cap)):
                        # the same score on res: the same choice, unless nothing fit and res's memory matters
                        if rec[4, j] == _INF and (f_plain >= m_small - 1e-6) != (f_held >= m_small - 1e-6):
                            j0 = j
                            break
                    elif t == res or rec[4, j] == _INF or r_held >= 1.0 and (
                            hop_from[int(rec[2, j]), res] / (r_held if r_held <= cap else cap)
                            + compute[up if j < end_up else pref, res] <= rec[4, j]):
                        j0 = j  # res might win here (or lose where it won)
                        break
                    if t == res:
                        f_plain -= rec[1, j]
                        f_held -= rec[1, j]
                        r_plain = np.floor((f_plain + 1e-6) / size)
                        r_held = np.floor((f_held + 1e-6) / size)
                if j0 < 0:  # the plain route, then the last layer on res
                    at = int(rec[2, L - 1])
                    total = rec[3, L - 1] + (compute[up if L - 1 < end_up else pref, res] + hop_from[at, res])
                    total += client_out[res]
                    best = total if total < best else best
                    continue
                # this variant's state at layer j0, then its own walk
                fr, room = ws[5], ws[6]
                for t in range(S):
                    fr[t] = fr_init[t]
                for j in range(k, j0):
                    t = int(rec[0, j])
                    fr[t] -= rec[1, j]
                fr[res] = f_held
                size = rec[5, j0]
                for t in range(S):
                    room[t] = np.floor((fr[t] + 1e-6) / size)
                at, total = int(rec[2, j0]), rec[3, j0]
            # the greedy walk over layers j0 .. L - 1 (fr, room: free bytes and whole layers that fit at
            # `size`, per server)
            for j in range(j0, L):
                upped = j < end_up
                w_row = up if upped else pref
                last = j == L - 1
                if last and res >= 0:
                    fr[res] += m_pref
                    room[res] = np.floor((fr[res] + 1e-6) / size)
                if (m_up if upped else m_pref) != size:  # whole layers that fit, all servers anew
                    size = m_up if upped else m_pref
                    for t in range(S):
                        room[t] = np.floor((fr[t] + 1e-6) / size)
                cap = float(L - 1 - j)  # layers left before the last
                t_best, sc_best = 0, _INF
                if last:
                    for t in range(S):
                        r = room[t]
                        if res >= 0:
                            r = 1.0 if t == res else 0.0
                        sc = _INF if r < 1.0 else (compute[w_row, t] + hop_from[at, t]) + client_out[t]
                        if t == 0 or sc < sc_best:
                            t_best, sc_best = t, sc
                else:
                    # servers by increasing compute: a score is >= the server's compute, so the scan stops
                    # at the first compute above the best score (ties: the lowest index, as argmin)
                    for n in range(S):
                        t = order[w_row, n]
                        c = compute[w_row, t]
                        if c > sc_best:
                            break
                        r = room[t]
                        if r >= 1.0:
                            sc = hop_from[at, t] / (r if r <= cap else cap) + c
                            if sc < sc_best or (sc == sc_best and t < t_best):
                                t_best, sc_best = t, sc
                t = t_best
                if sc_best < _INF:
                    cost = compute[w_row, t] + hop_from[at, t]
                    w = size
                else:  # nothing fits: the smallest width, where it fits, else anywhere
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
                    cost = c - (client_out[t] if last else 0.0)
                    w = m_small
                if res < 0:
                    rec[0, j] = t
                    rec[1, j] = w
                    rec[2, j] = at
                    rec[3, j] = total
                    rec[4, j] = sc_best
                    rec[5, j] = size
                total += cost
                fr[t] -= w
                room[t] = np.floor((fr[t] + 1e-6) / size)
                at = t
            total += client_out[at]
            best = total if total < best else best
        q[i] = imm + best


@njit
def write_lookahead(layer, prev, spent, free, mask, out, diff_scale, scale, acts, q, hop_from, compute, mem,
                    client_out, error, cum_up, neg_g, reserve, limit, pref, up, small, order, ws, rec):
    """The observation's lookahead block `out` (n + 1 floats for n actions): per action
    squash(Q(a) - the least Q over the valid actions, diff_scale) (1 where masked), then the least Q
    squashed at `scale` (0 when no action is valid); returns the least Q (0.0 then). acts, q: work
    arrays of n; the rest as `lookahead_q`."""
    n = mask.shape[0]
    nv = 0
    for a in range(n):
        out[a] = 1.0
        if mask[a]:
            acts[nv] = a
            nv += 1
    if nv == 0:
        out[n] = 0.0
        return 0.0
    lookahead_q(layer, prev, spent, free, acts[:nv], q[:nv], hop_from, compute, mem, client_out, error, cum_up,
                neg_g, reserve, limit, pref, up, small, order, ws, rec)
    best = q[0]
    for i in range(1, nv):
        if q[i] < best:
            best = q[i]
    for i in range(nv):
        d = q[i] - best
        out[acts[i]] = d / (abs(d) + diff_scale)
    out[n] = best / (best + scale)
    return best


@njit
def route_features(per, routes, obs_sf, col, scale):
    """obs_sf[t, col + c] for each server t: squash(the least routes[c, t, u] over the servers u with
    per[u] >= 1, scale), 1 where there is none (c = 0: the way back to the client, 1: the hop away)."""
    S = per.shape[0]
    for c in range(2):
        for t in range(S):
            m = _INF
            for u in range(S):
                if per[u] >= 1.0 and routes[c, t, u] < m:
                    m = routes[c, t, u]
            obs_sf[t, col + c] = m / (abs(m) + scale) if m < _INF else 1.0


@njit
def update_mask(l, spent, per_sum, error, min_rest, usable, sb, lp_base, lp_cw, lp_tab, budget_ok_below,
                joint_ok_below, mask_sb):
    """The action mask for layer l by (server, width), the env's rules (its docstring): fits and
    leaves whole smallest-width slots (sb[1] >= layers left - per_sum), keeps the budget with the
    later layers at their least error, and with the LP bound on their error within the bytes they
    can use (usable.sum() - sb[0] + sb[2]; lp_*: `_ErrorTables.lp_*`). Returns whether any is valid."""
    S, B = mask_sb.shape
    L = error.shape[0]
    n_rest = L - l - 1
    need = n_rest - per_sum
    k = l + 1
    total = pairwise_sum(usable)
    base_mem, base_err = lp_base[k, 0], lp_base[k, 1]
    cw = lp_cw[k]
    any_valid = False
    for b in range(B):
        spent_after = spent + error[l, b]
        budget_ok = spent_after + min_rest[k] <= budget_ok_below
        for s in range(S):
            ok = sb[1, s, b] >= need
            if n_rest == 0:
                ok = ok and budget_ok
            elif ok:
                extra = total - sb[0, s, b]
                extra += sb[2, s, b]
                extra -= base_mem
                i = _search_left(cw, extra if extra >= 0.0 else 0.0)
                frac = extra - lp_tab[k, 0, i]
                frac /= lp_tab[k, 2, i]
                frac = frac if frac >= 0.0 else 0.0
                frac = frac if frac <= 1.0 else 1.0
                frac *= lp_tab[k, 3, i]
                frac += lp_tab[k, 1, i]  # the error removed
                ok = ((spent_after if budget_ok else _INF) + (base_err - frac) <= joint_ok_below
                      and extra >= -1e-6)
            mask_sb[s, b] = ok
            any_valid |= ok
    return any_valid


@njit
def _server_terms(s, f, mem, pref, w_min, w_max, L, srv, sb, obs_sf):
    """Server s's mask terms at f free bytes (srv[:, s], sb[:, s]: see `advance`) and its whole layers
    that fit at each width / L in the observation (obs_sf[s, B + 2:2 B + 2], clipped); returns srv[0, s]."""
    B = mem.shape[0]
    per = np.floor(f / w_min + 1e-9)
    u = per * w_max
    u = f if f <= u else u
    srv[0, s] = per
    srv[1, s] = np.floor(f / mem[pref] + 1e-9)
    srv[2, s] = u
    for b in range(B):
        w = mem[b]
        sb[0, s, b] = u
        after = f - w
        after_c = after if after >= 0.0 else 0.0
        per_after = np.floor(after_c / w_min + 1e-9)
        sb[1, s, b] = per_after - per if after >= -1e-6 else -_INF
        u_after = per_after * w_max
        sb[2, s, b] = after_c if after_c <= u_after else u_after
        h = np.floor(f / w + 1e-9) / L
        obs_sf[s, B + 2 + b] = 1.0 if h >= 1.0 else (h if h >= -1.0 else -1.0)
    return per


@njit
def _write_globals(k, spent, eps, budget, rest, srv, error_obs, obs_glob):
    """The observation's globals but L / 100 (obs_glob[4]) with layer k next and `spent` of the budget
    used: layers placed and left / L, budget used and slack / epsilon, budget left / the later layers'
    error at the preferred width - 1, whole preferred-width layers that fit / layers left - 1 (all
    clipped to [-1, 1]), and layer k's squashed errors (error_obs; the last layer's at the end)."""
    L, B, S = error_obs.shape[0], error_obs.shape[1], srv.shape[1]
    used = spent / eps
    slack = ((budget - spent) - rest[0, k]) / eps
    obs_glob[0] = k / L
    obs_glob[1] = (L - k) / L
    obs_glob[2] = 1.0 if used >= 1.0 else (used if used >= -1.0 else -1.0)
    obs_glob[3] = 1.0 if slack >= 1.0 else (slack if slack >= -1.0 else -1.0)
    r = rest[1, k]  # the later layers' error at the preferred width
    ratio = (budget - spent) / r - 1.0 if r > 0 else 1.0
    obs_glob[5] = 1.0 if ratio >= 1.0 else (ratio if ratio >= -1.0 else -1.0)
    slots = 0.0
    for t in range(S):
        slots += srv[1, t]
    ratio = slots / (L - k) - 1.0 if k < L else 1.0
    obs_glob[6] = 1.0 if ratio >= 1.0 else (ratio if ratio >= -1.0 else -1.0)
    row = k if k < L else L - 1
    for c in range(B):
        obs_glob[7 + c] = error_obs[row, c]


@njit
def advance(s, b, l, prev, spent, free, servers, bit_idx, mem, error, pref, scal, srv, sb, rest, routes,
            lp_base, lp_cw, lp_tab, obs_sf, obs_glob, hop_obs, error_obs, mask_sb):
    """Layer l goes to server s at width b (the previous layer on `prev`; `spent`: the budget used
    after it): places it, brings server s's mask terms (srv: whole smallest-width layers, whole
    preferred-width layers, usable bytes; sb: usable bytes, slots gained and usable bytes after a
    layer at each width; scal: w_min, w_max, epsilon, budget, the two budget limits, obs time scale,
    sum of srv[0]) and the observation up to date, then the mask for layer l + 1 (all False at the
    end). Returns whether any action is valid."""
    S, B = mask_sb.shape
    L = error.shape[0]
    servers[l] = s
    bit_idx[l] = b
    free[s] -= mem[b]
    w_min, w_max, eps, budget = scal[0], scal[1], scal[2], scal[3]
    was = srv[0, s]
    per = _server_terms(s, free[s], mem, pref, w_min, w_max, L, srv, sb, obs_sf)
    scal[7] += per - was
    room_changed = (per >= 1.0) != (was >= 1.0)
    for t in range(S):
        obs_sf[t, B] = hop_obs[s, t]
    if prev >= 0:
        obs_sf[prev, 2 * B + 2] = 0.0
    obs_sf[s, 2 * B + 2] = 1.0
    if room_changed:
        route_features(srv[0], routes, obs_sf, 2 * B + 3, scal[6])
    k = l + 1
    _write_globals(k, spent, eps, budget, rest, srv, error_obs, obs_glob)
    if k == L:
        mask_sb[:, :] = False
        return False
    return update_mask(k, spent, scal[7], error, rest[0], srv[2], sb, lp_base, lp_cw, lp_tab, scal[4], scal[5],
                       mask_sb)


@njit
def start_episode(free, mem, error, pref, budget, w_min, w_max, compute, transfer, client_in, client_out, scale,
                  rest, srv, sb, routes, scal, hop_obs, error_obs, obs_sf, obs_glob, lp_base, lp_cw, lp_tab, mask_sb):
    """A new episode's terms (all memory free): srv, sb, routes and scal as `advance` keeps them, the
    first observation (obs_sf, obs_glob; hop_obs: squashed hop times, row s from server s, row S
    from the client; error_obs: squash(error x L / epsilon, 1)) and layer 0's mask (`update_mask`).
    rest: (the later layers' least error, their error at the preferred width) from layer k on."""
    S, B = compute.shape
    L = error.shape[0]
    eps = budget if budget >= 1e-12 else 1e-12
    for s in range(S):
        _server_terms(s, free[s], mem, pref, w_min, w_max, L, srv, sb, obs_sf)
        for b in range(B):
            x = compute[s, b]
            obs_sf[s, b] = x / (abs(x) + scale)
        for t in range(S):
            routes[0, s, t] = transfer[s, t] + client_out[t]
            routes[1, s, t] = transfer[s, t] + (_INF if s == t else 0.0)
            x = transfer[s, t]
            hop_obs[s, t] = x / (abs(x) + scale)
        x = client_in[s]
        hop_obs[S, s] = x / (abs(x) + scale)
        obs_sf[s, B] = hop_obs[S, s]
        x = client_out[s]
        obs_sf[s, B + 1] = x / (abs(x) + scale)
        obs_sf[s, 2 * B + 2] = 0.0
    route_features(srv[0], routes, obs_sf, 2 * B + 3, scale)
    for l in range(L):
        for b in range(B):
            x = error[l, b] * L / eps
            error_obs[l, b] = x / (abs(x) + 1.0)
    scal[0], scal[1], scal[2], scal[3] = w_min, w_max, eps, budget
    scal[4], scal[5] = budget * (1 + 1e-12) + 1e-15, budget * (1 + 1e-9) + 1e-12
    scal[6], scal[7] = scale, pairwise_sum(srv[0])
    obs_glob[4] = L / 100.0 if L / 100.0 <= 1.0 else 1.0
    _write_globals(0, 0.0, eps, budget, rest, srv, error_obs, obs_glob)
    update_mask(0, 0.0, scal[7], error, rest[0], srv[2], sb, lp_base, lp_cw, lp_tab, scal[4], scal[5], mask_sb)


@njit
def instance_arrays(dev, speed, bw, lat, cbw, clat, mem_frac, device_time_s, act_bits, pair_index, fp16_model,
                    device_free, compute, transfer, client, capacity):
    """An instance's arrays from its draws (`_Sampler.draw`): compute = the devices' layer time /
    speed; transfer = latency + activation bits / bandwidth per server pair (0 on the diagonal;
    pair_index: 0 there, else 1 + the pair's draw); client hop likewise; capacity = max(min(memory
    fraction x the fp16 model, the device's free memory), 0)."""
    S, B = compute.shape
    for s in range(S):
        d = dev[s]
        for b in range(B):
            compute[s, b] = device_time_s[d, b] / speed[s]
        for t in range(S):
            i = pair_index[s, t]
            transfer[s, t] = 0.0 if i == 0 else lat[i - 1] + act_bits / bw[i - 1]
        client[s] = clat[s] + act_bits / cbw[s]
        f = mem_frac[s] * fp16_model
        f = f if f <= device_free[d] else device_free[d]
        capacity[s] = f if f >= 0.0 else 0.0


@njit
def fits_uniformly(capacity, mem, rest, n_layers, limit):
    """`uniform_completion_exists` at the start: some width b with whole layers that fit (summed over
    servers) >= n_layers and every layer's error at b (rest[b]) <= limit."""
    for b in range(mem.shape[0]):
        slots = 0.0
        for s in range(capacity.shape[0]):
            slots += np.floor(capacity[s] / mem[b] + 1e-9)
        if slots >= n_layers and rest[b] <= limit:
            return True
    return False


@njit
def _stable_argsort(x, out):
    """out = np.argsort(x, kind="stable") (insertion sort: equal values keep their index order)."""
    n = x.shape[0]
    for i in range(n):
        out[i] = i
    for i in range(1, n):
        j, v = i, out[i]
        while j > 0 and x[v] < x[out[j - 1]]:
            out[j] = out[j - 1]
            j -= 1
        out[j] = v


@njit
def lookahead_tables(compute_s, transfer_s, client_in_s, client_out_s, hop_from, compute, client_out, reserve, order,
                     work):
    """`_Lookahead`'s per-instance tables: hop_from (S + 1, S) = the hops from each server, then from
    the client; compute (B, S) = compute_s transposed; client_out; reserve = -1, then the servers by
    increasing client hop (stable), as many as fit; order[b] = the servers by increasing compute[b]
    (stable). work: S ints."""
    S, B = compute_s.shape
    for s in range(S):
        for t in range(S):
            hop_from[s, t] = transfer_s[s, t]
        hop_from[S, s] = client_in_s[s]
        client_out[s] = client_out_s[s]
        for b in range(B):
            compute[b, s] = compute_s[s, b]
    _stable_argsort(client_out, work)
    reserve[0] = -1
    for v in range(1, reserve.shape[0]):
        reserve[v] = work[v - 1]
    for b in range(B):
        _stable_argsort(compute[b], order[b])
