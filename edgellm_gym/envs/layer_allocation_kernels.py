"""LayerAllocation-v0's step kernels: the numeric work of a step, in place on the env's arrays.

The env (`layer_allocation.py`) says what a step means and where its numbers come from; these
kernels do it in one compiled call per step, on arrays the env allocates at `reset`. Every
float operation is the one the env's former Python code did, in the same order (so the
trajectories are the same, bit for bit); `fcim_chosen_reward` is `edgellm_gym.auction`'s.

Array layout (the names below index them):

- `sf` float64 scalars, `si` int64 scalars: the current task and the scenario's constants;
- `dev_f` float64 (rows, N), `dev_i` int64 (rows, N): one row per per-device quantity. The
  rows PAY, BID_PAY, CHAIN and TAKEN are in pipeline order (entry j: the task's j-th device);
- `tf` float64 (tasks, columns), `ti` int64 (tasks, columns): one row per task, its fixed
  quantities (arrival, budget, per-layer time of each device, hop and client times, ...) and
  its outcome (completion, payment, ...);
- `obs_base` float32 (tasks, obs size): the fixed observation features of each task;
  `hop_obs` float32 (tasks, N, N): the squashed hop time from device i to j;
  `obs` float32 (obs size), `mask` bool (N + 1): the env's observation and action mask.
"""

from __future__ import annotations

from ..jit import njit

# sf: float scalars
(F_NOW, F_BUDGET, F_DEADLINE, F_ARRIVAL, F_PAID, F_W_LATENCY, F_W_PAYMENT, F_W_DEVICES, F_REJECT_PENALTY,
 F_MISS_PENALTY, F_ALPHA, F_BETA, F_GAMMA, F_DELTA) = range(14)
N_SF = 14
# si: int scalars (I_FCIM: payment rule is "fcim"; I_OWN_PRICE: gamma > alpha + beta; I_FIRST_HELD: every
# task before it has released its memory)
(I_TASK, I_REMAINING, I_ROW, I_LAYER_BYTES, I_N_CHAIN, I_ROUNDS, I_POSITIVE, I_L, I_FCIM, I_OWN_PRICE,
 I_FIRST_HELD) = range(11)
N_SI = 11
# dev_f rows: busy until, bid time and price, pending payment and bid payment (pipeline order), layers and
# payments per device over the episode, rental rate per second
DF_BUSY, DF_BID_T, DF_BID_P, DF_PAY, DF_BID_PAY, DF_LPD, DF_PPD, DF_RATE = range(8)
N_DF = 8
# dev_i rows: free bytes, capacity, bid layers (before any was used), chain and layers taken (pipeline
# order), FCIM-feasible bid (0/1), in the task's FCIM pool (0/1)
DI_FREE, DI_CAP, DI_BIDS, DI_CHAIN, DI_TAKEN, DI_FEASIBLE, DI_POOL = range(7)
N_DI = 7
# tf columns; then per device: TF_PER (N columns, one layer's compute time), client time (N), hop (N x N)
(TF_ARRIVAL, TF_IDEAL, TF_BUDGET, TF_DEADLINE, TF_COMPLETION, TF_WAIT, TF_COMPUTE, TF_COMM,
 TF_PAYMENT) = range(9)
TF_PER = 9
# ti columns; then TI_HOLD: N columns, the bytes the task holds on each device while TI_HELD is 1
TI_LAYER_BYTES, TI_OUTCOME, TI_N_USED, TI_HELD = range(4)
TI_HOLD = 4

N_DEVICE_FEATURES = 9
ALLOCATED, REJECTED_BY_POLICY, REJECTED_NO_CAPACITY = 1, 2, 3  # task outcomes (0: pending)
OK, ENDED, NEED_SUMS = 0, 1, 2  # codes `step` returns


def tf_columns(n: int) -> int:
    """Columns of `tf` for n devices."""
    return TF_PER + 2 * n + n * n


@njit
def fcim_chosen_reward(p, l, t, feasible, total_layers, pool, remaining, chosen, alpha, beta, gamma, delta):
    """`auction.fcim_chosen_reward`, bit for bit, on arrays (pool, feasible: 0/1 per bid, in bid order)."""
    if gamma > alpha + beta and remaining >= l[chosen]:
        return p[chosen]
    n = p.shape[0]
    runner_up = False
    for i in range(n):
        if pool[i] and feasible[i] and i != chosen:
            runner_up = True
            break
    if not runner_up:
        return p[chosen]
    # ratios a = L / l, b = T / l, c = P / l over the pool (l at least 1); Python's min, max and sum
    lo_a = hi_a = lo_b = hi_b = lo_c = hi_c = 0.0
    sum_c = 0.0
    count = 0
    for i in range(n):
        if not pool[i]:
            continue
        s = l[i] if l[i] > 1 else 1
        a, b, c = total_layers / s, t[i] / s, p[i] / s
        if count == 0:
            lo_a = hi_a = a
            lo_b = hi_b = b
            lo_c = hi_c = c
        else:
            if a < lo_a:
                lo_a = a
            if a > hi_a:
                hi_a = a
            if b < lo_b:
                lo_b = b
            if b > hi_b:
                hi_b = b
            if c < lo_c:
                lo_c = c
            if c > hi_c:
                hi_c = c
        sum_c += c
        count += 1
    span_a, span_b, span_c = hi_a - lo_a, hi_b - lo_b, hi_c - lo_c
    # the runner-up: the best-scored feasible other bid (strict <: the earlier on ties)
    w2 = -1
    s2 = float("inf")
    for i in range(n):
        if not pool[i] or i == chosen or not feasible[i]:
            continue
        s = l[i] if l[i] > 1 else 1
        a, b, c = total_layers / s, t[i] / s, p[i] / s
        score = (alpha * (0.0 if hi_a == lo_a else (a - lo_a) / span_a)
                 + beta * (0.0 if hi_b == lo_b else (b - lo_b) / span_b)
                 + gamma * (0.0 if hi_c == lo_c else (c - lo_c) / span_c))
        if score < s2:
            w2, s2 = i, score
    # fcim_winner_reward
    p1, l1 = p[chosen], l[chosen]
    if w2 < 0:
        return p1
    p2, l2 = p[w2], l[w2]
    if gamma > alpha + beta:
        return p2 / l2 * remaining if remaining < l1 else p1
    if p1 / l1 <= lo_c:
        return p2 / l2 * remaining
    m = p2 * l1 / l2
    if p1 > m:
        m = p1
    return m - delta * l1 * (p1 / l1 - sum_c / count)


@njit
def _release(now, upto, si, dev_i, tf, ti):
    """Give back the memory of the tasks before `upto` that have completed by `now`."""
    free, n = dev_i[DI_FREE], dev_i.shape[1]
    first = si[I_FIRST_HELD]
    advance = True
    for t in range(first, upto):
        if ti[t, TI_HELD] and tf[t, TF_COMPLETION] <= now:
            for d in range(n):
                free[d] += ti[t, TI_HOLD + d]
            ti[t, TI_HELD] = 0
        if advance:
            if ti[t, TI_HELD]:
                advance = False
            else:
                first = t + 1
    si[I_FIRST_HELD] = first


@njit
def _open_task(task, sf, si, dev_f, dev_i, tf, obs_base, obs, mask):
    """Bids (layers, time, price), FCIM feasibility and pool, the mask and the observation of `task`,
    which fits (what they mean: the comment above the env's `_step`)."""
    n, L = dev_i.shape[1], si[I_L]
    si[I_REMAINING] = L
    si[I_ROW] = task
    budget = sf[F_BUDGET] = tf[task, TF_BUDGET]
    deadline = sf[F_DEADLINE] = tf[task, TF_DEADLINE]
    now = sf[F_ARRIVAL] = sf[F_NOW]
    sf[F_PAID] = 0.0
    ideal = tf[task, TF_IDEAL]
    slack = deadline - now
    free, cap, bid = dev_i[DI_FREE], dev_i[DI_CAP], dev_i[DI_BIDS]
    obs[:] = obs_base[task]
    for i in range(n):
        x = bid[i]
        t = x * tf[task, TF_PER + i]
        p = t * dev_f[DF_RATE, i]
        dev_f[DF_BID_T, i] = t
        dev_f[DF_BID_P, i] = p
        fe = p <= budget and t <= slack
        dev_i[DI_FEASIBLE, i] = fe
        b = dev_f[DF_BUSY, i]
        w = b - now if b > now else 0.0
        o = i * N_DEVICE_FEATURES
        obs[o + 3] = free[i] / cap[i]
        obs[o + 4] = x / L
        obs[o + 6] = w / (w + ideal)
        obs[o + 8] = 1.0 if x >= 1 and fe else 0.0
        dev_i[DI_POOL, i] = x >= 1
        mask[i] = x >= 1
    mask[n] = True


@njit
def begin_task(task, sf, si, dev_f, dev_i, tf, ti, obs_base, obs, mask):
    """Move to `task`'s arrival, release completed tasks' memory, bid; reject (no capacity) the tasks
    that do not fit and open the first that does. Returns the penalties; task -1 when none is left."""
    n_tasks, n, L = tf.shape[0], dev_i.shape[1], si[I_L]
    free, bid = dev_i[DI_FREE], dev_i[DI_BIDS]
    penalty = 0.0
    si[I_N_CHAIN] = 0
    while task < n_tasks:
        now = sf[F_NOW] = tf[task, TF_ARRIVAL]
        _release(now, task, si, dev_i, tf, ti)
        si[I_TASK] = task
        lb = si[I_LAYER_BYTES] = ti[task, TI_LAYER_BYTES]
        total = 0
        for i in range(n):
            x = free[i] // lb
            bid[i] = x if x < L else L
            total += bid[i]
        if total >= L:
            _open_task(task, sf, si, dev_f, dev_i, tf, obs_base, obs, mask)
            return penalty
        ti[task, TI_OUTCOME] = REJECTED_NO_CAPACITY
        penalty -= sf[F_REJECT_PENALTY]
        task += 1
    si[I_TASK] = -1
    si[I_REMAINING] = 0
    bid[:] = 0
    dev_f[DF_BID_T] = 0.0
    dev_f[DF_BID_P] = 0.0
    obs[:] = 0.0
    mask[:n] = False
    mask[n] = True
    return penalty


@njit
def _place(d, sf, si, dev_f, dev_i, tf, hop_obs, obs, mask):
    """Append device `d` to the task's pipeline with its payment (paid at commit); update the mask and
    observation unless this completes the task. Returns 0.0 (the reward of a placement)."""
    n, L, task = dev_i.shape[1], si[I_L], si[I_TASK]
    bids, prices = dev_i[DI_BIDS], dev_f[DF_BID_P]
    layers, remaining = bids[d], si[I_REMAINING]
    take = layers if layers < remaining else remaining
    price = prices[d]
    bid_pay = price / layers * take
    if not si[I_FCIM]:
        pay = bid_pay
    elif si[I_OWN_PRICE] and remaining >= layers:  # fcim_chosen_reward's first shortcut
        pay = price
    else:
        pay = fcim_chosen_reward(prices, bids, dev_f[DF_BID_T], dev_i[DI_FEASIBLE], L, dev_i[DI_POOL], remaining,
                                 d, sf[F_ALPHA], sf[F_BETA], sf[F_GAMMA], sf[F_DELTA])
    k = si[I_N_CHAIN]
    dev_f[DF_PAY, k] = pay
    dev_f[DF_BID_PAY, k] = bid_pay
    dev_i[DI_CHAIN, k] = d
    dev_i[DI_TAKEN, k] = take
    si[I_N_CHAIN] = k + 1
    free = dev_i[DI_FREE, d] = dev_i[DI_FREE, d] - take * si[I_LAYER_BYTES]
    remaining = si[I_REMAINING] = remaining - take
    if remaining == 0:  # the task commits now: the next one brings its own pool, mask and observation
        return 0.0
    dev_i[DI_POOL, d] = 0
    mask[d] = False
    o, g = d * N_DEVICE_FEATURES, n * N_DEVICE_FEATURES
    obs[o + 3] = free / dev_i[DI_CAP, d]
    obs[o + 4] = 0.0
    obs[o + 5] = 1.0
    for j in range(n):
        obs[j * N_DEVICE_FEATURES + 7] = hop_obs[task, d, j]
    obs[o + 8] = 0.0
    obs[g + 3] = remaining / L
    obs[g + 4] = (k + 1) / n
    pays = sf[F_PAID] = sf[F_PAID] + pay  # the sum of the pending payments, in order
    obs[g + 5] = pays / (pays + sf[F_BUDGET])
    return 0.0


@njit
def _sums(si, dev_f, dev_i, tf):
    """Compute time, communication time and payment of the complete pipeline, each summed in order."""
    n, t, k = dev_i.shape[1], si[I_TASK], si[I_N_CHAIN]
    chain, taken = dev_i[DI_CHAIN], dev_i[DI_TAKEN]
    hop0 = TF_PER + 2 * n
    compute = 0.0
    for j in range(k):
        compute += tf[t, TF_PER + chain[j]] * taken[j]
    comm = 0.0
    for j in range(k - 1):
        comm += tf[t, hop0 + chain[j] * n + chain[j + 1]]
    comm = comm + tf[t, TF_PER + n + chain[k - 1]]
    paid = 0.0
    for j in range(k):
        paid += dev_f[DF_PAY, j]
    return compute, comm, paid


@njit
def _commit(compute, comm, paid, sf, si, dev_f, dev_i, tf, ti):
    """Schedule the complete pipeline (start when all its devices are free), pay its devices, record the
    task's outcome; returns its reward."""
    n, t, k = dev_i.shape[1], si[I_TASK], si[I_N_CHAIN]
    chain, taken = dev_i[DI_CHAIN], dev_i[DI_TAKEN]
    busy = dev_f[DF_BUSY]
    now = sf[F_NOW]
    start = now
    for j in range(k):
        if busy[chain[j]] > start:
            start = busy[chain[j]]
    done = start + compute + comm
    lb = si[I_LAYER_BYTES]
    positive = 0
    for j in range(k):
        d = chain[j]
        busy[d] = done
        ti[t, TI_HOLD + d] = taken[j] * lb
        dev_f[DF_LPD, d] += taken[j]
        dev_f[DF_PPD, d] += dev_f[DF_PAY, j]
        if dev_f[DF_PAY, j] >= dev_f[DF_BID_PAY, j] * (1 - 1e-12):
            positive += 1
    ti[t, TI_HELD] = 1
    ti[t, TI_OUTCOME] = ALLOCATED
    ti[t, TI_N_USED] = k
    tf[t, TF_COMPLETION] = done
    tf[t, TF_WAIT] = start - now
    tf[t, TF_COMPUTE] = compute
    tf[t, TF_COMM] = comm
    tf[t, TF_PAYMENT] = paid
    si[I_ROUNDS] += k
    si[I_POSITIVE] += positive
    reward = -(sf[F_W_LATENCY] * (done - now) / tf[t, TF_IDEAL] + sf[F_W_PAYMENT] * paid / sf[F_BUDGET]
               + sf[F_W_DEVICES] * k)
    if done > sf[F_DEADLINE]:
        reward -= sf[F_MISS_PENALTY]
    return reward


@njit
def step(a, sf, si, dev_f, dev_i, tf, ti, obs_base, hop_obs, obs, mask):
    """One valid action `a` (a device, or N: reject): place / commit / reject, then open the next task.
    Returns (reward, now_s, task, code): code ENDED (nothing done: the episode had ended) or NEED_SUMS
    (the pipeline is complete with 8 devices or more: the caller sums it as numpy does and calls
    `commit_with_sums`)."""
    task = si[I_TASK]
    if task < 0:
        return 0.0, sf[F_NOW], task, ENDED
    if a == dev_i.shape[1]:
        lb = si[I_LAYER_BYTES]
        for j in range(si[I_N_CHAIN]):  # release what the task holds
            dev_i[DI_FREE, dev_i[DI_CHAIN, j]] += dev_i[DI_TAKEN, j] * lb
        ti[task, TI_OUTCOME] = REJECTED_BY_POLICY
        reward = -sf[F_REJECT_PENALTY]
        reward += begin_task(task + 1, sf, si, dev_f, dev_i, tf, ti, obs_base, obs, mask)
    else:
        reward = _place(a, sf, si, dev_f, dev_i, tf, hop_obs, obs, mask)
        if si[I_REMAINING] == 0:
            if si[I_N_CHAIN] >= 8:
                return reward, sf[F_NOW], task, NEED_SUMS
            compute, comm, paid = _sums(si, dev_f, dev_i, tf)
            reward += _commit(compute, comm, paid, sf, si, dev_f, dev_i, tf, ti)
            reward += begin_task(task + 1, sf, si, dev_f, dev_i, tf, ti, obs_base, obs, mask)
    return reward, sf[F_NOW], si[I_TASK], OK


@njit
def commit_with_sums(reward, compute, comm, paid, sf, si, dev_f, dev_i, tf, ti, obs_base, obs, mask):
    """The end of `step` after NEED_SUMS: commit with the given sums, open the next task; the reward."""
    task = si[I_TASK]
    reward += _commit(compute, comm, paid, sf, si, dev_f, dev_i, tf, ti)
    reward += begin_task(task + 1, sf, si, dev_f, dev_i, tf, ti, obs_base, obs, mask)
    return reward
