"""EdgeCloudOffload-v0: dispatch LLM service requests to M edge servers or the cloud (PerLLM, DESIGN 4.3).

What we know of PerLLM is its abstract (and secondary sources): diverse LLM
services with processing-time requirements, edge servers and a cloud,
fluctuating bandwidth, an objective of weighted transmission + inference + idle
energy under the requirements, bandwidth and compute/memory limits, and the
CS-UCB learner. The paper body was not available to us: the queueing, memory,
bandwidth-chain and reward details below are our choices, stated where made.
"""

from __future__ import annotations

import csv
import functools
import os
from collections import deque
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .. import costs
from ..catalog import get_device, get_link, get_model
from ..metrics import mean_or_zero
from ..scenario import register_preset, require, resolve_scenario
from ..workload import WorkloadSpec, sample_requests, workload_preset
from . import edge_cloud_kernels as ker
from .base import MaskedEnv
from .edge_cloud_kernels import (BACKLOG, C_E_IDLE, C_E_INFER, C_E_TRAN, C_ENERGY_SCALE, C_MISS_PENALTY, C_NOW,
                                 C_PERIOD, C_SLOT_S, C_T0, C_TIME_SCALE, C_W_IDLE, COMPUTE, DOWNLOAD,
                                 ENERGY, FREE_MEM, K_COMPLETED, K_DRAW_END, K_DRAW_POS, K_I, K_SLOT,
                                 K_TRACE, LATENCY, N_ACTION_FEATURES, R_ARRIVAL, R_COMPUTE, R_DOWN, R_END, R_KV,
                                 R_LATENCY, R_REQUIREMENT, R_START, R_UP, RI_ACTION, RI_SERVICE, RI_UNIT, U_FREE_AT,
                                 U_KV_RESERVED, U_LINK_LAT, U_MEM_FREE0, U_MEM_TOTAL, U_P_BUSY, U_P_IDLE, U_P_TX,
                                 U_READY, U_TOP, U_TRACE_OFFSET, U_TRAN_W, UI_COUNT, UI_HEAD, UI_LEVEL, UI_TAIL, UPLOAD,
                                 WAIT)

__all__ = ["ServiceSpec", "EdgeCloudScenario", "EdgeCloudState", "EdgeCloudOffloadEnv", "load_bandwidth_trace",
           "markov_level_cdfs"]

ENV_KEY = "EdgeCloudOffload"
N_REQUEST_FEATURES = 5
MAX_CHAIN_STEPS = 256  # bandwidth slots beyond this are drawn from P^256 (the chain has mixed by then)
# columns of the per-action table (EdgeCloudState.table): BACKLOG, UPLOAD, WAIT, COMPUTE, DOWNLOAD,
# LATENCY, ENERGY, FREE_MEM (from edge_cloud_kernels)
BITS = (2, 3, 4, 8, 16, 32)


@dataclass(frozen=True)
class ServiceSpec:
    """An LLM service type: its model (at `bits` per weight, on every server), its share of the
    requests, the slack of its processing-time requirement and the bytes attached to each request.

    Requirement of a request = `slack` x its ideal latency (nominal bandwidth, empty queue) on the
    fastest server that can host it (DESIGN 2: deadlines are a slack factor x the ideal latency).
    """

    name: str = "chat"
    model: str = "llama-2-7b"
    bits: int = 8
    share: float = 1.0
    slack: float = 4.0
    payload_bytes: float = 0.0

    def __post_init__(self) -> None:
        get_model(self.model)
        require(self.bits in BITS, "bits", self.bits, f"one of {BITS}")
        require(self.share > 0, "share", self.share, "> 0")
        require(self.slack >= 1.0, "slack", self.slack, ">= 1 (a requirement the fastest server cannot meet)")
        require(self.payload_bytes >= 0, "payload_bytes", self.payload_bytes, ">= 0")


def _default_services() -> tuple[ServiceSpec, ...]:
    # PerLLM served 6B-33B models; catalog models in that range: Llama-2-7B (6.7B),
    # Qwen2.5-14B, Qwen2.5-32B (32.5B). int8 weights (CPU servers run quantized models).
    return (
        ServiceSpec("chat", "llama-2-7b", 8, 0.5, 6.0, 0.0),
        ServiceSpec("summarize", "qwen2.5-14b", 8, 0.3, 40.0, 262144.0),
        ServiceSpec("code", "qwen2.5-32b", 4, 0.2, 60.0, 0.0),
    )


@dataclass(frozen=True)
class EdgeCloudScenario:
    """M identical edge servers (each with its own access link) and a cloud of `cloud_gpus` GPUs
    behind a WAN link. Every server processes one request at a time, first come first served.

    Edge server m holds the weights of the services named in `edge_hosts[m]` (empty: every
    service) in `edge_mem_bytes` of memory (0: the device's); a request also reserves its KV
    cache there from dispatch to completion. The cloud hosts every service (its memory is not
    modelled). Link bandwidth = nominal (catalog link) x a level of `bw_levels`, a Markov chain
    per link that moves every `bw_slot_s` seconds (stay with `bw_stay_prob`, else to a
    neighbouring level), or, with `bw_trace_path`, a CSV trace (columns time_s, edge_bps,
    cloud_bps; each link reads it from its own random offset, looping).
    """

    services: tuple[ServiceSpec, ...] = field(default_factory=_default_services)
    n_edge: int = 6
    edge_device: str = "xeon-gold-6248"
    edge_mem_bytes: float = 0.0
    edge_hosts: tuple[tuple[str, ...], ...] = (
        ("chat", "summarize"), ("chat", "summarize"), ("summarize", "code"),
        ("summarize", "code"), ("chat", "code"), ("chat", "code"),
    )
    cloud_device: str = "a100-80gb"
    cloud_gpus: int = 1
    edge_link: str = "wifi"
    cloud_link: str = "wan-cloud"
    bw_levels: tuple[float, ...] = (0.2, 0.5, 1.0)
    bw_stay_prob: float = 0.9
    bw_slot_s: float = 1.0
    bw_trace_path: str = ""
    bytes_per_token: float = 4.0
    edge_tx_power_w: float = 2.0
    cloud_tx_power_w: float = 5.0
    w_tran: float = 1.0
    w_infer: float = 1.0
    w_idle: float = 1.0
    energy_scale_j: float = 1000.0
    miss_penalty: float = 1.0
    time_scale_s: float = 10.0
    # Token lengths of chat-style services (median 256 / 128); Poisson at 1.1 req/s loads the
    # one A100 to about 0.95 on its own (mean cloud compute 0.86 s), so the edge servers help.
    workload: WorkloadSpec = field(default_factory=lambda: WorkloadSpec(
        "poisson", 1.1, prompt_median=256, prompt_p99=2048, prompt_max=8192,
        output_median=128, output_p99=512, output_max=2048))
    n_requests: int = 600

    def __post_init__(self) -> None:
        require(len(self.services) >= 1, "services", self.services, "a list of at least one service")
        names = [s.name for s in self.services]
        require(len(set(names)) == len(names), "services", names, "uniquely named")
        require(self.n_edge >= 1, "n_edge", self.n_edge, ">= 1")
        edge = get_device(self.edge_device)
        get_device(self.cloud_device), get_link(self.edge_link), get_link(self.cloud_link)
        require(self.edge_mem_bytes >= 0, "edge_mem_bytes", self.edge_mem_bytes, ">= 0 (0: the device's memory)")
        require(self.cloud_gpus >= 1, "cloud_gpus", self.cloud_gpus, ">= 1")
        require(len(self.edge_hosts) in (0, self.n_edge), "edge_hosts", self.edge_hosts,
                f"empty or one list of service names per edge server ({self.n_edge})")
        mem = self.edge_mem_bytes or edge.mem_bytes
        for m, hosted in enumerate(self.edge_hosts):
            unknown = sorted(set(hosted) - set(names))
            require(not unknown, f"edge_hosts[{m}]", hosted, f"service names among {names}")
            need = sum(self.weight_bytes(n) for n in set(hosted))
            require(need <= mem, f"edge_hosts[{m}]", hosted, f"models whose weights ({need:.3g} B) fit in {mem:.3g} B")
        require(len(self.bw_levels) >= 1 and min(self.bw_levels) > 0, "bw_levels", self.bw_levels,
                "a list of bandwidth multipliers > 0")
        require(list(self.bw_levels) == sorted(set(self.bw_levels)), "bw_levels", self.bw_levels,
                "strictly increasing")
        require(0 <= self.bw_stay_prob <= 1, "bw_stay_prob", self.bw_stay_prob, "in [0, 1]")
        require(self.bw_slot_s > 0, "bw_slot_s", self.bw_slot_s, "> 0")
        if self.bw_trace_path:
            require(os.path.isfile(self.bw_trace_path), "bw_trace_path", self.bw_trace_path, "an existing CSV file")
            load_bandwidth_trace(self.bw_trace_path)
        for name in ("bytes_per_token", "edge_tx_power_w", "cloud_tx_power_w", "w_tran", "w_infer", "w_idle",
                     "miss_penalty"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        for name in ("energy_scale_j", "time_scale_s"):
            require(getattr(self, name) > 0, name, getattr(self, name), "> 0")
        require(self.n_requests >= 1, "n_requests", self.n_requests, ">= 1")

    def service(self, name: str) -> ServiceSpec:
        return next(s for s in self.services if s.name == name)

    def weight_bytes(self, service: str) -> float:
        """All weights of a service's model at its bits (layers, embeddings, LM head)."""
        s = self.service(service)
        return costs.total_params(get_model(s.model)) * s.bits / 8


def _bursty_code() -> EdgeCloudScenario:
    # Azure code 2023 fit (hyper-exponential inter-arrivals, CV 13.2; prompt median 1469, output 13)
    # at a rate that loads the cloud to about 1.0 on average: long bursts overload it.
    return EdgeCloudScenario(workload=workload_preset("azure-code-2023", rate_per_s=1.2))


def _azure_conv() -> EdgeCloudScenario:
    # Azure conversation 2023 fit (Poisson; prompt median 1020 / p99 4142, output 129 / 601).
    return EdgeCloudScenario(workload=workload_preset("azure-conv-2023", rate_per_s=1.1))


def _small() -> EdgeCloudScenario:
    return EdgeCloudScenario(
        services=(ServiceSpec("chat", "llama-2-7b", 8, 0.6, 6.0), ServiceSpec("code", "qwen2.5-14b", 4, 0.4, 40.0)),
        n_edge=2, edge_hosts=(("chat",), ("code",)), n_requests=40,
        workload=WorkloadSpec("poisson", 1.5, prompt_median=128, prompt_p99=512, output_median=64, output_p99=256))


register_preset(ENV_KEY, "default", EdgeCloudScenario())
register_preset(ENV_KEY, "bursty-code", _bursty_code())
register_preset(ENV_KEY, "azure-conv", _azure_conv())
register_preset(ENV_KEY, "small", _small())


@functools.lru_cache(maxsize=8)
def load_bandwidth_trace(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a bandwidth CSV (lines starting with # are comments): time_s, edge_bps, cloud_bps.

    Returns (time_s from 0, edge_bps, cloud_bps); times strictly increasing, rates > 0.
    """
    with open(path, newline="") as f:
        rows = list(csv.DictReader(line for line in f if line.strip() and not line.lstrip().startswith("#")))
    if not rows or {"time_s", "edge_bps", "cloud_bps"} - set(rows[0]):
        raise ValueError(f"bw_trace_path {path!r} needs columns time_s, edge_bps, cloud_bps and at least one row")
    t, e, c = (np.array([float(r[k]) for r in rows]) for k in ("time_s", "edge_bps", "cloud_bps"))
    if np.any(np.diff(t) <= 0) or min(e.min(), c.min()) <= 0:
        raise ValueError(f"bw_trace_path {path!r}: times must increase and rates be > 0")
    return t - t[0], e, c


def markov_level_cdfs(n_levels: int, stay_prob: float, max_steps: int = MAX_CHAIN_STEPS) -> np.ndarray:
    """Cumulative rows of P^k, k = 0..max_steps, for the level chain: stay with `stay_prob`,
    else move to a neighbouring level (either with equal chance; the only one at an end).
    Shape (max_steps + 1, n_levels, n_levels); the last column is exactly 1."""
    p = np.eye(n_levels)
    if n_levels > 1:
        p *= stay_prob
        for i in range(n_levels):
            nb = [j for j in (i - 1, i + 1) if 0 <= j < n_levels]
            for j in nb:
                p[i, j] = (1 - stay_prob) / len(nb)
    powers = np.empty((max_steps + 1, n_levels, n_levels))
    powers[0] = np.eye(n_levels)
    for k in range(1, max_steps + 1):
        powers[k] = powers[k - 1] @ p
    cdf = np.cumsum(powers, axis=2)
    cdf[..., -1] = 1.0
    return cdf


class EdgeCloudState:
    """What reference policies may read (`env.unwrapped.state`; read-only by convention).

    The current request (`service` index into the scenario's services) and, per action
    (edge servers 0..M-1, then the cloud), what dispatching it there would give: upload and
    download times at the current bandwidth, queueing wait, compute time, total latency, and
    the weighted transmission + inference energy `w_tran E_tran + w_infer E_infer` (J).
    The per-action arrays are columns of one table (`table`, action x quantity). `valid` is
    the action mask (read-only). Every attribute reads the env's compiled-step buffers when
    read: `table` and `bw_bps` are the same array objects from step to step, updated in place,
    so read them through the state at each step. After the last request the state keeps
    describing it (only `bw_bps` moves on).
    """

    def __init__(self, env: "EdgeCloudOffloadEnv") -> None:
        self._env = env
        self.n_edge = env.scenario.n_edge

    def __repr__(self) -> str:
        return (f"EdgeCloudState(now_s={self.now_s!r}, request={self.request}, service={self.service}, "
                f"prompt_tokens={self.prompt_tokens}, output_tokens={self.output_tokens}, "
                f"upload_bytes={self.upload_bytes!r}, requirement_s={self.requirement_s!r}, "
                f"valid={self.valid!r}, n_edge={self.n_edge})")

    @property
    def now_s(self) -> float:
        """The request's arrival (time moves from arrival to arrival: it was the time when it came)."""
        return float(self._env._req[self.request, R_ARRIVAL])

    @property
    def request(self) -> int:
        """The request being dispatched (after the last one: the last)."""
        env = self._env
        return min(int(env._count[K_I]), len(env._req) - 1)

    @property
    def service(self) -> int:
        return int(self._env._req_i[self.request, RI_SERVICE])

    @property
    def prompt_tokens(self) -> int:
        return int(self._env._prompt[self.request])

    @property
    def output_tokens(self) -> int:
        return int(self._env._output[self.request])

    @property
    def upload_bytes(self) -> float:
        return float(self._env._req[self.request, R_UP])

    @property
    def requirement_s(self) -> float:
        return float(self._env._req[self.request, R_REQUIREMENT])

    @property
    def valid(self) -> np.ndarray:
        """The action mask (read-only)."""
        return self._env._mask

    @property
    def table(self) -> np.ndarray:
        """Per action (rows) backlog, upload, wait, compute, download, latency, energy, free memory."""
        return self._env._table

    @property
    def bw_bps(self) -> np.ndarray:
        """Each link's bandwidth now (bit/s): the M edge links, then the cloud's."""
        return self._env._bw

    @property
    def backlog_s(self) -> np.ndarray:
        return self.table[:, BACKLOG]

    @property
    def free_mem_bytes(self) -> np.ndarray:
        """Free edge memory (B) now; +inf for the cloud (not modelled)."""
        return self.table[:, FREE_MEM]

    @property
    def upload_s(self) -> np.ndarray:
        return self.table[:, UPLOAD]

    @property
    def wait_s(self) -> np.ndarray:
        return self.table[:, WAIT]

    @property
    def compute_s(self) -> np.ndarray:
        return self.table[:, COMPUTE]

    @property
    def download_s(self) -> np.ndarray:
        return self.table[:, DOWNLOAD]

    @property
    def latency_s(self) -> np.ndarray:
        return self.table[:, LATENCY]

    @property
    def energy_j(self) -> np.ndarray:
        return self.table[:, ENERGY]


class EdgeCloudOffloadEnv(MaskedEnv):
    """
    ## Description
    LLM service requests of several types (model, prompt and output tokens, attached bytes,
    processing-time requirement) arrive over time; each is dispatched on arrival to one of
    M edge servers (default: 6 Xeon Gold 6248 CPU servers, each on its own Wi-Fi-class access
    link) or to the cloud (default: one A100 80GB behind a 100 Mb/s, 25 ms WAN link). Every
    link's bandwidth follows a Markov chain over levels (or a trace file). Each server runs one
    request at a time, first come first served; latency = upload (request bytes at the current
    bandwidth) + queueing + compute (roofline cost model) + result download. Energy per request:
    transmission P_tx x upload time and inference P_busy x compute time; idle energy P_idle x
    idle time of every server, accrued as time passes. This is the problem of PerLLM's CS-UCB
    (DESIGN 4.3; known to us from the abstract only, the details are our choices).

    ## Action Space
    `Discrete(M + 1)`: action m < M sends the request to edge server m, action M to the cloud
    (the cloud GPU that frees first). Edge servers that do not hold the request's service model,
    or lack the memory for its KV cache, are masked (`action_masks()`, `info["action_mask"]`);
    the cloud is always valid.

    ## Observation Space
    `Box(-1, 1, (K + 5 + 7 (M + 1),), float32)`, K service types. The request: service one-hot,
    prompt tokens x/(x+1024), output tokens x/(x+256), upload bytes x/(x+1e6), requirement
    squashed by `time_scale_s`, share of the episode's requests dispatched. Per action: valid,
    backlog (s, squashed), free memory share, bandwidth / (nominal x top level), busy now
    (power state), latency / requirement of this request there x/(x+1), and its weighted
    energy / energy_scale_j x/(x+1).

    ## Rewards
    Per step: -(w_tran E_tran + w_infer E_infer of the dispatched request + w_idle x idle
    energy of all servers until the next arrival) / energy_scale_j, minus `miss_penalty` when
    the request's latency exceeds its requirement. The idle energy from the last arrival until
    every server has finished is in the last step, so the undiscounted return is minus the
    episode's whole weighted energy (in units of energy_scale_j) minus the penalties.

    ## Starting State
    `n_requests` requests drawn from the workload and the service shares with `np_random`;
    bandwidth levels drawn uniformly (or trace offsets); servers empty; time = first arrival.

    ## Episode End
    Terminated when every request has been dispatched (the last step accounts for the tail
    until all servers finish). Truncated after `max_invalid_streak` masked actions in a row.

    ## Arguments
    `gymnasium.make("edgellm_gym/EdgeCloudOffload-v0", scenario="default", render_mode=None,
    invalid_action="penalize", invalid_action_penalty=1.0, max_invalid_streak=100)`;
    `scenario`: a preset ("default", "bursty-code", "azure-conv", "small"), a YAML path, a dict
    or an `EdgeCloudScenario`.

    ## Info
    `action_mask`, `invalid_action`, `now_s`, and after a valid action `dispatched`: the
    request's service, action, latency_s, requirement_s, energy_j (weighted transmission +
    inference), met. At the end `episode_metrics`: throughput_rps (requests within their
    requirement per second of the episode span), energy_per_request_j (unweighted transmission
    + inference + idle), deadline_satisfaction, cloud_share, mean_latency_s.

    ## Version History
    * v0: initial version.
    """

    def __init__(self, scenario=None, render_mode: str | None = None, invalid_action: str = "penalize",
                 invalid_action_penalty: float = 1.0, max_invalid_streak: int = 100) -> None:
        super().__init__(render_mode, invalid_action, invalid_action_penalty, max_invalid_streak)
        self.scenario = sc = resolve_scenario(EdgeCloudScenario, ENV_KEY, scenario)
        m, k, g = sc.n_edge, len(sc.services), sc.cloud_gpus
        self._edge, self._cloud = get_device(sc.edge_device), get_device(sc.cloud_device)
        self._models = [get_model(s.model) for s in sc.services]
        # per unit (M edge servers, then G cloud GPUs) and per action (M edge, 1 cloud) constants
        self._p_idle = np.array([self._edge.power_idle_w] * m + [self._cloud.power_idle_w] * g)
        self._p_tx = np.array([sc.edge_tx_power_w] * m + [sc.cloud_tx_power_w])
        self._p_busy_action = np.array([self._edge.power_busy_w] * m + [self._cloud.power_busy_w])
        el, cl = get_link(sc.edge_link), get_link(sc.cloud_link)
        self._nominal_bps = np.array([el.bw_bps] * m + [cl.bw_bps])
        self._latency_s = np.array([el.latency_s] * m + [cl.latency_s])
        names = [s.name for s in sc.services]
        hosts = sc.edge_hosts or tuple(tuple(names) for _ in range(m))
        self._hosted = np.array([[s.name in hosts[j] for j in range(m)] for s in sc.services])  # (K, M)
        mem = sc.edge_mem_bytes or self._edge.mem_bytes
        self._mem_total = np.full(m, float(mem))
        self._mem_weights = np.array([sum(sc.weight_bytes(n) for n in set(hosts[j])) for j in range(m)])
        self._kv_per_token = np.array([costs.kv_bytes_per_token_layer(md) * md.n_layers for md in self._models])
        if sc.bw_trace_path:
            t, e, c = load_bandwidth_trace(sc.bw_trace_path)
            period = t[-1] + (t[-1] - t[-2] if len(t) > 1 else 1.0)
            self._trace = (t, period, np.stack([e] * m + [c]))  # (M+1, rows)
            self._allowed_bps = [np.unique(e)] * m + [np.unique(c)]
            top = np.array([e.max()] * m + [c.max()])
            levels, cdf = np.ones(1), np.ones((1, 1, 1))  # unused
        else:
            self._trace = None
            levels = np.asarray(sc.bw_levels, dtype=float)
            cdf = markov_level_cdfs(len(sc.bw_levels), sc.bw_stay_prob)
            self._allowed_bps = [self._nominal_bps[j] * levels for j in range(m + 1)]
            top = self._nominal_bps * levels[-1]

        # The step runs compiled (edge_cloud_kernels) on two flat buffers, f (float64) and x (int64),
        # cut into parts with named columns; `_build_views` binds numpy views of them. Per request
        # (F_REQ, X_REQ): its numbers, dispatch and place in its unit's job list; per unit (F_UNITS,
        # X_UNITS): constants, when it frees, reserved KV memory, its job list, link bandwidth level.
        n, u, links, trace_rows = sc.n_requests, m + g, m + 1, len(self._trace[0]) if self._trace else 1
        self._f, self._x = ker.allocate(
            [(1, ker.N_CLOCK), (u, ker.N_UNIT_COLS), (n, ker.R_COMPUTE + 2 * links + k + N_REQUEST_FEATURES),
             (links, 8), (1, links), (links, len(levels)), (cdf.shape[0] * cdf.shape[1], cdf.shape[2]),
             (1, trace_rows), (links, trace_rows), (1, links * n)],  # the F_* parts in order
            [(1, ker.N_COUNT), (u, 4), (n, 4), (k, m), (1, links)])  # the X_* parts in order
        # the observation, float32, kept current in place by the kernels
        self._obs_buf = np.zeros(k + N_REQUEST_FEATURES + N_ACTION_FEATURES * (m + 1), dtype=np.float32)
        self._build_views()
        clock, units = self._clock, self._units
        clock[[C_TIME_SCALE, C_ENERGY_SCALE, C_W_IDLE, C_MISS_PENALTY, C_SLOT_S]] = (
            sc.time_scale_s, sc.energy_scale_j, sc.w_idle, sc.miss_penalty, sc.bw_slot_s)
        units[:, U_P_IDLE] = self._p_idle
        for col, values in ((U_P_TX, self._p_tx), (U_P_BUSY, self._p_busy_action), (U_LINK_LAT, self._latency_s),
                            (U_TRAN_W, sc.w_tran * self._p_tx), (U_TOP, top)):
            units[:links, col] = values
        # free memory of an empty edge server, its total
        units[:m, U_MEM_FREE0], units[:m, U_MEM_TOTAL] = self._mem_total - self._mem_weights, self._mem_total
        self._hosted_x[:] = self._hosted
        if self._trace is None:
            self._level_bps[:] = self._nominal_bps[:, None] * levels  # nominal x level, as the chain sets it
            self._cdf[:] = cdf.reshape(self._cdf.shape)
        else:
            clock[C_PERIOD] = self._trace[1]
            self._trace_t[:], self._trace_bps[:] = self._trace[0], self._trace[2]
            self._count[K_TRACE] = 1
        self._rng_snapshot: dict | None = None  # np_random's state before the pre-drawn uniforms (see np_random)
        self._mask_patterns: dict[int, np.ndarray] = {}  # mask code -> the mask (read-only)
        self.action_space = spaces.Discrete(m + 1)
        self.observation_space = spaces.Box(-1.0, 1.0, (k + N_REQUEST_FEATURES + N_ACTION_FEATURES * (m + 1),),
                                            np.float32)
        self._mask = np.zeros(m + 1, dtype=bool)
        self._mask[m] = True  # the cloud is always valid
        self._record_segments = render_mode == "rgb_array"  # the timeline only an rgb frame draws
        self._segments: deque = deque(maxlen=80)
        self.state: EdgeCloudState | None = None

    _VIEWS = ("_clock", "_units", "_req", "_table", "_bw", "_level_bps", "_cdf", "_trace_t", "_trace_bps",
              "_draws", "_count", "_units_i", "_req_i", "_hosted_x", "_mask_x")

    def _build_views(self) -> None:
        """Named views of the kernels' buffers (`edge_cloud_kernels.Sim`, 1-row parts as 1-d);
        rebuilt after unpickling or deep-copying (a copied view no longer shares its base's memory)."""
        (self._clock, self._units, self._req, self._table, self._bw, self._level_bps, self._cdf, self._trace_t,
         self._trace_bps, self._draws, self._count, self._units_i, self._req_i, self._hosted_x,
         self._mask_x) = ker.views(self._f, self._x)

    # ------------------------------------------------------- random numbers
    # A step that moves the bandwidth chain draws one uniform per link from np_random. reset()
    # draws them all for the episode's arrivals at once (the same numbers: a Generator's uniforms
    # come one after another), after a snapshot of the generator; reading np_random (a reset,
    # a user) puts it back where one-by-one drawing would have left it.
    @property
    def np_random(self) -> np.random.Generator:
        if self._rng_snapshot is not None:
            self._sync_rng()
        return gym.Env.np_random.fget(self)

    @np_random.setter
    def np_random(self, value: np.random.Generator) -> None:
        self._drop_predrawn()
        gym.Env.np_random.fset(self, value)

    def _sync_rng(self) -> None:
        """Rewind np_random to the snapshot, redraw the uniforms used so far; the rest are dropped."""
        used, drawn, snapshot = int(self._count[K_DRAW_POS]), int(self._count[K_DRAW_END]), self._rng_snapshot
        self._drop_predrawn()
        rng = gym.Env.np_random.fget(self)
        if used < drawn:  # not all used: the generator is ahead
            rng.bit_generator.state = snapshot
            rng.random(used)

    def _drop_predrawn(self) -> None:
        self._rng_snapshot = None
        self._count[K_DRAW_POS] = self._count[K_DRAW_END] = 0

    def _predraw(self, rng: np.random.Generator) -> None:
        """Draw the uniforms of every bandwidth move up to the last arrival (one per link each)."""
        arrival, m = self._arrival, self.scenario.n_edge
        slots = np.floor_divide(arrival - arrival[0], self.scenario.bw_slot_s)  # each arrival's slot
        k = (m + 1) * int(np.count_nonzero(slots[1:] > slots[:-1]))
        if k:
            self._rng_snapshot = rng.bit_generator.state
            rng.random(out=self._draws[:k])
        self._count[K_DRAW_POS], self._count[K_DRAW_END] = 0, k

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._drop_predrawn()
        super().reset(seed=seed)
        sc, rng, m = self.scenario, self.np_random, self.scenario.n_edge
        req = sample_requests(sc.workload, rng, sc.n_requests)
        n = len(req)
        shares = np.array([s.share for s in sc.services])
        svc = rng.choice(len(sc.services), size=n, p=shares / shares.sum())
        payload = np.array([s.payload_bytes for s in sc.services])[svc]
        self._arrival = req.arrival_s.astype(float)
        self._prompt, self._output = req.prompt_tokens, req.output_tokens
        self._up_bytes = req.prompt_tokens * sc.bytes_per_token + payload
        self._down_bytes = req.output_tokens * sc.bytes_per_token
        self._kv = self._kv_per_token[svc] * (req.prompt_tokens + req.output_tokens)
        self._compute = np.empty((n, 2))  # column 0 on an edge server, 1 on a cloud GPU
        for k, s in enumerate(sc.services):
            idx = np.flatnonzero(svc == k)
            for col, dev in ((0, self._edge), (1, self._cloud)):
                self._compute[idx, col] = costs.request_time_s(self._models[k], dev, req.prompt_tokens[idx],
                                                               req.output_tokens[idx], s.bits)
        # requirement = slack x ideal latency (nominal bandwidth, idle) on the fastest hosting server
        ideal_edge = (2 * self._latency_s[0] + (self._up_bytes + self._down_bytes) * 8 / self._nominal_bps[0]
                      + self._compute[:, 0])
        ideal_cloud = (2 * self._latency_s[m] + (self._up_bytes + self._down_bytes) * 8 / self._nominal_bps[m]
                       + self._compute[:, 1])
        ideal = np.where(self._hosted.any(axis=1)[svc], np.minimum(ideal_edge, ideal_cloud), ideal_cloud)
        self._requirement = np.array([s.slack for s in sc.services])[svc] * ideal

        # the kernels' per-request part: numbers, compute time and weighted inference energy per
        # action (constant over the episode), its part of the observation; nothing dispatched yet
        r, links = self._req, m + 1
        for col, values in ((R_ARRIVAL, self._arrival), (R_KV, self._kv), (R_REQUIREMENT, self._requirement),
                            (R_UP, self._up_bytes), (R_DOWN, self._down_bytes)):
            r[:, col] = values
        compute = r[:, R_COMPUTE: R_COMPUTE + links]
        compute[:, :m], compute[:, m] = self._compute[:, :1], self._compute[:, 1]
        np.multiply(sc.w_infer * self._p_busy_action, compute, out=r[:, R_COMPUTE + links: R_COMPUTE + 2 * links])
        r[:, R_COMPUTE + 2 * links:] = self._request_features(svc)
        self._req_i[:, RI_SERVICE], self._req_i[:, RI_ACTION:] = svc, -1

        # servers, links, accounting
        self._t0 = float(self._arrival[0])
        clock, units, units_i = self._clock, self._units, self._units_i
        clock[[C_NOW, C_T0, C_E_TRAN, C_E_INFER, C_E_IDLE]] = self._t0, self._t0, 0.0, 0.0, 0.0
        units[:, U_FREE_AT] = self._t0  # per unit (M edge servers, then the cloud GPUs)
        units[:links, U_READY] = self._t0  # per action: when its server (the first free GPU) is free
        units[:m, U_KV_RESERVED] = 0.0
        units_i[:, [UI_HEAD, UI_TAIL]], units_i[:, UI_COUNT] = -1, 0  # empty job lists
        self._count[[K_I, K_SLOT, K_COMPLETED]] = 0
        if self._trace is None:
            units_i[:links, UI_LEVEL] = rng.integers(len(sc.bw_levels), size=links)
            self._predraw(rng)
        else:
            units[:links, U_TRACE_OFFSET] = rng.uniform(0.0, self._trace[1], size=links)
        self._last_now = self._t0
        self._segments.clear()
        self.state = EdgeCloudState(self)
        self._set_mask(ker.start(self._f, self._x, self._obs_buf))
        return self._obs(), self._info()

    def _request_features(self, svc: np.ndarray) -> np.ndarray:
        """Per request, its part of the observation (float32): service one-hot, prompt and output
        tokens, upload bytes and requirement squashed, share of the episode's requests before it."""
        sc, n = self.scenario, len(svc)
        k = len(sc.services)
        p, o, b, r = self._prompt, self._output, self._up_bytes, self._requirement
        return np.column_stack([np.arange(k) == svc[:, None], p / (p + 1024.0), o / (o + 256.0), b / (b + 1e6),
                                r / (r + sc.time_scale_s), np.arange(n) / n]).astype(np.float32)

    # ------------------------------------------------------------------ step
    # One compiled call does the step's arithmetic (edge_cloud_kernels.step: dispatch, idle energy
    # until the next arrival, bandwidth, the next request's table, mask and observation); here only
    # the result is packed.
    def _step(self, a: int):
        (reward, terminated, code, need, i, service, latency, requirement, weighted, met,
         now) = ker.step(a, self._f, self._x, self._obs_buf)
        if need:
            if need < 0:
                raise RuntimeError("the episode has ended: call reset()")
            # no pre-drawn uniforms left (the last step, or np_random was read): draw them now
            code = ker.finish(self._f, self._x, self._obs_buf, self.np_random.random(len(self._bw)))
        mask = self._mask_patterns.get(code)
        self._mask = mask if mask is not None else self._set_mask(code)
        if self._record_segments:
            self._segments.append((int(self._req_i[i, RI_UNIT]), float(self._req[i, R_START]),
                                   float(self._req[i, R_END]), service))
        info = {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": now,
                "dispatched": {"request": i, "service": service, "action": a, "latency_s": latency,
                               "requirement_s": requirement, "energy_j": weighted, "met": met}}
        if terminated:
            info["episode_metrics"] = self.episode_metrics()
        return self._obs_buf.copy(), reward, terminated, False, info

    def _set_mask(self, code: int) -> np.ndarray:
        """The mask of `code` (the kernels' bits; -1: read X_MASK), one read-only array per pattern."""
        key = code if code >= 0 else tuple(self._mask_x.tolist())
        mask = self._mask_patterns.get(key)
        if mask is None:
            mask = self._mask_x.astype(bool)
            mask.flags.writeable = False
            self._mask_patterns[key] = mask
        self._mask = mask
        return mask

    # --------------------------------------------------------- observations
    def _obs(self) -> np.ndarray:
        """The current request's features, then the per-action features action by action (a new array).
        Every feature is in [0, 1] by construction (no clipping needed)."""
        return self._obs_buf.copy()

    def _info(self) -> dict:
        return {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": self._now}

    # the simulation's scalars, from the kernels' buffers
    @property
    def _now(self) -> float:
        return float(self._clock[C_NOW])

    @property
    def _i(self) -> int:
        """Requests dispatched so far (the index of the current one)."""
        return int(self._count[K_I])

    def _energy(self) -> tuple[float, float, float]:
        """Unweighted transmission, inference and idle energy so far (J)."""
        return float(self._clock[C_E_TRAN]), float(self._clock[C_E_INFER]), float(self._clock[C_E_IDLE])

    # -------------------------------------------------------------- metrics
    def counts(self) -> dict[str, int]:
        """Request accounting: arrived = dispatched + pending; dispatched = completed + in servers."""
        n, i = len(self._arrival), self._i
        return {"arrived": min(i + 1, n), "dispatched": i, "pending": int(i < n),
                "completed": int(self._count[K_COMPLETED]), "in_servers": int(self._units_i[:, UI_COUNT].sum()),
                "total": n}

    def invariant_violations(self) -> list[str]:
        bad, c, now = [], self.counts(), self._now
        if now < self._last_now:
            bad.append(f"time ran backwards: {now} < {self._last_now}")
        self._last_now = now
        if c["arrived"] != c["dispatched"] + c["pending"] or c["dispatched"] != c["completed"] + c["in_servers"]:
            bad.append(f"requests lost: {c}")
        for j, bw in enumerate(self.state.bw_bps):
            if not np.any(np.isclose(bw, self._allowed_bps[j], rtol=1e-12, atol=0)):
                bad.append(f"link {j} bandwidth {bw} not one of its levels {self._allowed_bps[j]}")
        for name, e in zip(("e_tran", "e_infer", "e_idle"), self._energy()):
            if e < -1e-9:
                bad.append(f"negative energy {name}: {e}")
        kv_reserved = self._units[: self.scenario.n_edge, U_KV_RESERVED]
        if np.any(self._mem_weights + kv_reserved > self._mem_total * (1 + 1e-12)):
            bad.append("edge memory over capacity")
        if np.any(kv_reserved < -1e-6):
            bad.append("negative reserved KV memory")
        if c["pending"] and not self._mask.any():
            bad.append("no valid action in a non-terminal state")
        return bad

    def episode_metrics(self) -> dict[str, float]:
        n = self._i  # the first n requests are dispatched
        lat = self._req[:n, R_LATENCY].copy()
        met = int(np.sum(lat <= self._requirement[:n]))
        span = (float(self._units[:, U_FREE_AT].max()) if n else self._now) - self._t0
        e_tran, e_infer, e_idle = self._energy()
        energy = e_tran + e_infer + e_idle
        return {
            "throughput_rps": met / span if span > 0 else 0.0,
            "energy_per_request_j": energy / n if n else 0.0,
            "deadline_satisfaction": met / n if n else 0.0,
            "cloud_share": float(np.mean(self._req_i[:n, RI_ACTION] == self.scenario.n_edge)) if n else 0.0,
            "mean_latency_s": mean_or_zero(lat),
        }

    # ------------------------------------------------------------- rendering
    def _render_ansi(self) -> str:
        st, m = self.state, self.scenario.n_edge
        e_tran, e_infer, e_idle = self._energy()
        lines = [f"t={self._now:9.2f}s request {st.request}/{len(self._arrival)} "
                 f"service={self.scenario.services[st.service].name} requirement={st.requirement_s:.2f}s "
                 f"energy={e_tran + e_infer + e_idle:.0f} J"]
        for a in range(m + 1):
            name = f"edge {a}" if a < m else "cloud "
            lines.append(f"  {name} {'ok' if self._mask[a] else '--'} backlog={st.backlog_s[a]:7.2f}s "
                         f"bw={st.bw_bps[a] / 1e6:7.1f} Mb/s latency={st.latency_s[a]:7.2f}s "
                         f"energy={st.energy_j[a]:8.1f} J")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        from ..render import timeline_rgb

        m = self.scenario.n_edge
        rows = [f"edge {j}" for j in range(m)] + [f"cloud {g}" for g in range(self.scenario.cloud_gpus)]
        return timeline_rgb(rows, list(self._segments), self._now, title="requests per server (colour: service)")
