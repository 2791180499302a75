"""Compiled kernels of TieredService-v0 (`tiered_service.py` says what they model).

Each kernel does, element by element, the floating-point operations of the numpy code it
replaced, in the same order (no fastmath: see `edgellm_gym.jit`), so the env's numbers are
bit for bit those of that code (pinned by tests/test_trajectory_golden.py).

Node queues (`jobs`, `job_user`, `n_jobs`): node n holds its `n_jobs[n]` jobs of the current
window in EDF order in columns 0 .. n_jobs[n] - 1 (zeros after), rows of `jobs`: EDF deadline
(deadline - network time), compute time, finish time (s from the window start), and slack
(EDF deadline - finish) if the job's user is satisfied, +inf if not; `job_user` the user.
"""

from __future__ import annotations

import numpy as np

from ..jit import njit, pairwise_head_sum

# rows of `jobs`
JOB_DEADLINE, JOB_COMPUTE, JOB_FINISH, JOB_SLACK = 0, 1, 2, 3
N_JOB_ROWS = 4
# "nobody would be pushed" as a slack: squashes to exactly 1 (as +inf does by definition) and compares
# with a finite compute time as +inf does (and with the +inf compute of a variant not deployed as false)
NOBODY_PUSHED = 1e300


@njit
def _np_max(a, b):
    """np.maximum of two floats (NaN wins)."""
    if a != a or b != b:
        return a + b
    return a if a >= b else b


@njit
def _np_min(a, b):
    """np.minimum of two floats (NaN wins)."""
    if a != a or b != b:
        return a + b
    return a if a <= b else b


@njit
def request_times(model, device, prompt, output, bits, pair_node, pair_variant, compute):
    """`costs.request_time_s` of every deployed pair for every user, written to compute[u, node, variant].

    model (pairs, 7) int64: n_layers, hidden, kv_heads, head_dim, ffn, vocab, mlp_matrices;
    device (pairs, 3) float64: peak_flops, compute_efficiency, mem_bw_Bps; prompt, output (U,)
    int64 token counts. The operations of costs.request_time_s (prefill + decode + LM head), in
    its order and with its int64 -> float64 conversions."""
    for q in range(pair_node.size):
        n_layers, h, kvh, hd, ffn, vocab, mlp = (model[q, 0], model[q, 1], model[q, 2], model[q, 3],
                                                 model[q, 4], model[q, 5], model[q, 6])
        peak, eff, bw = device[q, 0], device[q, 1], device[q, 2]
        lp = 2 * h * h + 2 * h * (kvh * hd) + mlp * h * ffn  # layer_params
        lwb = lp * bits / 8  # layer_weight_bytes
        kv = 2 * kvh * hd * 2  # kv_bytes_per_token_layer
        f = peak * eff
        # decode_time_s's lines
        a1 = n_layers * 2 * lp / f
        b1 = n_layers * 4 * h / f
        a2 = n_layers * lwb / bw
        b2 = n_layers * kv / bw
        la, ls = a1 - a2, b1 - b2  # _sum_positive_linear's line
        # lm_head_time_s's roofline
        head = _np_max((2 * vocab * h * 1.0) / f, (vocab * h * bits / 8) / bw)
        n, v = pair_node[q], pair_variant[q]
        for u in range(prompt.size):
            s = float(prompt[u])
            g = float(output[u])
            # prefill_time_s
            flop = n_layers * (2 * lp * s + 2 * h * s * s)
            moved = n_layers * (lwb + kv * s)
            prefill = _np_max(flop / f, moved / bw)
            # decode_time_s
            steps = _np_max(g - 1, 0.0)
            c0 = s + 1
            memory = steps * a2 + b2 * (steps * c0 + steps * (steps - 1) / 2)
            last = c0 + steps - 1
            root = -la / ls
            lo = _np_max(c0, np.floor(root) + 1) if ls > 0 else c0
            hi = _np_min(last, np.ceil(root) - 1) if ls < 0 else last
            if ls == 0:
                lo = c0
                hi = last if la > 0 else c0 - 1
            k = hi - lo + 1
            if k < 0:  # np.clip(k, 0, None)
                k = 0.0
            out = k * la + ls * (k * lo + k * (k - 1) / 2)
            decode = memory + (out if k > 0 else 0.0)
            compute[u, n, v] = (prefill + decode) + g * head


@njit
def acc_column(m):
    """The column of variant 0's "meets the user's accuracy" flag (1.0 or 0.0) in a user row of
    `user_obs` (the kernels read the flags there)."""
    return 5 + 2 * m


@njit
def user_tables(min_acc, deadline, prompt, output, net, compute, accuracy, k, n_windows, window_s, prompt_max,
                output_max, edf, user_obs):
    """Per user, the episode's fixed tables: edf[u, n] = deadline - network time; user_obs[u] =
    the observation's rows of the user (float32, clipped to [-1, 1]: own features, the rest of its
    window per accuracy level, window index, accuracy met and margin per variant, position in the
    window) then its squashed compute time per pair (1 where not deployed)."""
    n_users, n_nodes = net.shape
    m = accuracy.size
    f = user_obs.shape[1] - n_nodes * m
    acc_at = acc_column(m)
    for u in range(n_users):
        for n in range(n_nodes):
            edf[u, n] = deadline[u] - net[u, n]
            for v in range(m):
                c = compute[u, n, v]
                user_obs[u, f + n * m + v] = 1.0 if np.isinf(c) else c / (abs(c) + window_s)
    row = np.empty(f)
    cnt = np.zeros(m, dtype=np.int64)  # users still to come in the window, per accuracy level
    dmin = np.empty(m)  # their earliest deadline per level
    for u in range(n_users - 1, -1, -1):  # backwards: the rest of the window is known
        if u % k == k - 1:  # last user of its window
            cnt[:] = 0
            dmin[:] = np.inf
        level = 0  # variants below the user's minimum accuracy
        for v in range(m):
            level += accuracy[v] < min_acc[u]
        level = min(level, m - 1)
        d = deadline[u]
        row[0] = min_acc[u]
        row[1] = d / (abs(d) + window_s)
        row[2] = prompt[u] / prompt_max
        row[3] = output[u] / output_max
        for v in range(m):
            row[4 + v] = cnt[v] / k
            x = dmin[v]
            row[4 + m + v] = 1.0 if np.isinf(x) else x / (abs(x) + window_s)
            row[acc_at + v] = 1.0 if accuracy[v] >= min_acc[u] else 0.0
            row[acc_at + m + v] = accuracy[v] - min_acc[u]
        row[4 + 2 * m] = (u // k) / n_windows
        row[acc_at + 2 * m] = (u % k) / k
        for j in range(f):
            user_obs[u, j] = min(max(np.float32(row[j]), np.float32(-1.0)), np.float32(1.0))
        cnt[level] += 1
        if d < dmin[level]:
            dmin[level] = d


@njit
def serve(a, u, compute, edf, user_obs, used, assignment, jobs, job_user, n_jobs):
    """Decide user u: action a = node * M + variant serves it there, a = N * M rejects it. A served
    user joins its node's queue after the jobs of EDF deadline <= its own; the finish times and
    slacks from there on are recomputed. Returns the change in the number of satisfied users."""
    n_nodes, m = compute.shape[1], compute.shape[2]
    if a == n_nodes * m:
        assignment[u] = -1
        return 0
    acc_at = acc_column(m)
    n, v = a // m, a % m
    assignment[u] = a
    p = compute[u, n, v]
    used[n] += p
    d = edf[u, n]
    c = n_jobs[n]
    before = 0
    i = 0
    for j in range(c):
        if jobs[JOB_SLACK, n, j] < np.inf:
            before += 1
        if jobs[JOB_DEADLINE, n, j] <= d:
            i = j + 1
    for j in range(c, i, -1):
        for r in range(N_JOB_ROWS):
            jobs[r, n, j] = jobs[r, n, j - 1]
        job_user[n, j] = job_user[n, j - 1]
    jobs[JOB_DEADLINE, n, i] = d
    jobs[JOB_COMPUTE, n, i] = p
    job_user[n, i] = u
    c += 1
    n_jobs[n] = c
    f = jobs[JOB_FINISH, n, i - 1] if i else 0.0
    for j in range(i, c):
        f += jobs[JOB_COMPUTE, n, j]
        jobs[JOB_FINISH, n, j] = f
        slack = jobs[JOB_DEADLINE, n, j] - f
        w = job_user[n, j]
        ok = user_obs[w, acc_at + assignment[w] % m] == 1.0  # the variant meets the user's accuracy
        jobs[JOB_SLACK, n, j] = slack if ok and slack >= 0 else np.inf
    after = 0
    for j in range(c):
        if jobs[JOB_SLACK, n, j] < np.inf:
            after += 1
    return after - before


@njit
def observe(u, window_s, compute, edf, user_obs, used, jobs, n_jobs, obs, mask):
    """The mask and observation for user u (all pairs masked and a zero observation once u is past
    the last user). Per node: the compute queued before u in EDF order (its first i jobs, i = how
    many have an EDF deadline <= u's) and the least slack of the satisfied jobs after them
    (NOBODY_PUSHED if none); per pair: slack if assigned now (EDF deadline - compute ahead -
    compute; -1e30 where not deployed), keeps the node's satisfied users satisfied, earns +1 now.
    Times squashed as x / (|x| + window_s)."""
    n_users, n_nodes, m = compute.shape
    nm = n_nodes * m
    if u == n_users:
        obs[:] = 0.0
        mask[:nm] = False
        return
    f = user_obs.shape[1] - nm
    acc_at = acc_column(m)
    k = jobs.shape[2]
    obs[:f] = user_obs[u, :f]
    used_at = f + 1  # obs[f]: some pair earns +1 now
    ahead_at = used_at + n_nodes
    push_at = ahead_at + n_nodes
    left_at = push_at + n_nodes
    keep_at = left_at + nm
    compute_at = keep_at + nm
    earns_at = compute_at + nm
    any_earns = False
    for n in range(n_nodes):
        room = window_s - used[n]
        d = edf[u, n]
        c = n_jobs[n]
        i = 0
        while i < c and jobs[JOB_DEADLINE, n, i] <= d:
            i += 1
        ahead = pairwise_head_sum(jobs[JOB_COMPUTE, n], i, k) if i else 0.0
        push = NOBODY_PUSHED
        for j in range(i, c):
            if jobs[JOB_SLACK, n, j] < push:
                push = jobs[JOB_SLACK, n, j]
        obs[used_at + n] = used[n] / window_s
        obs[ahead_at + n] = ahead / (abs(ahead) + window_s)
        obs[push_at + n] = push / (abs(push) + window_s)
        for v in range(m):
            q = n * m + v
            p = compute[u, n, v]
            valid = p <= room  # compute is +inf where not deployed
            mask[q] = valid
            keep = p <= push
            left = ((d - p) if p != np.inf else -1e30) - ahead
            earns = valid and keep and left >= 0 and user_obs[u, acc_at + v] == 1.0
            any_earns |= earns
            obs[left_at + q] = left / (abs(left) + window_s)
            obs[keep_at + q] = 1.0 if keep else 0.0
            obs[compute_at + q] = user_obs[u, f + q]
            obs[earns_at + q] = 1.0 if earns else 0.0
    obs[f] = 1.0 if any_earns else 0.0


@njit
def step(a, u, observe_next, window_s, compute, edf, user_obs, used, assignment, jobs, job_user, n_jobs, obs, mask):
    """`serve` user u with action a, then (if observe_next) `observe` user u + 1, in one call.
    Returns `serve`'s change in satisfied users."""
    delta = serve(a, u, compute, edf, user_obs, used, assignment, jobs, job_user, n_jobs)
    if observe_next:
        observe(u + 1, window_s, compute, edf, user_obs, used, jobs, n_jobs, obs, mask)
    return delta


@njit
def window_outcome(jobs, job_user, n_jobs, net, response, satisfied):
    """Response time (network + finish) and satisfaction of the users queued on the nodes."""
    for n in range(n_jobs.size):
        for j in range(n_jobs[n]):
            w = job_user[n, j]
            response[w] = net[w, n] + jobs[JOB_FINISH, n, j]
            satisfied[w] = jobs[JOB_SLACK, n, j] < np.inf


@njit
def close_window(jobs, job_user, n_jobs, net, used, response, satisfied):
    """`window_outcome`, then empty the queues and the nodes' used compute (a new window)."""
    window_outcome(jobs, job_user, n_jobs, net, response, satisfied)
    jobs[:] = 0.0
    job_user[:] = 0
    n_jobs[:] = 0
    used[:] = 0.0
