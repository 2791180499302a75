"""EdgeCloudOffload-v0: dispatch LLM service requests to M edge servers or the cloud (PerLLM, DESIGN 4.3).

What we know of PerLLM is its abstract (and secondary sources): diverse LLM
services with processing-time requirements, edge servers and a cloud,
fluctuating bandwidth, an objective of weighted transmission + inference + idle
energy under the requirements, bandwidth and compute/memory limits, and the
CS-UCB learner. The paper body was not available to us: the queueing, memory,
bandwidth-chain and reward details below are our choices, stated where made.
"""

from __future__ import annotations

import bisect
import csv
import functools
import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from .. import costs
from ..catalog import get_device, get_link, get_model
from ..metrics import mean_or_zero
from ..scenario import register_preset, require, resolve_scenario
from ..workload import WorkloadSpec, sample_requests, workload_preset
from .base import MaskedEnv

__all__ = ["ServiceSpec", "EdgeCloudScenario", "EdgeCloudState", "EdgeCloudOffloadEnv", "load_bandwidth_trace",
           "markov_level_cdfs"]

ENV_KEY = "EdgeCloudOffload"
N_ACTION_FEATURES = 7
N_REQUEST_FEATURES = 5
MAX_CHAIN_STEPS = 256  # bandwidth slots beyond this are drawn from P^256 (the chain has mixed by then)
# columns of the per-action table (EdgeCloudState.table)
BACKLOG, UPLOAD, WAIT, COMPUTE, DOWNLOAD, LATENCY, ENERGY, FREE_MEM = range(8)
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


@dataclass
class EdgeCloudState:
    """What reference policies may read (`env.unwrapped.state`; read-only by convention).

    The current request (`service` index into the scenario's services) and, per action
    (edge servers 0..M-1, then the cloud), what dispatching it there would give: upload and
    download times at the current bandwidth, queueing wait, compute time, total latency, and
    the weighted transmission + inference energy `w_tran E_tran + w_infer E_infer` (J).
    The per-action arrays are columns of one table (`table`, action x quantity). `valid` is
    the action mask (read-only). The env's step path keeps the table and the link bandwidths
    as Python numbers; `table` and `bw_bps` fill their arrays from them when read (the same
    array objects, updated in place), so read them through the state at each step.
    """

    now_s: float
    request: int
    service: int
    prompt_tokens: int
    output_tokens: int
    upload_bytes: float
    requirement_s: float
    valid: np.ndarray
    n_edge: int
    _table: np.ndarray = field(repr=False)
    _bw: np.ndarray = field(repr=False)
    _table_values: list | None = field(default=None, repr=False)  # row-major, not yet in `_table`
    _bw_values: list | None = field(default=None, repr=False)  # not yet in `_bw`

    @property
    def table(self) -> np.ndarray:
        """Per action (rows) backlog, upload, wait, compute, download, latency, energy, free memory."""
        if self._table_values is not None:
            self._table.reshape(-1)[:] = self._table_values
            self._table_values = None
        return self._table

    @property
    def bw_bps(self) -> np.ndarray:
        """Each link's bandwidth now (bit/s): the M edge links, then the cloud's."""
        if self._bw_values is not None:
            self._bw[:] = self._bw_values
            self._bw_values = None
        return self._bw

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
        self._p_busy = np.array([self._edge.power_busy_w] * m + [self._cloud.power_busy_w] * g)
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
        else:
            self._trace = None
            self._level_cdf = markov_level_cdfs(len(sc.bw_levels), sc.bw_stay_prob)
            self._level_cdf_rows = self._level_cdf.tolist()  # [k][level]: a cumulative row, for bisect
            self._levels = np.asarray(sc.bw_levels, dtype=float)
            self._level_list = self._levels.tolist()
            self._allowed_bps = [self._nominal_bps[j] * self._levels for j in range(m + 1)]
            top = self._nominal_bps * self._levels[-1]
        self._top_bps = top
        self._mem_free0 = self._mem_total - self._mem_weights  # free memory of an empty edge server
        self._tran_w = sc.w_tran * self._p_tx
        # the step path works on Python floats: per unit or action, a handful of scalars each
        # (faster than numpy calls on arrays of M+1 elements)
        self._p_idle_list, self._p_tx_list = self._p_idle.tolist(), self._p_tx.tolist()
        self._p_busy_list, self._latency_list = self._p_busy_action.tolist(), self._latency_s.tolist()
        self._tran_w_list, self._hosted_rows = self._tran_w.tolist(), self._hosted.tolist()
        self._mem_free0_list, self._mem_total_list = self._mem_free0.tolist(), self._mem_total.tolist()
        self._top_list, self._nominal_list = self._top_bps.tolist(), self._nominal_bps.tolist()
        # the observation, float32, kept current in place: the request's features, then the features
        # action by action; the last two of an action's are squashed x / (x + 1) in float32, as
        # x / (c x + 1) over all of them (c = 1 there, else 0)
        self._obs_buf = np.zeros(k + N_REQUEST_FEATURES + N_ACTION_FEATURES * (m + 1), dtype=np.float32)
        c = np.zeros((m + 1, N_ACTION_FEATURES), dtype=np.float32)
        c[:, 5:7] = 1.0
        self._obs_c = c.ravel()
        self._obs_tmp = np.zeros(N_ACTION_FEATURES * (m + 1), dtype=np.float32)
        self._obs_one = np.ones(N_ACTION_FEATURES * (m + 1), dtype=np.float32)
        self._build_views()
        self._mask_patterns: dict[tuple[bool, ...], np.ndarray] = {}  # valid actions -> the mask (read-only)
        self.action_space = spaces.Discrete(m + 1)
        self.observation_space = spaces.Box(-1.0, 1.0, (k + N_REQUEST_FEATURES + N_ACTION_FEATURES * (m + 1),),
                                            np.float32)
        self._mask = np.zeros(m + 1, dtype=bool)
        self._mask[m] = True  # the cloud is always valid
        self._record_segments = render_mode == "rgb_array"  # the timeline only an rgb frame draws
        self.state: EdgeCloudState | None = None

    _VIEWS = ("_obs_head", "_obs_flat", "_obs_act")

    def _build_views(self) -> None:
        """Views of the observation buffer the step path writes through; rebuilt after unpickling
        or deep-copying (a copied view no longer shares its base's memory)."""
        head = len(self.scenario.services) + N_REQUEST_FEATURES
        self._obs_head = self._obs_buf[:head]
        self._obs_flat = self._obs_buf[head:]
        self._obs_act = self._obs_flat.reshape(self.scenario.n_edge + 1, N_ACTION_FEATURES)

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sc, rng, m = self.scenario, self.np_random, self.scenario.n_edge
        req = sample_requests(sc.workload, rng, sc.n_requests)
        n = len(req)
        shares = np.array([s.share for s in sc.services])
        svc = rng.choice(len(sc.services), size=n, p=shares / shares.sum())
        payload = np.array([s.payload_bytes for s in sc.services])[svc]
        self._svc = svc
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
        # per request and action: compute time and weighted inference energy (constant over the episode)
        self._compute_a = np.repeat(self._compute, [m, 1], axis=1)  # (n, M+1)
        self._infer_j = sc.w_infer * self._p_busy_action * self._compute_a
        # per request: Python-number copies for the step path, and its part of the observation
        self._svc_list, self._arrival_list = svc.tolist(), self._arrival.tolist()
        self._kv_list, self._requirement_list = self._kv.tolist(), self._requirement.tolist()
        self._up_list, self._down_list = self._up_bytes.tolist(), self._down_bytes.tolist()
        self._prompt_list, self._output_list = self._prompt.tolist(), self._output.tolist()
        # flat (row-major) lists: a list of lists per request would cost the garbage collector more
        self._compute_flat, self._infer_flat = self._compute_a.ravel().tolist(), self._infer_j.ravel().tolist()
        self._obs_request = self._request_features(svc)

        # servers, links, accounting
        self._t0 = float(self._arrival[0])
        u = m + sc.cloud_gpus
        self._free_at = [self._t0] * u  # per unit (M edge servers, then the cloud GPUs)
        self._ready = [self._t0] * (m + 1)  # per action: when its server (the first free GPU) is free
        self._jobs: list[deque] = [deque() for _ in range(u)]  # (start, end, kv bytes) not yet finished
        self._kv_reserved = [0.0] * m
        if self._trace is None:
            self._level = rng.integers(len(sc.bw_levels), size=m + 1).tolist()
            self._set_bandwidth((self._nominal_bps * self._levels[self._level]).tolist())
        else:
            self._trace_offset = rng.uniform(0.0, self._trace[1], size=m + 1)
            self._set_trace_bw(self._t0)
        self._slot = 0
        self._i = 0
        self._now = self._last_now = self._t0
        self._action: list[int] = []  # per dispatched request, in order
        self._lat: list[float] = []
        self._e_tran = self._e_infer = self._e_idle = 0.0
        self._completed = 0
        self._segments: deque = deque(maxlen=80)
        self.state = EdgeCloudState(
            now_s=self._now, request=0, service=0, prompt_tokens=0, output_tokens=0, upload_bytes=0.0,
            requirement_s=0.0, valid=self._mask, n_edge=m, _table=np.zeros((m + 1, 8)), _bw=np.empty(m + 1),
            _bw_values=self._bw_list)
        self._prepare()
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
    # The step path works on Python floats: per unit or action, a handful of scalars each (faster
    # than numpy calls on arrays of M+1 elements); numpy only for the observation buffer.
    def _step(self, a: int):
        i = self._i
        if i >= len(self._arrival_list):
            raise RuntimeError("the episode has ended: call reset()")
        sc, m = self.scenario, self.scenario.n_edge
        j = a * 8
        _, upload, wait, compute, _, latency, weighted, _ = self._table_values[j: j + 8]
        free_at = self._free_at
        if a < m:
            unit = a
        else:  # the cloud GPU that frees first
            gpus = free_at[m:]
            unit = m + gpus.index(min(gpus))
        start = self._now + upload + wait
        end = start + compute
        free_at[unit] = end
        if a < m:
            self._ready[a] = end
            kv = self._kv_list[i]
            self._kv_reserved[a] += kv
        else:
            self._ready[a] = min(free_at[m:])
            kv = 0.0
        self._jobs[unit].append((start, end, kv))
        service = self._svc_list[i]
        if self._record_segments:
            self._segments.append((unit, start, end, service))
        self._e_tran += self._p_tx_list[a] * (upload - self._latency_list[a])
        self._e_infer += self._p_busy_list[a] * compute
        self._action.append(a)
        self._lat.append(latency)
        requirement = self._requirement_list[i]
        met = latency <= requirement
        dispatched = {"request": i, "service": service, "action": a, "latency_s": latency,
                      "requirement_s": requirement, "energy_j": weighted, "met": met}

        self._i = i = i + 1
        terminated = i == len(self._arrival_list)
        t_next = max(free_at) if terminated else self._arrival_list[i]
        idle_j = self._advance(t_next if t_next > self._now else self._now)  # max(t_next, now)
        reward = -(weighted + sc.w_idle * idle_j) / sc.energy_scale_j - (0.0 if met else sc.miss_penalty)
        if not terminated:
            self._prepare()
        else:  # no next request: of the observation, only the bandwidth share moves
            self._obs_act[:, 3] = self._bw_share
        info = {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": self._now,
                "dispatched": dispatched}
        if terminated:
            info["episode_metrics"] = self.episode_metrics()
        return self._obs_buf.copy(), reward, terminated, False, info

    def _advance(self, t: float) -> float:
        """Move time to `t`: idle energy of every unit over (now, t], finished jobs release their
        KV memory, bandwidth moves on. Returns the idle energy (J, unweighted)."""
        now, m, p_idle = self._now, self.scenario.n_edge, self._p_idle_list
        dt = t - now
        idle_j = 0.0
        for u, jobs in enumerate(self._jobs):
            if not jobs:  # idle throughout (dt - 0.0 is dt)
                idle_j += p_idle[u] * dt
                continue
            busy = 0.0
            while jobs:
                start, end, kv = jobs[0]
                if start >= t:
                    break
                busy += (t if t < end else end) - (now if now > start else start)  # overlap with (now, t]
                if end > t:
                    break
                jobs.popleft()
                self._completed += 1
                if u < m:
                    self._kv_reserved[u] -= kv
            idle_j += p_idle[u] * (dt - busy)
        self._e_idle += idle_j
        self._now = t
        if self._trace is not None:
            self._set_trace_bw(t)
        else:
            slot = int((t - self._t0) // self.scenario.bw_slot_s)
            if slot > self._slot:
                self._move_bandwidth(slot)
        return idle_j

    def _move_bandwidth(self, slot: int) -> None:
        """Move the Markov chain of every link to bandwidth slot `slot` (after the current one)."""
        k = slot - self._slot
        if k > MAX_CHAIN_STEPS:
            k = MAX_CHAIN_STEPS
        self._slot = slot
        # each link's next level: the number of its P^k cumulative probabilities <= a uniform draw
        cdf = self._level_cdf_rows[k]
        draws = self.np_random.random(len(self._level)).tolist()
        self._level = levels = [bisect.bisect_right(cdf[level], x) for level, x in zip(self._level, draws)]
        level_list = self._level_list
        self._set_bandwidth([nominal * level_list[level] for nominal, level in zip(self._nominal_list, levels)])

    def _set_trace_bw(self, t: float) -> None:
        times, period, rates = self._trace
        pos = np.mod(t - self._t0 + self._trace_offset, period)
        row = np.searchsorted(times, pos, side="right") - 1
        self._set_bandwidth(rates[np.arange(len(row)), row].tolist())

    def _set_bandwidth(self, bw: list[float]) -> None:
        """Set every link's bandwidth (bit/s) and what follows it: seconds per byte, observed share."""
        self._bw_list = bw
        if self.state is not None:
            self.state._bw_values = bw
        self._s_per_byte = [8.0 / b for b in bw]
        self._bw_share = [b / top for b, top in zip(bw, self._top_list)]

    def _prepare(self) -> None:
        """Fill the state, mask and per-action observation features for the current request, in
        one pass over the M+1 actions in Python floats (a dozen values each)."""
        st, sc, m, i = self.state, self.scenario, self.scenario.n_edge, self._i
        k = self._svc_list[i]
        now, kv, requirement = self._now, self._kv_list[i], self._requirement_list[i]
        up_bytes, down_bytes = self._up_list[i], self._down_list[i]
        st.now_s, st.request, st.service = now, i, k
        st.prompt_tokens, st.output_tokens = self._prompt_list[i], self._output_list[i]
        st.upload_bytes, st.requirement_s = up_bytes, requirement
        j = i * (m + 1)
        compute, infer, hosted = self._compute_flat[j: j + m + 1], self._infer_flat[j: j + m + 1], self._hosted_rows[k]
        s_per_byte, link_latency, ready, tran_w = self._s_per_byte, self._latency_list, self._ready, self._tran_w_list
        free0, total, reserved, bw_share = self._mem_free0_list, self._mem_total_list, self._kv_reserved, self._bw_share
        time_scale, energy_scale = sc.time_scale_s, sc.energy_scale_j
        table, features, mask = [], [], []
        for a in range(m + 1):
            tx = s_per_byte[a] * up_bytes
            upload = link_latency[a] + tx
            download = s_per_byte[a] * down_bytes + link_latency[a]
            backlog = ready[a] - now
            if backlog < 0.0:
                backlog = 0.0
            wait = backlog - upload
            if wait < 0.0:
                wait = 0.0
            latency = ((upload + wait) + compute[a]) + download
            energy = tran_w[a] * tx + infer[a]
            if a < m:
                free = free0[a] - reserved[a]
                valid, free_share = free >= kv and hosted[a], free / total[a]
            else:  # the cloud: always valid, its memory not modelled
                free, valid, free_share = np.inf, True, 1.0
            table += (backlog, upload, wait, compute[a], download, latency, energy, free)
            # valid, backlog, free memory share, bandwidth share, busy now, latency / requirement, energy
            features += (valid, backlog / (backlog + time_scale), free_share, bw_share[a], backlog > 0.0,
                         latency / requirement, energy / energy_scale)
            mask.append(valid)
        self._table_values = st._table_values = table
        key = tuple(mask)
        valid = self._mask_patterns.get(key)
        if valid is None:
            valid = np.array(mask, dtype=bool)
            valid.flags.writeable = False
            self._mask_patterns[key] = valid
        self._mask = st.valid = valid
        # the observation: the request's features, the action features squashed in place (float32)
        self._obs_head[:] = self._obs_request[i]
        f, den = self._obs_flat, self._obs_tmp
        f[:] = features
        np.multiply(f, self._obs_c, den)  # positional outputs: a keyword costs more than the arithmetic
        np.add(den, self._obs_one, den)
        np.divide(f, den, f)

    # --------------------------------------------------------- observations
    def _obs(self) -> np.ndarray:
        """The current request's features, then the per-action features action by action (a new array).
        Every feature is in [0, 1] by construction (no clipping needed)."""
        return self._obs_buf.copy()

    def _info(self) -> dict:
        return {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": self._now}

    # -------------------------------------------------------------- metrics
    def counts(self) -> dict[str, int]:
        """Request accounting: arrived = dispatched + pending; dispatched = completed + in servers."""
        n = len(self._arrival)
        dispatched = self._i
        return {"arrived": min(self._i + 1, n), "dispatched": dispatched, "pending": int(self._i < n),
                "completed": self._completed, "in_servers": sum(len(j) for j in self._jobs), "total": n}

    def invariant_violations(self) -> list[str]:
        bad, c = [], self.counts()
        if self._now < self._last_now:
            bad.append(f"time ran backwards: {self._now} < {self._last_now}")
        self._last_now = self._now
        if c["arrived"] != c["dispatched"] + c["pending"] or c["dispatched"] != c["completed"] + c["in_servers"]:
            bad.append(f"requests lost: {c}")
        for j, bw in enumerate(self.state.bw_bps):
            if not np.any(np.isclose(bw, self._allowed_bps[j], rtol=1e-12, atol=0)):
                bad.append(f"link {j} bandwidth {bw} not one of its levels {self._allowed_bps[j]}")
        for name in ("_e_tran", "_e_infer", "_e_idle"):
            if getattr(self, name) < -1e-9:
                bad.append(f"negative energy {name}: {getattr(self, name)}")
        kv_reserved = np.array(self._kv_reserved)
        if np.any(self._mem_weights + kv_reserved > self._mem_total * (1 + 1e-12)):
            bad.append("edge memory over capacity")
        if np.any(kv_reserved < -1e-6):
            bad.append("negative reserved KV memory")
        if self._i < len(self._arrival) and not self._mask.any():
            bad.append("no valid action in a non-terminal state")
        return bad

    def episode_metrics(self) -> dict[str, float]:
        n = len(self._action)  # the first n requests are dispatched
        lat = np.array(self._lat, dtype=float)
        met = int(np.sum(lat <= self._requirement[:n]))
        span = (max(self._free_at) if n else self._now) - self._t0
        energy = self._e_tran + self._e_infer + self._e_idle
        return {
            "throughput_rps": met / span if span > 0 else 0.0,
            "energy_per_request_j": energy / n if n else 0.0,
            "deadline_satisfaction": met / n if n else 0.0,
            "cloud_share": float(np.mean(np.array(self._action) == self.scenario.n_edge)) if n else 0.0,
            "mean_latency_s": mean_or_zero(lat),
        }

    # ------------------------------------------------------------- rendering
    def _render_ansi(self) -> str:
        st, m = self.state, self.scenario.n_edge
        lines = [f"t={self._now:9.2f}s request {st.request}/{len(self._arrival)} "
                 f"service={self.scenario.services[st.service].name} requirement={st.requirement_s:.2f}s "
                 f"energy={self._e_tran + self._e_infer + self._e_idle:.0f} J"]
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
