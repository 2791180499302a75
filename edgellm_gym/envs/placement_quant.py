"""PlacementQuantization-v0: place a model's layers on edge servers, each with a bit-width (DILEMMA)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
from gymnasium import spaces

from .. import costs
from ..catalog import DEVICES, get_device, get_model
from ..quantization import FP16_BITS, SUPPORTED_BITS, error_source, error_table
from ..scenario import register_preset, require, resolve_scenario
from .base import MaskedEnv, squash
from .placement_quant_kernels import (advance, fits_uniformly, instance_arrays, lookahead_q, lookahead_tables,
                                      start_episode, write_lookahead)

__all__ = [
    "PlacementProblem",
    "PlacementQuantScenario",
    "PlacementQuantState",
    "PlacementQuantizationEnv",
    "sample_problem",
    "plan_latency_s",
    "plan_violations",
    "uniform_completion_exists",
]

ENV_KEY = "PlacementQuantization"
N_GLOBAL_BASE = 7
N_SERVER_BASE = 5  # per-server features besides the 2 B per-width ones
LOOKAHEAD_DIFF_SCALE = 0.1  # the lookahead block's Q differences are squashed at this x obs_time_scale_s
REWARD_SHAPINGS = ("none", "lookahead")
LOOKAHEAD_RESERVE = 2  # exit servers the lookahead tries holding the last layer's memory on
_EPS = 1e-9  # slack for floors of capacity / size ratios that are integers up to rounding


@dataclass(frozen=True)
class PlacementProblem:
    """One instance: L layers, S servers, B bit-widths. Every layer of a model has the same
    shape, so its time and bytes at a width depend only on (server, width); errors differ per layer.

    compute_s[s, b]: decode time of one layer for one token on server s at bits[b].
    transfer_s[s, t]: time to send one token's hidden state from server s to t (0 on the diagonal).
    client_in_s[s] / client_out_s[s]: client -> first layer's server, last layer's server -> client
    (the client holds the embeddings and the LM head). mem_bytes[b]: one layer's weights at bits[b]
    plus its fp16 KV cache. capacity_bytes[s]: memory for layers, after the activation workspace.
    error[l, b]: e_l(bits[b]); budget: epsilon. params_per_layer: for the quantization ratio.
    """

    compute_s: np.ndarray
    transfer_s: np.ndarray
    client_in_s: np.ndarray
    client_out_s: np.ndarray
    mem_bytes: np.ndarray
    capacity_bytes: np.ndarray
    error: np.ndarray
    budget: float
    bits: tuple[int, ...]
    params_per_layer: float = 1.0

    @property
    def n_layers(self) -> int:
        return self.error.shape[0]

    @property
    def n_servers(self) -> int:
        return self.compute_s.shape[0]

    @property
    def n_bits(self) -> int:
        return len(self.bits)

    def __post_init__(self) -> None:
        s, b = self.compute_s.shape
        require(self.transfer_s.shape == (s, s), "transfer_s", self.transfer_s.shape, f"shape ({s}, {s})")
        require(self.client_in_s.shape == (s,) and self.client_out_s.shape == (s,), "client_in_s/client_out_s",
                (self.client_in_s.shape, self.client_out_s.shape), f"shape ({s},)")
        require(self.mem_bytes.shape == (b,) and len(self.bits) == b, "mem_bytes/bits",
                (self.mem_bytes.shape, self.bits), f"length {b}")
        require(self.capacity_bytes.shape == (s,), "capacity_bytes", self.capacity_bytes.shape, f"shape ({s},)")
        require(self.error.ndim == 2 and self.error.shape[1] == b and self.error.shape[0] >= 1, "error",
                self.error.shape, f"shape (L >= 1, {b})")
        for name in ("compute_s", "transfer_s", "client_in_s", "client_out_s", "mem_bytes", "capacity_bytes",
                     "error"):
            arr = getattr(self, name)
            require(bool(np.all(np.isfinite(arr)) and np.all(arr >= 0)), name, arr, "finite and >= 0")
        require(self.budget >= 0, "budget", self.budget, ">= 0")

    @classmethod
    def _unchecked(cls, *values) -> PlacementProblem:
        """An instance without `__post_init__`'s checks, for the arrays `sample_problem` builds
        (right shapes, finite and >= 0 by construction): the checks cost more than the draw."""
        p = object.__new__(cls)
        for name, v in zip(_PROBLEM_FIELDS, values):
            object.__setattr__(p, name, v)
        return p



_PROBLEM_FIELDS = tuple(f.name for f in fields(PlacementProblem))


def plan_latency_s(p: PlacementProblem, servers, bit_idx) -> float:
    """Per-token time of a full plan: client hop in, layer compute, hops between servers, hop out."""
    servers, bit_idx = np.asarray(servers), np.asarray(bit_idx)
    t = p.client_in_s[servers[0]] + p.client_out_s[servers[-1]] + p.compute_s[servers, bit_idx].sum()
    return float(t + p.transfer_s[servers[:-1], servers[1:]].sum())


def plan_violations(p: PlacementProblem, servers, bit_idx, rel_tol: float = 1e-9) -> list[str]:
    """Why a full plan is infeasible (memory per server, quality budget), empty if feasible."""
    servers, bit_idx = np.asarray(servers), np.asarray(bit_idx)
    bad = []
    if servers.shape != (p.n_layers,) or bit_idx.shape != (p.n_layers,):
        return [f"plan must give a server and a width for each of the {p.n_layers} layers"]
    used = np.bincount(servers, weights=p.mem_bytes[bit_idx], minlength=p.n_servers)
    over = np.flatnonzero(used > p.capacity_bytes * (1 + rel_tol))
    bad += [f"server {s}: {used[s]:.6g} B > capacity {p.capacity_bytes[s]:.6g} B" for s in over]
    err = float(p.error[np.arange(p.n_layers), bit_idx].sum())
    if err > p.budget * (1 + rel_tol) + 1e-15:
        bad.append(f"quality: sum of errors {err:.6g} > budget {p.budget:.6g}")
    return bad


def uniform_completion_exists(p: PlacementProblem, free_bytes, spent: float, next_layer: int) -> bool:
    """True if layers next_layer..L-1 can all take one common width that fits the free memory
    (per server, whole layers) and keeps the quality budget: a sufficient test of feasibility."""
    n = p.n_layers - next_layer
    if n <= 0:
        return spent <= p.budget * (1 + 1e-12) + 1e-15
    slots = np.floor(np.asarray(free_bytes)[:, None] / p.mem_bytes[None, :] + _EPS).sum(axis=0)
    rest = p.error[next_layer:].sum(axis=0)
    return bool(np.any((slots >= n) & (spent + rest <= p.budget * (1 + 1e-12) + 1e-15)))


def _hull_segments(mem: np.ndarray, err_row: np.ndarray) -> list[tuple[float, float]]:
    """(bytes added, error removed) along the lower convex hull of the points (mem_b, e(b)),
    from the smallest width up; widths that cost bytes without lowering the error are skipped."""
    hull: list[int] = []
    for i in np.argsort(mem, kind="stable"):
        if hull and err_row[i] >= err_row[hull[-1]]:
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies on or above the chord a -> i: not on the lower hull
            if (err_row[b] - err_row[a]) * (mem[i] - mem[a]) >= (err_row[i] - err_row[a]) * (mem[b] - mem[a]):
                hull.pop()
            else:
                break
        hull.append(int(i))
    return [(float(mem[b] - mem[a]), float(err_row[a] - err_row[b])) for a, b in zip(hull, hull[1:])]


def error_lower_bounds(p: PlacementProblem) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    """For each first layer k (0..L): the LP relaxation of "least total error of layers k..L-1 within
    M bytes" (a multiple-choice knapsack), as (bytes at the smallest widths, their error, cumulative
    bytes, cumulative error removed) over the hull segments by decreasing error per byte."""
    return _error_lower_bounds(p.mem_bytes, p.error)


def _error_lower_bounds(mem_bytes: np.ndarray, error: np.ndarray) -> list[tuple[float, float, np.ndarray, np.ndarray]]:
    n_layers = error.shape[0]
    segs = [_hull_segments(mem_bytes, error[j]) for j in range(n_layers)]
    w_min = float(mem_bytes.min())
    e_at_min = error[:, int(np.argmin(mem_bytes))]
    out = []
    for k in range(n_layers + 1):
        all_segs = [sg for j in range(k, n_layers) for sg in segs[j]]
        if all_segs:
            dw, de = np.array(all_segs).T
            order = np.argsort(-de / dw, kind="stable")
            cw, ce = np.cumsum(dw[order]), np.cumsum(de[order])
        else:
            cw = ce = np.zeros(0)
        out.append(((n_layers - k) * w_min, float(e_at_min[k:].sum()), cw, ce))
    return out


def lp_error_bound(bound: tuple[float, float, np.ndarray, np.ndarray], free_total) -> np.ndarray:
    """A lower bound on the total error of the layers `bound` covers within `free_total` bytes
    (inf where even the smallest widths do not fit)."""
    base_mem, base_err, cw, ce = bound
    extra = np.asarray(free_total, dtype=float) - base_mem
    if cw.size == 0:
        return np.where(extra >= -1e-6, base_err, np.inf)
    i = np.searchsorted(cw, np.maximum(extra, 0.0))
    done_w = np.where(i > 0, cw[np.maximum(i - 1, 0)], 0.0)
    done_e = np.where(i > 0, ce[np.maximum(i - 1, 0)], 0.0)
    j = np.minimum(i, cw.size - 1)
    seg_w = cw[j] - np.where(j > 0, cw[np.maximum(j - 1, 0)], 0.0)
    seg_e = ce[j] - np.where(j > 0, ce[np.maximum(j - 1, 0)], 0.0)
    frac = np.where(i < cw.size, np.clip((extra - done_w) / np.where(seg_w > 0, seg_w, 1.0), 0.0, 1.0), 0.0)
    removed = np.where(i < cw.size, done_e + frac * seg_e, ce[-1])
    return np.where(extra >= -1e-6, base_err - removed, np.inf)


class _ErrorTables:
    """What the masks and the lookahead need that depends only on a problem's layer sizes and error
    table and the preferred width (so it is shared by every instance of one catalog model in a
    scenario): the least error of the layers from k on, the sums of their errors per width, the
    rows by the preferred width (`rest_pref`, `cum_up`, `neg_g`: see `__init__`), and the LP bounds
    of `error_lower_bounds` as lookup tables.

    For each first layer k: `lp_base[k]` = (bytes of layers k.. at the smallest width, their error);
    `lp_cw[k]` the cumulative bytes of the hull segments (padded with inf to one length); `lp_tab[k]`
    a (4, n + 1) table indexed by `searchsorted` of the bytes beyond the first: bytes and error removed
    before segment i, segment i's bytes (1 where 0) and error removed (0 past the last). The mask
    kernel (`update_mask`) evaluates them with the same float operations as `lp_error_bound`.
    """

    def __init__(self, mem_bytes: np.ndarray, error: np.ndarray, preferred: int) -> None:
        L = error.shape[0]
        self.min_rest = np.concatenate([np.cumsum(error.min(axis=1)[::-1])[::-1], [0.0]])  # (L+1,)
        self.rest = np.stack([error[k:].sum(axis=0) for k in range(L + 1)])  # (L+1, B)
        self.w_min = float(mem_bytes.min())
        self.w_max = float(mem_bytes.max())
        self.error_rows = error.tolist()
        self.mem, self.error = np.array(mem_bytes, dtype=np.float64), np.array(error, dtype=np.float64, order="C")
        self.unplaced = np.full(L, -1)  # servers / widths of a new episode
        # (2, L + 1): the later layers' least error, and their error at width `preferred`, from layer k on
        self.rest_pref = np.stack([self.min_rest, self.rest[:, preferred]])
        # the lookahead's (`_Lookahead`), by j: the errors of layers ..j-1 one width up, and -(that + the
        # errors of layers j.. at `preferred`) (nondecreasing in j)
        rest = np.concatenate([np.cumsum(self.error[::-1, preferred])[::-1], [0.0]])
        self.cum_up = np.concatenate([[0.0], np.cumsum(self.error[:, max(preferred - 1, 0)])])
        self.neg_g = -(self.cum_up + rest)
        bounds = _error_lower_bounds(mem_bytes, error)
        n_max = max(cw.size for _, _, cw, _ in bounds)
        self.lp_base = np.array([(base_mem, base_err) for base_mem, base_err, _, _ in bounds])
        self.lp_cw = np.full((L + 1, n_max), np.inf)
        self.lp_tab = np.zeros((L + 1, 4, n_max + 1))
        for k, (_, _, cw, ce) in enumerate(bounds):
            n = cw.size
            cw0 = np.concatenate([[0.0], cw])
            ce0 = np.concatenate([[0.0], ce])
            seg_w = cw - cw0[:-1]
            self.lp_cw[k, :n] = cw
            self.lp_tab[k, :, :n + 1] = np.stack([cw0, ce0, np.append(np.where(seg_w > 0, seg_w, 1.0), 1.0),
                                                   np.append(ce - ce0[:-1], 0.0)])


class _Lookahead:
    """Per-episode tables of the per-action lookahead (the observation's block, `lookahead_q_values`).

    Q(a) = the per-token time action a adds + an estimate of the time to finish afterwards, by a
    greedy completion. Each later layer goes, among the servers with room for it, to the one with the
    least compute + hop / (layers that server could take in a row from here: its room, at most the
    layers left before the last): a hop is paid once for the run it starts, so the walk leaves a
    slow server for a fast one that can hold the rest, rather than comparing one layer's time. The
    time added is the layer's compute + hop. The last layer goes to the server adding the least
    compute + hop + client hop. Widths: the preferred one (`budget_ref_bits`), one higher for the
    first layers while the rest at the preferred width would break the budget, the smallest where
    nothing fits (and regardless of memory where even that does not fit: an estimate, not a plan).
    Q is the least over 1 + LOOKAHEAD_RESERVE variants: as is, or with one preferred-width layer of
    memory held back from the start on one of the LOOKAHEAD_RESERVE servers with the cheapest client
    hop, where the last layer then goes (a route that comes back to a cheap exit). Computed by the
    compiled kernel `lookahead_q`: per action, a walk over the later layers (each a scan of the
    servers); a variant follows that walk's recorded route until it might choose otherwise, and
    walks on its own from there.
    """

    def __init__(self, p: PlacementProblem, preferred: int, tables: _ErrorTables, times: tuple) -> None:
        """`times`: p's compute_s, transfer_s, client_in_s, client_out_s as C-ordered float64 arrays."""
        S, B = p.n_servers, p.n_bits
        hop_from = np.empty((S + 1, S))  # row s: the hops from server s; row S: from the client
        compute = np.empty((B, S))
        client_out = np.empty(S)
        reserve = np.empty(1 + min(LOOKAHEAD_RESERVE, S), dtype=np.int64)  # -1, the cheapest exits
        order = np.empty((B, S), dtype=np.int64)  # servers by compute at each width
        lookahead_tables(*times, hop_from, compute, client_out, reserve, order, np.empty(S, dtype=np.int64))
        # the kernels' arguments after (..., acts, q): the tables, then work arrays
        self.args = (hop_from, compute, tables.mem, client_out, tables.error, tables.cum_up, tables.neg_g, reserve,
                     float(p.budget * (1 + 1e-12)), preferred, max(preferred - 1, 0), B - 1, order,
                     np.empty((7, S)), np.empty((6, p.n_layers)))

    def q_values(self, layer: int, prev: int, free: np.ndarray, spent: float, acts: np.ndarray) -> np.ndarray:
        """Q of the valid actions `acts` at `layer` (the previous layer on `prev`, -1: the client).

        The float operations, element by element and in order, of the plain numpy version of commit
        6152f7a (the golden trajectories, which include the observation, pin them)."""
        q = np.empty(acts.shape[0])
        lookahead_q(layer, prev, float(spent), free, acts.astype(np.int64, copy=False), q, *self.args)
        return q


@dataclass(frozen=True)
class PlacementQuantScenario:
    """How instances are drawn, one per episode (so a policy must generalise across them).

    Per episode: a model from `models`; `n_servers` servers, each a device drawn from `devices`
    whose compute and memory bandwidth are scaled by a speed factor ~ U[speed_min, speed_max]
    (a shared server) and whose free memory for this model is a fraction ~ U[mem_frac_min,
    mem_frac_max] of the model's layers at fp16 with their KV cache (capped by the device's
    memory); symmetric server-server links (bandwidth, latency uniform in their ranges); a
    link from the client to each server; the quality budget epsilon = factor ~ U[budget_min,
    budget_max] x the error of every layer at `budget_ref_bits`.
    Per-token time is one decode step at `context_tokens` of context; each layer keeps an fp16
    KV cache of `kv_tokens` tokens; a server hosting layers reserves an activation workspace
    for `activation_tokens` tokens ((2 h + f) x tokens x 2 bytes). `bits` is in decreasing order.
    With `solve_ilp`, every reset computes DILEMMA's optimum on the instance (baselines.dilemma;
    `ilp_solver` "auto" is its exact search, "ilp"/"highs"/"cbc" the PuLP ILP) so the episode
    metrics hold the optimum and the optimality gap. It is off by default: on OPT-350M x 8 servers
    the search takes about 0.03 s and the ILP solvers 1-50 s (docs/envs/placement_quantization.md),
    against a reset of about 45 us in RL training; the "default-ilp" preset turns it on for
    evaluation.
    `lookahead` adds the per-action lookahead block to the observation (see the env's Observation
    Space): what a learned agent needs to plan a route, at a cost (a greedy walk over the later
    layers per valid action, most of a step; off, the env steps about 3.5x faster).
    """

    models: tuple[str, ...] = ("opt-350m", "opt-125m", "qwen2-0.5b", "smollm2-135m")
    n_servers: int = 8
    devices: tuple[str, ...] = ("rpi5", "orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "t4", "xeon-gold-6248")
    speed_min: float = 0.3
    speed_max: float = 1.0
    mem_frac_min: float = 0.05
    mem_frac_max: float = 0.3
    bits: tuple[int, ...] = (16, 8, 4, 2)
    context_tokens: int = 512
    kv_tokens: int = 2048
    activation_tokens: int = 512
    link_bw_min_bps: float = 100e6
    link_bw_max_bps: float = 1e9
    link_latency_min_s: float = 0.2e-3
    link_latency_max_s: float = 2e-3
    client_bw_min_bps: float = 20e6
    client_bw_max_bps: float = 300e6
    client_latency_min_s: float = 1e-3
    client_latency_max_s: float = 5e-3
    budget_min: float = 0.7
    budget_max: float = 1.3
    budget_ref_bits: int = 4
    solve_ilp: bool = False
    ilp_solver: str = "auto"
    ilp_time_limit_s: float = 30.0
    infeasible_penalty_s: float = 1.0
    reward_time_scale_s: float = 1.0
    obs_time_scale_s: float = 1e-3
    lookahead: bool = True

    def __post_init__(self) -> None:
        require(len(self.models) >= 1, "models", self.models, "a non-empty list of catalog model names")
        for m in self.models:
            get_model(m)
        require(len(self.devices) >= 1, "devices", self.devices, "a non-empty list of catalog device names")
        for d in self.devices:
            get_device(d)
        require(1 <= self.n_servers <= 256, "n_servers", self.n_servers, "in [1, 256]")
        require(len(self.bits) >= 1 and all(b in SUPPORTED_BITS for b in self.bits), "bits", self.bits,
                f"a non-empty list from {SUPPORTED_BITS}")
        require(all(a > b for a, b in zip(self.bits, self.bits[1:])), "bits", self.bits, "strictly decreasing")
        require(self.budget_ref_bits in self.bits, "budget_ref_bits", self.budget_ref_bits, f"one of bits {self.bits}")
        for lo, hi in (("speed_min", "speed_max"), ("mem_frac_min", "mem_frac_max"),
                       ("link_bw_min_bps", "link_bw_max_bps"), ("link_latency_min_s", "link_latency_max_s"),
                       ("client_bw_min_bps", "client_bw_max_bps"),
                       ("client_latency_min_s", "client_latency_max_s"), ("budget_min", "budget_max")):
            require(getattr(self, lo) >= 0, lo, getattr(self, lo), ">= 0")
            require(getattr(self, hi) >= getattr(self, lo), hi, getattr(self, hi), f">= {lo}")
        for name in ("speed_min", "mem_frac_min", "link_bw_min_bps", "client_bw_min_bps"):
            require(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        for name in ("context_tokens", "kv_tokens", "activation_tokens"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        require(self.ilp_solver in ("auto", "search", "ilp", "highs", "cbc"), "ilp_solver", self.ilp_solver,
                'one of "auto" (= "search"), "search", "ilp", "highs", "cbc" (baselines.dilemma)')
        require(self.ilp_time_limit_s > 0, "ilp_time_limit_s", self.ilp_time_limit_s, "> 0")
        require(self.infeasible_penalty_s >= 0, "infeasible_penalty_s", self.infeasible_penalty_s, ">= 0")
        require(self.reward_time_scale_s > 0, "reward_time_scale_s", self.reward_time_scale_s, "> 0")
        require(self.obs_time_scale_s > 0, "obs_time_scale_s", self.obs_time_scale_s, "> 0")
        require(isinstance(self.lookahead, bool), "lookahead", self.lookahead, "true or false")


register_preset(ENV_KEY, "default", PlacementQuantScenario())
register_preset(ENV_KEY, "default-ilp", PlacementQuantScenario(solve_ilp=True))
register_preset(ENV_KEY, "small", PlacementQuantScenario(models=("opt-125m",), n_servers=3, mem_frac_min=0.15,
                                                        mem_frac_max=0.5, solve_ilp=False))
register_preset(ENV_KEY, "smollm2", PlacementQuantScenario(models=("smollm2-135m",), n_servers=6,
                                                          bits=(16, 8, 4, 3, 2)))
register_preset(ENV_KEY, "opt-350m", PlacementQuantScenario(models=("opt-350m",), solve_ilp=True))
# `edgellm-gym stress` fuzzes these: the other presets only add an ILP solve (seconds) per reset
FUZZ_PRESETS = ("default", "small", "smollm2")

MAX_DRAWS = 100
_ILP_CACHE: dict = {}


def _solve_ilp_cached(p: PlacementProblem, solver: str, time_limit_s: float):
    """DILEMMA's optimum on `p` (baselines.dilemma.solve_dilemma), memoised per process on the
    instance's bytes: a benchmark that replays the same seeds for every policy solves each instance
    once."""
    import hashlib

    from baselines.dilemma import solve_dilemma  # lazy: the core does not need the baselines otherwise

    h = hashlib.sha256()
    for arr in (p.compute_s, p.transfer_s, p.client_in_s, p.client_out_s, p.mem_bytes, p.capacity_bytes, p.error):
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    key = (h.hexdigest(), p.budget, p.bits, solver, time_limit_s)
    if key not in _ILP_CACHE:
        if len(_ILP_CACHE) >= 512:
            _ILP_CACHE.pop(next(iter(_ILP_CACHE)))
        _ILP_CACHE[key] = solve_dilemma(p, solver=solver, time_limit_s=time_limit_s)
    return _ILP_CACHE[key]


class _ModelTables:
    """The parts of an instance that depend only on the scenario and its model (computed once per
    env, not per reset): layer sizes and errors, each catalog device's time per layer before its
    speed factor, its memory after the workspace, and the mask tables."""

    def __init__(self, sc: PlacementQuantScenario, name: str) -> None:
        m = get_model(name)
        bits = np.asarray(sc.bits, dtype=float)
        devs = [DEVICES[d] for d in sc.devices]
        self.name, self.n_layers = name, m.n_layers
        flop = float(costs.layer_flop_decode(m, sc.context_tokens))
        kv = costs.kv_bytes_per_token_layer(m)
        read = costs.layer_weight_bytes(m, bits) + kv * sc.context_tokens  # (B,)
        peak = np.array([d.peak_flops * d.compute_efficiency for d in devs])
        mbw = np.array([d.mem_bw_Bps for d in devs])
        self.device_time_s = np.maximum(flop / peak[:, None], read[None, :] / mbw[:, None])  # (n_devices, B)
        self.act_bits = float(costs.activation_bytes(m, 1)) * 8.0
        self.mem_bytes = _frozen(costs.layer_weight_bytes(m, bits) + kv * sc.kv_tokens)
        self.fp16_model = m.n_layers * (costs.layer_weight_bytes(m, 16) + kv * sc.kv_tokens)
        workspace = (2 * m.hidden + m.ffn) * 2.0 * sc.activation_tokens
        self.device_free = np.array([d.mem_bytes for d in devs]) - workspace
        self.error = _frozen(error_table(name, m.n_layers, sc.bits))
        self.budget_ref = self.error[:, sc.bits.index(sc.budget_ref_bits)].sum()
        self.params_per_layer = float(costs.layer_params(m))
        self.error_tables = _ErrorTables(self.mem_bytes, self.error, sc.bits.index(sc.budget_ref_bits))


def _frozen(a: np.ndarray) -> np.ndarray:
    """`a` made read-only: instances of one model share it."""
    a = np.array(a, dtype=float)
    a.setflags(write=False)
    return a


class _Sampler:
    """Draws instances of one scenario; the scenario's constants are computed once, here."""

    def __init__(self, sc: PlacementQuantScenario) -> None:
        self.sc = sc
        self.models = {name: _ModelTables(sc, name) for name in dict.fromkeys(sc.models)}
        S = sc.n_servers
        iu = np.triu_indices(S, 1)
        self.n_pairs = len(iu[0])
        pair = np.zeros((S, S), dtype=np.intp)  # index into [0, hop of pair 0, hop of pair 1, ...]
        pair[iu] = pair.T[iu] = np.arange(1, self.n_pairs + 1)
        self.pair_index = pair
        self.device_names = list(sc.devices)
        self.bits = tuple(int(b) for b in sc.bits)

    def draw(self, rng: np.random.Generator) -> tuple[PlacementProblem, _ModelTables, tuple[str, ...]]:
        """One instance (the draws and float operations of the original per-reset code, in order)."""
        sc, S = self.sc, self.sc.n_servers
        for _ in range(MAX_DRAWS):
            t = self.models[sc.models[int(rng.integers(len(sc.models)))]]
            dev = rng.integers(len(sc.devices), size=S)
            speed = rng.uniform(sc.speed_min, sc.speed_max, size=S)
            bw = rng.uniform(sc.link_bw_min_bps, sc.link_bw_max_bps, size=self.n_pairs)
            lat = rng.uniform(sc.link_latency_min_s, sc.link_latency_max_s, size=self.n_pairs)
            cbw = rng.uniform(sc.client_bw_min_bps, sc.client_bw_max_bps, size=S)
            clat = rng.uniform(sc.client_latency_min_s, sc.client_latency_max_s, size=S)
            mem_frac = rng.uniform(sc.mem_frac_min, sc.mem_frac_max, size=S)
            budget = float(rng.uniform(sc.budget_min, sc.budget_max) * t.budget_ref)
            compute, transfer = np.empty((S, len(sc.bits))), np.empty((S, S))
            client, capacity = np.empty(S), np.empty(S)
            instance_arrays(dev, speed, bw, lat, cbw, clat, mem_frac, t.device_time_s, t.act_bits, self.pair_index,
                            float(t.fp16_model), t.device_free, compute, transfer, client, capacity)
            # uniform_completion_exists(p, capacity, 0.0, 0), on the model's tables
            if fits_uniformly(capacity, t.error_tables.mem, t.error_tables.rest[0], t.n_layers,
                              budget * (1 + 1e-12) + 1e-15):
                p = PlacementProblem._unchecked(compute, transfer, client, client.copy(), t.mem_bytes, capacity,
                                               t.error, budget, self.bits, t.params_per_layer)
                names = self.device_names
                return p, t, tuple([names[i] for i in dev.tolist()])
        raise RuntimeError(f"no feasible instance in {MAX_DRAWS} draws: the scenario is too tight "
                           "(raise mem_frac_*, budget_* or n_servers)")


_SAMPLERS: dict = {}


def _sampler(sc: PlacementQuantScenario) -> _Sampler:
    """The scenario's sampler, built once per process."""
    if sc not in _SAMPLERS:
        if len(_SAMPLERS) >= 64:
            _SAMPLERS.pop(next(iter(_SAMPLERS)))
        _SAMPLERS[sc] = _Sampler(sc)
    return _SAMPLERS[sc]


def sample_problem(sc: PlacementQuantScenario, rng: np.random.Generator,
                   error_cache: dict | None = None) -> tuple[PlacementProblem, str, tuple[str, ...]]:
    """Draw one instance from the scenario (redrawn until every layer can take one common width,
    which makes it feasible); returns the problem, the model name and the server device names.
    Instances of one model share their (read-only) `mem_bytes` and `error` arrays. `error_cache`
    is ignored (kept for old callers): the scenario's constants are cached per process."""
    p, t, names = _sampler(sc).draw(rng)
    return p, t.name, names


@dataclass
class PlacementQuantState:
    """What reference policies may read (`env.unwrapped.state`; read-only by convention).

    `layer` is the next layer to place; servers[:layer] / bit_idx[:layer] the decisions so far;
    free_bytes the memory left per server; spent the quality budget used; latency_s the per-token
    time so far; prev_server the server of the previous layer (-1 before the first).
    """

    problem: PlacementProblem
    model: str
    devices: tuple[str, ...]
    layer: int
    servers: np.ndarray
    bit_idx: np.ndarray
    free_bytes: np.ndarray
    spent: float
    latency_s: float
    prev_server: int
    ilp: object | None = field(default=None)


class PlacementQuantizationEnv(MaskedEnv):
    """
    ## Description
    DILEMMA's problem (DESIGN 4.4): one LLM's transformer layers are placed on edge servers, each
    layer with a bit-width (default {16, 8, 4, 2}), to minimise the per-token decode time
    (compute of each layer on its server at its width, hops between consecutive layers on
    different servers, the client's hops to the first and from the last layer) subject to each
    server's free memory (weights at their width + fp16 KV cache, plus an activation workspace per
    server used) and a quality budget: sum over layers of e_l(bits) <= epsilon. Errors: measured on
    SmolLM2-135M's real weights, modelled for the other models (edgellm_gym.quantization). Every
    episode draws a new instance (model, server devices and speeds, memory, links, budget).

    ## Action Space
    `Discrete(S * B)`: action a = server * B + bit_index places the current layer on server
    `a // B` at width `bits[a % B]` (bits in decreasing order: index 0 is the highest width).

    ## Observation Space
    `Box(-1, 1, (S * (2B + 5) + B + 7 + S * B + 1,), float32)` (148 by default; without the
    lookahead block, `lookahead: false`, S * (2B + 5) + B + 7). Times are squashed by
    t / (t + obs_time_scale_s). Per server (2B + 5): compute time of one layer at each width; hop
    time into it (from the previous layer's server, or from the client for layer 0); its hop time
    back to the client; whole layers it can still hold at each width / L; whether it holds the
    previous layer; the cheapest way back to the client from it (hop to a server u that can still
    take a layer + u's client hop, u = itself included); the cheapest hop from it to another server
    that can still take a layer (1 if none). Then 7 globals: layers placed / L, layers left / L,
    budget used / epsilon, budget slack after the rest at their lowest error / epsilon, L / 100,
    budget left / the later layers' error at the preferred width (`budget_ref_bits`) - 1, whole
    layers that fit at the preferred width / layers left - 1 (both clipped to [-1, 1]); the current
    layer's error at each width x L / epsilon, squashed by x / (x + 1). Then the lookahead block:
    per action (S * B, same index as the action), Q(a) - min over the valid actions of Q, squashed
    at LOOKAHEAD_DIFF_SCALE x obs_time_scale_s (0.1 ms; 1 where masked), where Q(a) is the time the action adds plus an estimate of the time to finish
    afterwards (`lookahead_q_values()`: a greedy completion, see `_Lookahead`); and that least Q,
    squashed (0 at the end).

    ## Rewards
    Minus the per-token time the step adds, / reward_time_scale_s (default 1 s): the layer's
    compute on its server, plus the hop into it (client hop for layer 0, server change otherwise),
    plus the hop back to the client for the last layer. The return of a completed episode is
    minus the per-token latency. An episode that reaches a dead end (see Episode End) also gets
    -infeasible_penalty_s / reward_time_scale_s. A masked action under
    `invalid_action="penalize"` gives -invalid_action_penalty and changes nothing.
    With `reward_shaping="lookahead"` (for training; needs the lookahead on) each valid step also
    gets phi(s') - phi(s), phi = minus the least lookahead value / reward_time_scale_s (0 at the
    end): potential-based, so the return changes by -phi(first state), the same for every policy on
    an instance; `info["reward_unshaped"]` has the plain reward.

    ## Action mask: what it guarantees
    Action (s, b) is valid for layer l iff (1) the layer fits in server s's free memory at width b;
    (2) quality: used + e_l(b) + sum over the later layers of their lowest error <= epsilon;
    (3) memory: after it, the later layers fit, whole, at the smallest width: sum over servers of
    floor(free / size at the smallest width) >= layers left; and (4) jointly: used + e_l(b) + a
    lower bound on the later layers' error within the bytes they can still use <= epsilon (the LP
    relaxation of that multiple-choice knapsack, with server s able to use at most
    min(free_s, floor(free_s / smallest size) x largest size) bytes). These are necessary conditions, so
    the mask never removes an action that has a feasible completion (the ILP optimum can always be
    played), and following it memory and the budget are never exceeded. They are not sufficient
    (an exact test is a bin-packing problem): a state where every action fails them ends the
    episode as infeasible (terminated, with the penalty). `uniform_completion_exists` is a
    sufficient test (the later layers can all take one common width); `safe_action_mask()` gives
    the actions that keep it true, which never dead-ends (instances are drawn so that it holds at
    the start); the heuristic baselines use it.

    ## Starting State
    A new instance from `sample_problem` with `np_random` (or `options["problem"]`, a
    `PlacementProblem`, to replay a fixed one); layer 0 to place, all memory free.

    ## Episode End
    Terminated when the last layer is placed, or at a dead end (no action passes the mask).
    Truncated after `max_invalid_streak` consecutive masked actions.

    ## Arguments
    `gymnasium.make("edgellm_gym/PlacementQuantization-v0", scenario="default", render_mode=None,
    invalid_action="penalize", invalid_action_penalty=1.0, max_invalid_streak=100, reward_shaping="none")`.
    `reward_shaping`: "none" or "lookahead" (see Rewards). `scenario`:
    a preset name ("default": four OPT-350M-class models on 8 servers, no ILP; "default-ilp": the
    same with DILEMMA's optimum solved at each reset; "small": OPT-125M on 3 servers with more
    memory, no ILP; "smollm2": the measured table, widths {16, 8, 4, 3, 2};
    "opt-350m": DILEMMA's model only), a YAML path, a dict or a `PlacementQuantScenario`.

    ## Info
    `action_mask`, `invalid_action`, `layer`, and at the end `episode_metrics`:
    per_token_latency_s (plus the penalty when infeasible), completed (1/0), quantization_ratio
    (bits used / bits at fp16, weighted by parameters), mean_bits, quality_used_frac (sum of errors /
    epsilon), servers_used, transfer_share (hops / latency), and with `solve_ilp`: ilp_latency_s,
    ilp_optimal (1 if proven optimal within the solver's gap), optimality_gap (latency / ILP - 1).

    ## Version History
    * v0: initial version.
    * v0, 2026-11-23: observation revised (same instances, masks, rewards and metrics): per server
      the cheapest way back to the client and the cheapest hop away; two budget/memory globals;
      the per-action lookahead block (`lookahead`, on by default). Agents trained on the old
      97-feature observation do not load on it.
    """

    def __init__(self, scenario=None, render_mode: str | None = None, invalid_action: str = "penalize",
                 invalid_action_penalty: float = 1.0, max_invalid_streak: int = 100,
                 reward_shaping: str = "none") -> None:
        super().__init__(render_mode, invalid_action, invalid_action_penalty, max_invalid_streak)
        self.scenario = sc = resolve_scenario(PlacementQuantScenario, ENV_KEY, scenario)
        if reward_shaping not in REWARD_SHAPINGS:
            raise ValueError(f"reward_shaping must be one of {REWARD_SHAPINGS}, got {reward_shaping!r}")
        if reward_shaping == "lookahead" and not sc.lookahead:
            raise ValueError('reward_shaping="lookahead" needs the scenario\'s lookahead on')
        self.reward_shaping = reward_shaping
        self._reward_scale = sc.reward_time_scale_s
        S, B = sc.n_servers, len(sc.bits)
        self._preferred = sc.bits.index(sc.budget_ref_bits)
        self.action_space = spaces.Discrete(S * B)
        self._n_server_features = F = 2 * B + N_SERVER_BASE
        n_obs = S * F + N_GLOBAL_BASE + B + (S * B + 1 if sc.lookahead else 0)
        self.observation_space = spaces.Box(-1.0, 1.0, (n_obs,), np.float32)
        self._n_bits = B
        self._mask = np.zeros(S * B, dtype=bool)
        self._obs_buf = np.zeros(n_obs, dtype=np.float32)  # kept current step by step
        # per-episode terms of the kernels (see reset), reused from one episode to the next
        self._srv, self._sb = np.empty((3, S)), np.empty((3, S, B))
        self._routes, self._scal = np.empty((2, S, S)), np.empty(8)
        self._build_views()
        self._sampler = _sampler(sc)  # the scenario's constants, computed once
        self.state: PlacementQuantState | None = None

    _VIEWS = ("_mask_sb", "_obs_sf", "_obs_glob", "_kargs", "_largs")

    def _build_views(self) -> None:
        S, B = self.scenario.n_servers, len(self.scenario.bits)
        self._mask_sb = self._mask.reshape(S, B)  # a view: the mask by (server, width)
        n = S * self._n_server_features
        self._obs_sf = self._obs_buf[:n].reshape(S, self._n_server_features)
        self._obs_glob = self._obs_buf[n: n + N_GLOBAL_BASE + B]  # then the lookahead, if any
        if self.state is not None:
            self._bind_kernel_args()

    def _bind_kernel_args(self) -> None:
        """The arrays the step's kernels work on, in place (`advance`, `write_lookahead`): bound once per
        episode (and again after unpickling, as they include views)."""
        st, t = self.state, self._tables
        self._kargs = (st.free_bytes, st.servers, st.bit_idx, t.mem, t.error, self._preferred, self._scal, self._srv,
                       self._sb, self._rest, self._routes, t.lp_base, t.lp_cw, t.lp_tab, self._obs_sf,
                       self._obs_glob, self._hop_obs, self._error_obs, self._mask_sb)
        self._largs = None
        if self.scenario.lookahead:
            n, scale = self._mask.size, self.scenario.obs_time_scale_s
            self._largs = (self._obs_buf[-(n + 1):], scale * LOOKAHEAD_DIFF_SCALE, scale, np.empty(n, dtype=np.int64),
                           np.empty(n), *self._lookahead.args)

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sc = self.scenario
        if options and options.get("problem") is not None:
            p = options["problem"]
            if p.n_servers != sc.n_servers or tuple(p.bits) != tuple(sc.bits):
                raise ValueError(f"options['problem'] must have {sc.n_servers} servers and bits {sc.bits}")
            model, names = str(options.get("model", "given")), tuple(options.get("devices", ("?",) * p.n_servers))
            tables = _ErrorTables(p.mem_bytes, p.error, self._preferred)
            times = [np.array(x, dtype=np.float64, order="C") for x in (p.compute_s, p.transfer_s, p.client_in_s,
                                                                        p.client_out_s)]  # the kernel's types
        else:
            p, t, names = self._sampler.draw(self.np_random)
            model, tables = t.name, t.error_tables
            times = (p.compute_s, p.transfer_s, p.client_in_s, p.client_out_s)
        unplaced = tables.unplaced
        self.state = st = PlacementQuantState(problem=p, model=model, devices=names, layer=0,
                                              servers=unplaced.copy(), bit_idx=unplaced.copy(),
                                              free_bytes=np.array(p.capacity_bytes, dtype=float), spent=0.0,
                                              latency_s=0.0, prev_server=-1)
        # constants of the episode; the step's reward arithmetic reads Python floats (same IEEE arithmetic)
        self._tables = tables
        self._n_layers = p.n_layers
        self._compute_rows, self._transfer_rows = p.compute_s.tolist(), p.transfer_s.tolist()
        self._client_in, self._client_out = p.client_in_s.tolist(), p.client_out_s.tolist()
        self._transfer_s = 0.0
        # what the mask and the observation need, kept current by the `advance` kernel (filled by
        # `start_episode`, with the first observation and mask): _srv rows per server: whole layers at the
        # smallest width, whole layers at the preferred width, bytes usable by later layers
        # (min(free, whole smallest-width layers x largest layer size)); _sb per (server, width): the
        # usable bytes, the whole smallest-width layers gained (<= 0, -inf where the layer does not
        # fit) and the usable bytes after placing the layer there; _routes: hop + client hop through
        # each server, hop to another server (rows: from); _scal: w_min, w_max, epsilon, budget, the
        # mask's two budget limits, obs time scale, sum of _srv[0]; _rest: the later layers' least
        # error and their error at the preferred width, from layer k on
        self._rest = tables.rest_pref
        self._hop_obs = np.empty((p.n_servers + 1, p.n_servers), dtype=np.float32)
        self._error_obs = np.empty((p.n_layers, p.n_bits), dtype=np.float32)
        start_episode(st.free_bytes, tables.mem, tables.error, self._preferred, float(p.budget), tables.w_min,
                      tables.w_max, *times, sc.obs_time_scale_s,
                      self._rest, self._srv, self._sb, self._routes, self._scal, self._hop_obs, self._error_obs,
                      self._obs_sf, self._obs_glob, tables.lp_base, tables.lp_cw, tables.lp_tab, self._mask_sb)
        if sc.solve_ilp:
            st.ilp = _solve_ilp_cached(p, sc.ilp_solver, sc.ilp_time_limit_s)
        self._times = times
        self._lookahead = _Lookahead(p, self._preferred, tables, times) if sc.lookahead else None
        self._bind_kernel_args()
        if sc.lookahead:
            self._least_q = write_lookahead(0, -1, 0.0, st.free_bytes, self._mask, *self._largs)
            self._potential = -self._least_q / sc.reward_time_scale_s
        return self._obs_buf.copy(), self._info()

    # ------------------------------------------------------------------ step
    def _step(self, a: int):
        st = self.state
        L, l, prev = self._n_layers, st.layer, st.prev_server
        s, b = divmod(a, self._n_bits)
        hop = self._client_in[s] if l == 0 else self._transfer_rows[prev][s]
        out = self._client_out[s] if l == L - 1 else 0.0
        inc = self._compute_rows[s][b] + hop + out
        self._transfer_s += hop + out
        st.spent += self._tables.error_rows[l][b]
        st.latency_s += inc
        st.prev_server = s
        st.layer = l + 1
        reward = -inc / self._reward_scale
        # place the layer (servers, bit_idx, free_bytes), update server s's mask terms and the
        # observation, and the mask of the next layer (see the masks section)
        terminated = not advance(s, b, l, prev, st.spent, *self._kargs)
        if terminated and st.layer < L:  # a dead end: no action passes the mask
            reward -= self.scenario.infeasible_penalty_s / self._reward_scale
        if self._largs is not None:
            self._least_q = write_lookahead(l + 1, s, st.spent, st.free_bytes, self._mask, *self._largs)
        info = {"action_mask": self._mask.copy(), "invalid_action": False, "layer": l + 1}
        if terminated:
            info["episode_metrics"] = self.episode_metrics()
        if self.reward_shaping == "lookahead":
            # potential-based (Ng et al. 1999), phi = minus the least lookahead value (0 at the end): the
            # return changes by -phi(first state), the same for every policy on an instance
            info["reward_unshaped"] = float(reward)
            potential = 0.0 if terminated else -self._least_q / self._reward_scale
            reward += potential - self._potential
            self._potential = potential
        return self._obs_buf.copy(), float(reward), terminated, False, info

    def lookahead_q_values(self) -> np.ndarray:
        """Per action: the per-token time it adds plus the estimated time to finish afterwards (see
        `_Lookahead`), inf where masked; the observation's lookahead block shows these, relative to
        the least and squashed."""
        q = np.full(self._mask.size, np.inf)
        acts = np.flatnonzero(self._mask)
        if acts.size:
            st = self.state
            if self._lookahead is None:
                self._lookahead = _Lookahead(st.problem, self._preferred, self._tables, self._times)
            q[acts] = self._lookahead.q_values(st.layer, st.prev_server, st.free_bytes, st.spent, acts)
        return q

    # ----------------------------------------------------------------- masks
    # Action (s, b) is valid iff it fits, keeps the budget with the later layers at their least error,
    # leaves whole smallest-width slots for the later layers, and keeps the budget with the LP bound
    # on the later layers' error (see the class docstring): the `update_mask` kernel, on (S, B), from
    # the per-server terms (_srv, _sb) that `advance` keeps current. The bytes the later layers can
    # use are bounded per server by min(free, whole layers that fit x largest layer size); a width
    # over the budget gets an infinite error.

    def safe_action_mask(self) -> np.ndarray:
        """The valid actions after which every later layer can still take one common width
        (`uniform_completion_exists`): following these never dead-ends."""
        st = self.state
        p, l = st.problem, st.layer
        free = st.free_bytes
        after = free[:, None] - p.mem_bytes[None, :]  # (S, B) after the action
        n_rest = p.n_layers - l - 1
        if n_rest == 0:
            return self._mask.copy()
        per = np.floor(free[:, None] / p.mem_bytes[None, :] + _EPS)  # (S, C) slots now, witness width c
        slots = (per.sum(axis=0)[None, None, :] - per[:, None, :]
                 + np.floor(np.maximum(after, 0.0)[:, :, None] / p.mem_bytes[None, None, :] + _EPS))  # (S,B,C)
        rest = self._tables.rest[l + 1]  # (C,) the later layers' errors at each width
        err_ok = st.spent + p.error[l][:, None] + rest[None, :] <= p.budget * (1 + 1e-12) + 1e-15  # (B, C)
        ok = ((slots >= n_rest) & err_ok[None, :, :]).any(axis=2)
        return self._mask & ok.ravel()

    # --------------------------------------------------------- observations
    def _obs(self) -> np.ndarray:
        return self._obs_buf.copy()

    def _obs_full(self) -> np.ndarray:
        """The observation computed from the state in one go: the reference that the buffer the steps
        update in place must equal, bit for bit (tests/test_placement_quant.py checks it)."""
        st, sc = self.state, self.scenario
        p = st.problem
        L, S, B = p.n_layers, p.n_servers, p.n_bits
        l = min(st.layer, L - 1)
        scale = sc.obs_time_scale_s
        hop_in = p.client_in_s if st.prev_server < 0 else p.transfer_s[st.prev_server]
        prev = np.zeros(S)
        if st.prev_server >= 0:
            prev[st.prev_server] = 1.0
        per = np.empty((S, self._n_server_features))
        per[:, :B] = squash(p.compute_s, scale)
        per[:, B] = squash(hop_in, scale)
        per[:, B + 1] = squash(p.client_out_s, scale)
        per[:, B + 2: 2 * B + 2] = np.floor(st.free_bytes[:, None] / p.mem_bytes[None, :] + _EPS) / L
        per[:, 2 * B + 2] = prev
        room = np.floor(st.free_bytes / p.mem_bytes.min() + _EPS) >= 1.0
        for col, table in ((2 * B + 3, p.transfer_s + p.client_out_s[None, :]),
                           (2 * B + 4, p.transfer_s + np.where(np.eye(S, dtype=bool), np.inf, 0.0))):
            t = np.where(room[None, :], table, np.inf).min(axis=1)
            per[:, col] = np.where(np.isfinite(t), squash(np.where(np.isfinite(t), t, 0.0), scale), 1.0)
        eps = max(p.budget, 1e-12)
        glob = np.empty(N_GLOBAL_BASE + B)
        glob[0] = st.layer / L
        glob[1] = (L - st.layer) / L
        glob[2] = st.spent / eps
        glob[3] = (p.budget - st.spent - self._tables.min_rest[st.layer]) / eps
        glob[4] = L / 100.0
        k, w = st.layer, self._preferred
        rest = float(self._tables.rest[k, w])
        slots = np.floor(st.free_bytes / p.mem_bytes[w] + _EPS).sum()
        glob[5] = (p.budget - st.spent) / rest - 1.0 if rest > 0 else 1.0
        glob[6] = slots / (L - k) - 1.0 if k < L else 1.0
        glob[N_GLOBAL_BASE:] = squash(p.error[l] * L / eps, 1.0)
        parts = [per.ravel(), glob]
        if sc.lookahead:
            look = np.ones(S * B + 1)
            acts = np.flatnonzero(self._mask)
            look[-1] = 0.0
            if acts.size:
                q = self._lookahead.q_values(st.layer, st.prev_server, st.free_bytes, st.spent, acts)
                look[acts] = squash(q - q.min(), scale * LOOKAHEAD_DIFF_SCALE)
                look[-1] = squash(q.min(), scale)
            parts.append(look)
        obs = np.concatenate(parts).astype(np.float32)
        return np.clip(obs, -1.0, 1.0, out=obs)

    def _info(self) -> dict:
        return {"action_mask": self._mask.copy(), "invalid_action": False, "layer": self.state.layer}

    # -------------------------------------------------------------- metrics
    def episode_metrics(self) -> dict[str, float]:
        st, sc = self.state, self.scenario
        p, k = st.problem, st.layer
        done = k == p.n_layers
        # the widths' sum is an integer, exact in any order: the figures of quantization_ratio(bits) and bits.mean()
        total_bits = float(sum([p.bits[i] for i in st.bit_idx[:k].tolist()]))
        latency = st.latency_s + (0.0 if done else sc.infeasible_penalty_s)
        out = {
            "per_token_latency_s": float(latency),
            "completed": float(done),
            "quantization_ratio": total_bits / (FP16_BITS * k) if k else 0.0,
            "mean_bits": total_bits / k if k else 0.0,
            "quality_used_frac": float(st.spent / p.budget) if p.budget > 0 else 0.0,
            "servers_used": float(len(set(st.servers[:k].tolist()))),
            "transfer_share": float(self._transfer_s / st.latency_s) if st.latency_s > 0 else 0.0,
        }
        if sc.solve_ilp:
            ilp = st.ilp
            opt = float(ilp.objective_s) if ilp is not None and ilp.placement is not None else float("nan")
            out["ilp_latency_s"] = opt
            out["ilp_optimal"] = float(ilp is not None and ilp.status == "optimal")
            out["optimality_gap"] = latency / opt - 1.0 if opt > 0 else float("nan")
        return out

    def invariant_violations(self) -> list[str]:
        st = self.state
        p, k, bad = st.problem, st.layer, []
        used = np.bincount(st.servers[:k], weights=p.mem_bytes[st.bit_idx[:k]], minlength=p.n_servers)
        if np.any(used > p.capacity_bytes * (1 + 1e-9) + 1e-6):
            bad.append(f"memory exceeded: used {used} > capacity {p.capacity_bytes}")
        if not np.allclose(st.free_bytes, p.capacity_bytes - used, rtol=1e-9, atol=1e-3):
            bad.append("free memory does not match the placed layers")
        if st.spent > p.budget * (1 + 1e-9) + 1e-12:
            bad.append(f"quality budget exceeded: {st.spent} > {p.budget}")
        if np.any(st.servers[:k] < 0) or np.any(st.servers[k:] >= 0):
            bad.append("placed layers do not match the layer counter")
        if k == p.n_layers and abs(plan_latency_s(p, st.servers, st.bit_idx) - st.latency_s) > 1e-9:
            bad.append("per-token latency differs from the sum of its parts")
        if st.latency_s < 0:
            bad.append("negative latency")
        return bad

    # ------------------------------------------------------------- rendering
    def _render_ansi(self) -> str:
        st = self.state
        p = st.problem
        lines = [f"{st.model}: layer {st.layer}/{p.n_layers}  latency {st.latency_s * 1e3:.3f} ms/token  "
                 f"quality {st.spent:.4g}/{p.budget:.4g}  errors: {error_source(st.model)}"]
        for s in range(p.n_servers):
            layers = np.flatnonzero(st.servers == s)
            desc = " ".join(f"{l}@{p.bits[st.bit_idx[l]]}b" for l in layers)
            used = p.capacity_bytes[s] - st.free_bytes[s]
            lines.append(f"  server {s} {st.devices[s]:<15} {used / 2**20:8.1f}/{p.capacity_bytes[s] / 2**20:8.1f} MiB"
                         f"  {desc}")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        from ..render import bars_rgb

        st = self.state
        p = st.problem
        labels = [f"{s}:{d}" for s, d in enumerate(st.devices)]
        used = (p.capacity_bytes - st.free_bytes) / 2**20
        return bars_rgb(labels, used, p.capacity_bytes / 2**20, unit="MiB",
                        title=f"{st.model}: layer {st.layer}/{p.n_layers}, memory used per server")
