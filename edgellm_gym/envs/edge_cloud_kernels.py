"""EdgeCloudOffload-v0's step, compiled: dispatch, idle energy, bandwidth chain, next request.

The env keeps its whole simulation in two flat buffers, `f` (float64) and `x` (int64), cut
into named parts (`F_*`, `X_*`): a numba call costs ~40 ns per array argument, so a step is
one call `step(a, f, x, obs)` on three arrays. `x` starts with a header (offset, rows, cols per
part) that `part` reads; a kernel names all parts at once (`sim`: a namedtuple of views) and the
env holds the same named views as numpy arrays (`views`). Columns of a part are named by the
constants below. Every float operation is the one (and in the order) of the Python float code
these kernels replace (the env's earlier Python step), so results are bit-identical.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..jit import inline, njit

# float parts of `f`
F_CLOCK, F_UNITS, F_REQ, F_TABLE, F_BW, F_LEVEL_BPS, F_CDF, F_TRACE_T, F_TRACE_BPS, F_DRAWS = range(10)
# int parts of `x` (after the header)
X_COUNT, X_UNITS, X_REQ, X_HOSTED, X_MASK = range(10, 15)
N_PARTS = 15

# F_CLOCK: time, energy totals and scenario constants
(C_NOW, C_T0, C_E_TRAN, C_E_INFER, C_E_IDLE, C_TIME_SCALE, C_ENERGY_SCALE, C_W_IDLE, C_MISS_PENALTY, C_SLOT_S,
 C_PERIOD) = range(11)
N_CLOCK = 11
# X_COUNT: counters. K_CODE: the mask as bits (-1 above 62 actions); K_DRAW_POS/END: the
# pre-drawn uniforms of F_DRAWS not yet used; K_PENDING: the slot a bandwidth move waits for (its
# uniforms come from `finish`)
K_I, K_SLOT, K_COMPLETED, K_DRAW_POS, K_DRAW_END, K_PENDING, K_CODE, K_TRACE = range(8)
N_COUNT = 8
# F_UNITS rows: M edge servers then the G cloud GPUs; per-action columns use rows 0..M (row M,
# the first GPU's, stands for the cloud action), per-edge columns rows 0..M-1
(U_P_IDLE, U_FREE_AT,  # per unit
 U_P_TX, U_P_BUSY, U_LINK_LAT, U_TRAN_W, U_TOP, U_READY, U_S_PER_BYTE, U_BW_SHARE, U_TRACE_OFFSET,  # per action
 U_MEM_FREE0, U_MEM_TOTAL, U_KV_RESERVED) = range(14)  # per edge server
N_UNIT_COLS = 14
# X_UNITS: each unit's job list (requests linked through RI_NEXT, first come first served)
UI_HEAD, UI_TAIL, UI_COUNT, UI_LEVEL = range(4)  # UI_LEVEL: bandwidth level, rows 0..M
# F_REQ per request; then M+1 compute times, M+1 weighted inference energies, its observation part
R_ARRIVAL, R_KV, R_REQUIREMENT, R_UP, R_DOWN, R_START, R_END, R_LATENCY = range(8)
R_COMPUTE = 8
# X_REQ per request
RI_SERVICE, RI_ACTION, RI_UNIT, RI_NEXT = range(4)
# F_TABLE columns (EdgeCloudState.table)
BACKLOG, UPLOAD, WAIT, COMPUTE, DOWNLOAD, LATENCY, ENERGY, FREE_MEM = range(8)
N_ACTION_FEATURES = 7
MAX_CODE_ACTIONS = 62  # masks of more actions are read from X_MASK (K_CODE = -1)


def allocate(f_shapes: list[tuple[int, int]], x_shapes: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """Zeroed `f` and `x` holding parts of the given (rows, cols), the header of `x` filled."""
    header = 3 * N_PARTS
    f = np.zeros(sum(r * c for r, c in f_shapes))
    x = np.zeros(header + sum(r * c for r, c in x_shapes), dtype=np.int64)
    offset = 0
    for p, (r, c) in enumerate(f_shapes):
        x[3 * p: 3 * p + 3] = offset, r, c
        offset += r * c
    offset = header
    for p, (r, c) in enumerate(x_shapes, start=len(f_shapes)):
        x[3 * p: 3 * p + 3] = offset, r, c
        offset += r * c
    return f, x


# the parts as named arrays, one view each (1-row parts as 1-d): what the kernels below work on
Sim = namedtuple("Sim", ["clock", "units", "req", "table", "bw", "level_bps", "cdf", "trace_t", "trace_bps", "draws",
                         "count", "units_i", "req_i", "hosted", "mask"])
ONE_ROW = (F_CLOCK, F_BW, F_TRACE_T, F_DRAWS, X_COUNT, X_MASK)  # the parts `sim` gives as 1-d


@inline
def part(buf, x, p):
    """Part `p` of `buf` (`f` or `x`) as a (rows, cols) view (as_strided: numba's reshape costs ~30 ns)."""
    o, r, c = x[3 * p], x[3 * p + 1], x[3 * p + 2]
    return as_strided(buf[o: o + r * c], shape=(r, c), strides=(c * buf.itemsize, buf.itemsize))


@inline
def sim(f, x):
    """Every part of `f` and `x`, named."""
    return Sim(part(f, x, F_CLOCK)[0], part(f, x, F_UNITS), part(f, x, F_REQ), part(f, x, F_TABLE),
               part(f, x, F_BW)[0], part(f, x, F_LEVEL_BPS), part(f, x, F_CDF), part(f, x, F_TRACE_T)[0],
               part(f, x, F_TRACE_BPS), part(f, x, F_DRAWS)[0], part(x, x, X_COUNT)[0], part(x, x, X_UNITS),
               part(x, x, X_REQ), part(x, x, X_HOSTED), part(x, x, X_MASK)[0])


def views(f: np.ndarray, x: np.ndarray) -> Sim:
    """`sim` in Python: the same named views, numpy arrays sharing the buffers' memory."""
    part_py = getattr(part, "py_func", part)  # (`part` itself under NUMBA_DISABLE_JIT=1)
    parts = (part_py(f if p < X_COUNT else x, x, p) for p in range(N_PARTS))
    return Sim(*(v[0] if p in ONE_ROW else v for p, v in enumerate(parts)))


@njit
def _set_bandwidth(s, a, value):
    """Link `a` now carries `value` bit/s: its seconds per byte and observed share follow."""
    s.bw[a] = value
    s.units[a, U_S_PER_BYTE] = 8.0 / value
    s.units[a, U_BW_SHARE] = value / s.units[a, U_TOP]


@njit
def _trace_bandwidth(s, t):
    """Every link's bandwidth at time `t` from the trace, each read from its own offset (looping)."""
    times = s.trace_t
    for a in range(s.bw.shape[0]):
        pos = np.mod(t - s.clock[C_T0] + s.units[a, U_TRACE_OFFSET], s.clock[C_PERIOD])
        lo, hi = 0, times.shape[0]  # the last row whose time is <= pos (searchsorted right - 1)
        while lo < hi:
            mid = (lo + hi) // 2
            if pos < times[mid]:
                hi = mid
            else:
                lo = mid + 1
        _set_bandwidth(s, a, s.trace_bps[a, lo - 1])


@njit
def _move_chain(s, slot, draws):
    """Move every link's level chain on to bandwidth slot `slot`, one uniform of `draws` per
    link: its next level is the number of entries of its P^k cumulative row <= the uniform."""
    n_levels = s.level_bps.shape[1]
    k = slot - s.count[K_SLOT]
    k_max = s.cdf.shape[0] // n_levels - 1  # MAX_CHAIN_STEPS: the chain has mixed by then
    if k > k_max:
        k = k_max
    s.count[K_SLOT] = slot
    for a in range(s.bw.shape[0]):
        row = k * n_levels + s.units_i[a, UI_LEVEL]
        level = 0
        while level < n_levels and s.cdf[row, level] <= draws[a]:
            level += 1
        s.units_i[a, UI_LEVEL] = level
        _set_bandwidth(s, a, s.level_bps[a, level])


@njit
def _squash32(v):
    """v / (v + 1) in float32, rounding v first (the observation's float32 arithmetic)."""
    w = np.float32(v)
    return w / (w + np.float32(1.0))


@njit
def _prepare(s, obs):
    """The current request seen from every action: the table row (backlog, upload, wait,
    compute, download, latency, weighted energy, free memory), validity (hosted and KV cache
    fits; the cloud always) and the observation. Returns the mask code (bit a: action a valid)."""
    clock, units, req, table, hosted = s.clock, s.units, s.req, s.table, s.hosted
    m = hosted.shape[1]
    i = s.count[K_I]
    k = s.req_i[i, RI_SERVICE]
    now, kv, requirement = clock[C_NOW], req[i, R_KV], req[i, R_REQUIREMENT]
    up_bytes, down_bytes = req[i, R_UP], req[i, R_DOWN]
    time_scale, energy_scale = clock[C_TIME_SCALE], clock[C_ENERGY_SCALE]
    head = obs.shape[0] - N_ACTION_FEATURES * (m + 1)
    obs_col = R_COMPUTE + 2 * (m + 1)
    for c in range(head):
        obs[c] = req[i, obs_col + c]
    code = 0
    for a in range(m + 1):
        s_per_byte, link_latency = units[a, U_S_PER_BYTE], units[a, U_LINK_LAT]
        tx = s_per_byte * up_bytes
        upload = link_latency + tx
        download = s_per_byte * down_bytes + link_latency
        backlog = units[a, U_READY] - now
        if backlog < 0.0:
            backlog = 0.0
        wait = backlog - upload
        if wait < 0.0:
            wait = 0.0
        compute = req[i, R_COMPUTE + a]
        latency = ((upload + wait) + compute) + download
        energy = units[a, U_TRAN_W] * tx + req[i, R_COMPUTE + m + 1 + a]
        if a < m:
            free = units[a, U_MEM_FREE0] - units[a, U_KV_RESERVED]
            valid = free >= kv and hosted[k, a] != 0
            free_share = free / units[a, U_MEM_TOTAL]
        else:  # the cloud: always valid, its memory not modelled
            free, valid, free_share = np.inf, True, 1.0
        table[a, BACKLOG], table[a, UPLOAD], table[a, WAIT], table[a, COMPUTE] = backlog, upload, wait, compute
        table[a, DOWNLOAD], table[a, LATENCY], table[a, ENERGY], table[a, FREE_MEM] = download, latency, energy, free
        s.mask[a] = valid
        if valid and a < MAX_CODE_ACTIONS:
            code |= 1 << a
        # valid, backlog, free memory share, bandwidth share, busy now, latency / requirement, energy
        o = head + N_ACTION_FEATURES * a
        obs[o] = 1.0 if valid else 0.0
        obs[o + 1] = backlog / (backlog + time_scale)
        obs[o + 2] = free_share
        obs[o + 3] = units[a, U_BW_SHARE]
        obs[o + 4] = 1.0 if backlog > 0.0 else 0.0
        obs[o + 5] = _squash32(latency / requirement)
        obs[o + 6] = _squash32(energy / energy_scale)
    if m + 1 > MAX_CODE_ACTIONS:
        code = -1
    s.count[K_CODE] = code
    return code


@njit
def _advance(s, t):
    """Move time to `t`: idle energy of every unit over (now, t] (unweighted, returned), finished
    jobs leave their unit and release their KV memory."""
    clock, units, req, units_i = s.clock, s.units, s.req, s.units_i
    m = s.hosted.shape[1]
    now = clock[C_NOW]
    dt = t - now
    idle_j = 0.0
    for u in range(units.shape[0]):
        if units_i[u, UI_COUNT] == 0:  # idle throughout (dt - 0.0 is dt)
            idle_j += units[u, U_P_IDLE] * dt
            continue
        busy = 0.0
        r = units_i[u, UI_HEAD]
        while r >= 0:
            start, end = req[r, R_START], req[r, R_END]
            if start >= t:
                break
            busy += (t if t < end else end) - (now if now > start else start)  # overlap with (now, t]
            if end > t:
                break
            units_i[u, UI_COUNT] -= 1
            s.count[K_COMPLETED] += 1
            if u < m:
                units[u, U_KV_RESERVED] -= req[r, R_KV]
            r = s.req_i[r, RI_NEXT]
        units_i[u, UI_HEAD] = r
        if r < 0:
            units_i[u, UI_TAIL] = -1
        idle_j += units[u, U_P_IDLE] * (dt - busy)
    clock[C_E_IDLE] += idle_j
    clock[C_NOW] = t
    return idle_j


@njit
def _show_next(s, obs):
    """After time has moved: the next request's table, mask and observation, or (none left) only
    the bandwidth shares in the observation. Returns the mask code."""
    if s.count[K_I] < s.req.shape[0]:
        return _prepare(s, obs)
    n_links = s.bw.shape[0]
    head = obs.shape[0] - N_ACTION_FEATURES * n_links
    for a in range(n_links):
        obs[head + N_ACTION_FEATURES * a + 3] = s.units[a, U_BW_SHARE]
    return s.count[K_CODE]


@njit
def start(f, x, obs):
    """At reset: every link's bandwidth from its level (or the trace at the first arrival), then
    the first request. Returns the mask code."""
    s = sim(f, x)
    if s.count[K_TRACE]:
        _trace_bandwidth(s, s.clock[C_NOW])
    else:
        for a in range(s.bw.shape[0]):
            _set_bandwidth(s, a, s.level_bps[a, s.units_i[a, UI_LEVEL]])
    return _prepare(s, obs)


@njit
def step(a, f, x, obs):
    """Dispatch the current request to valid action `a` (edge server a, or the cloud GPU that frees
    first), move time to the next arrival (the end: until every unit has finished) and show the
    next request. Returns (reward, terminated, mask code, need, request, service, latency,
    requirement, weighted energy, met, now); need 1: the bandwidth chain waits for `finish`
    (no pre-drawn uniforms left), -1: the episode had ended (nothing done)."""
    s = sim(f, x)
    clock, units, req, count, units_i, req_i = s.clock, s.units, s.req, s.count, s.units_i, s.req_i
    n, m = req.shape[0], s.hosted.shape[1]
    i = count[K_I]
    if i >= n:
        return 0.0, False, count[K_CODE], -1, i, 0, 0.0, 0.0, 0.0, False, clock[C_NOW]
    upload, wait, compute, latency, weighted = (s.table[a, UPLOAD], s.table[a, WAIT], s.table[a, COMPUTE],
                                                s.table[a, LATENCY], s.table[a, ENERGY])
    unit = a
    if a == m:  # the cloud GPU that frees first
        for g in range(m + 1, units.shape[0]):
            if units[g, U_FREE_AT] < units[unit, U_FREE_AT]:
                unit = g
    now = clock[C_NOW]
    start = now + upload + wait
    end = start + compute
    units[unit, U_FREE_AT] = end
    if a < m:
        units[a, U_READY] = end
        units[a, U_KV_RESERVED] += req[i, R_KV]
    else:
        first = units[m, U_FREE_AT]
        for g in range(m + 1, units.shape[0]):
            if units[g, U_FREE_AT] < first:
                first = units[g, U_FREE_AT]
        units[a, U_READY] = first
    # the job joins its unit's list
    req[i, R_START], req[i, R_END], req[i, R_LATENCY] = start, end, latency
    req_i[i, RI_ACTION], req_i[i, RI_UNIT], req_i[i, RI_NEXT] = a, unit, -1
    tail = units_i[unit, UI_TAIL]
    if tail >= 0:
        req_i[tail, RI_NEXT] = i
    else:
        units_i[unit, UI_HEAD] = i
    units_i[unit, UI_TAIL] = i
    units_i[unit, UI_COUNT] += 1
    clock[C_E_TRAN] += units[a, U_P_TX] * (upload - units[a, U_LINK_LAT])
    clock[C_E_INFER] += units[a, U_P_BUSY] * compute
    requirement = req[i, R_REQUIREMENT]
    met = latency <= requirement
    service = req_i[i, RI_SERVICE]

    count[K_I] = i + 1
    terminated = i + 1 == n
    if terminated:
        t_next = units[0, U_FREE_AT]
        for u in range(1, units.shape[0]):
            if units[u, U_FREE_AT] > t_next:
                t_next = units[u, U_FREE_AT]
    else:
        t_next = req[i + 1, R_ARRIVAL]
    t = t_next if t_next > now else now  # max(t_next, now)
    idle_j = _advance(s, t)
    reward = -(weighted + clock[C_W_IDLE] * idle_j) / clock[C_ENERGY_SCALE] - (0.0 if met else clock[C_MISS_PENALTY])
    need = 0
    if count[K_TRACE]:
        _trace_bandwidth(s, t)
    else:
        slot = int((t - clock[C_T0]) // clock[C_SLOT_S])
        if slot > count[K_SLOT]:
            pos, links = count[K_DRAW_POS], m + 1
            if count[K_DRAW_END] - pos >= links:
                count[K_DRAW_POS] = pos + links
                _move_chain(s, slot, s.draws[pos: pos + links])
            else:
                count[K_PENDING] = slot
                need = 1
    code = count[K_CODE]
    if need == 0:
        code = _show_next(s, obs)
    return reward, terminated, code, need, i, service, latency, requirement, weighted, met, t


@njit
def finish(f, x, obs, draws):
    """The end of a step that `step` left waiting (need 1): move the bandwidth chain with the
    uniforms `draws` (one per link), then show the next request. Returns the mask code."""
    s = sim(f, x)
    _move_chain(s, s.count[K_PENDING], draws)
    return _show_next(s, obs)
