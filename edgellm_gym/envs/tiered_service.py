"""TieredService-v0: users with accuracy and deadline requirements served by
model variants on end devices, edge servers and the cloud (DESIGN 4.5, GUS).

The GUS paper is known to us only by its abstract: the service model below is
ours and is stated exactly, so that the window ILP (`baselines/gus.py`) is the
true optimum of this env.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from gymnasium import spaces

from .. import costs
from ..catalog import DeviceSpec, ModelSpec, get_device, get_link, get_model
from ..metrics import mean_or_zero
from ..scenario import register_preset, require, resolve_scenario
from ..workload import WorkloadSpec, sample_requests, workload_preset
from . import tiered_service_kernels as kernels
from .base import MaskedEnv

__all__ = [
    "TieredServiceScenario",
    "TieredState",
    "TieredServiceEnv",
    "TIERS",
    "QWEN25",
    "parse_node",
    "node_device",
    "deploy_variants",
    "path_time_s",
    "edf_finish_s",
    "evaluate_window",
]

ENV_KEY = "TieredService"
TIERS = ("end", "edge", "cloud")
QWEN25 = ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-72b")
N_USER_FEATURES = 4
N_VARIANT_FEATURES = 4  # per variant: users to come and their earliest deadline by level, accuracy flag, margin
N_GLOBAL_FEATURES = 3  # window index, position in the window, some pair earns +1 now
N_NODE_FEATURES = 3
N_PAIR_FEATURES = 4  # slack if assigned now, keeps the node's users in time, compute, earns +1 now


@dataclass(frozen=True)
class TieredServiceScenario:
    """Nodes of three tiers, a family of model variants, and users in windows.

    Nodes: one per name in `end_devices`, `edge_servers`, `cloud_servers`: a
    catalog device, or "<k>x<device>" for a server of k such GPUs with ideal
    tensor parallelism (memory, FLOP/s and bandwidth times k; the all-reduce
    cost is not modelled, which flatters multi-GPU nodes). Deployment: each
    node packs the variants, largest first, whose `bits`-bit weights fit in
    (1 - mem_reserve_share) of its memory (the reserve is for KV cache).
    Network: a user reaches a node of tier t over the links `*_path` (catalog
    LINKS, hop by hop): network time = sum over hops of 2 x latency + (prompt +
    output) x bytes_per_token x 8 / bandwidth.
    Users: `n_windows` windows of `users_per_window` users; token lengths from
    `workload` (its arrival process is not used: a window's users are all
    present at the window's start); minimum accuracy ~ U[min_accuracy_low,
    min_accuracy_high]; deadline (s from the window start) = deadline_base_s +
    output tokens x time_per_token, time_per_token ~ U[tpot_min_s, tpot_max_s].
    Each node computes for at most `window_s` seconds per window, so a node is
    idle again when the next window starts and windows are independent.
    """

    end_devices: tuple[str, ...] = ("rpi5", "orin-nano-8gb", "orin-nano-8gb")
    edge_servers: tuple[str, ...] = ("agx-orin-64gb", "t4", "rtx4090")
    cloud_servers: tuple[str, ...] = ("2xh100-sxm", "a100-80gb")
    variants: tuple[str, ...] = QWEN25
    bits: int = 16
    mem_reserve_share: float = 0.1
    end_path: tuple[str, ...] = ("wifi",)
    edge_path: tuple[str, ...] = ("wifi", "lan-1g")
    cloud_path: tuple[str, ...] = ("wifi", "wan-cloud")
    bytes_per_token: float = 4.0
    # Azure conv 2023 token lengths (median / p99 of prompt and output).
    workload: WorkloadSpec = field(default_factory=lambda: workload_preset("azure-conv-2023"))
    users_per_window: int = 24
    n_windows: int = 10
    window_s: float = 20.0
    min_accuracy_low: float = 0.45
    min_accuracy_high: float = 0.85
    deadline_base_s: float = 1.0
    tpot_min_s: float = 0.01
    tpot_max_s: float = 0.1
    # order in which a window's users are presented: "deadline" (tightest first, ties to the higher
    # minimum accuracy, as GUS processes them) or "arrival" (draw order; v0 before 2026-11-23)
    user_order: str = "deadline"

    def __post_init__(self) -> None:
        require(self.user_order in ("deadline", "arrival"), "user_order", self.user_order,
                '"deadline" or "arrival"')
        names = ("end_devices", "edge_servers", "cloud_servers")
        for name in names:
            for i, d in enumerate(getattr(self, name)):
                _known(parse_node, d, f"{name}[{i}]")
        require(sum(len(getattr(self, n)) for n in names) >= 1, "end_devices + edge_servers + cloud_servers",
                0, ">= 1 node")
        require(len(self.variants) >= 1, "variants", self.variants, "at least one model")
        require(len(set(self.variants)) == len(self.variants), "variants", self.variants, "without repeats")
        for i, v in enumerate(self.variants):
            m = _known(get_model, v, f"variants[{i}]")
            require(0 <= m.accuracy <= 1, f"variants[{i}]", v, "a model with an accuracy score in the catalog")
        require(self.bits in (4, 8, 16), "bits", self.bits, "one of 4, 8, 16")
        require(0 <= self.mem_reserve_share < 1, "mem_reserve_share", self.mem_reserve_share, "in [0, 1)")
        for name in ("end_path", "edge_path", "cloud_path"):
            for i, link in enumerate(getattr(self, name)):
                _known(get_link, link, f"{name}[{i}]")
        require(self.bytes_per_token >= 0, "bytes_per_token", self.bytes_per_token, ">= 0")
        require(1 <= self.users_per_window <= 256, "users_per_window", self.users_per_window, "in [1, 256]")
        require(self.n_windows >= 1, "n_windows", self.n_windows, ">= 1")
        require(self.window_s > 0, "window_s", self.window_s, "> 0")
        require(0 <= self.min_accuracy_low <= 1, "min_accuracy_low", self.min_accuracy_low, "in [0, 1]")
        require(self.min_accuracy_low <= self.min_accuracy_high, "min_accuracy_high", self.min_accuracy_high,
                ">= min_accuracy_low")
        require(self.deadline_base_s >= 0, "deadline_base_s", self.deadline_base_s, ">= 0")
        require(self.tpot_min_s > 0, "tpot_min_s", self.tpot_min_s, "> 0")
        require(self.tpot_max_s >= self.tpot_min_s, "tpot_max_s", self.tpot_max_s, ">= tpot_min_s")
        deployed = self.deployment()
        for i, v in enumerate(self.variants):
            require(deployed[:, i].any(), f"variants[{i}]", v, f"a model that fits on some node at {self.bits} bits")
        best = max(get_model(v).accuracy for v in self.variants)
        require(self.min_accuracy_high <= best, "min_accuracy_high", self.min_accuracy_high,
                f"<= the best deployed accuracy {best} (else some users can never be satisfied)")

    def node_names(self) -> tuple[str, ...]:
        """Node names, end devices first, then edge servers, then cloud servers."""
        return self.end_devices + self.edge_servers + self.cloud_servers

    def node_tiers(self) -> np.ndarray:
        """Tier index per node (0 end, 1 edge, 2 cloud)."""
        return np.repeat(np.arange(3), [len(self.end_devices), len(self.edge_servers), len(self.cloud_servers)])

    def node_devices(self) -> list[DeviceSpec]:
        """The DeviceSpec of every node (`parse_node`)."""
        return [parse_node(d) for d in self.node_names()]

    def deployment(self) -> np.ndarray:
        """(nodes, variants) bool: which variants each node hosts (`deploy_variants`)."""
        weights = np.array([costs.total_params(get_model(v)) * self.bits / 8 for v in self.variants])
        return np.array([deploy_variants(d.mem_bytes * (1 - self.mem_reserve_share), weights)
                         for d in self.node_devices()]).reshape(-1, len(self.variants))


class _DeviceColumns(NamedTuple):
    """The DeviceSpec fields the cost model reads, for several devices as (k, 1) columns. The
    cost functions are elementwise, so one call broadcasts over the devices, doing per element
    the same floating-point operations as one call per device."""

    peak_flops: np.ndarray
    compute_efficiency: np.ndarray
    mem_bw_Bps: np.ndarray

    @classmethod
    def of(cls, devices: list[DeviceSpec]) -> _DeviceColumns:
        return cls(*(np.array([[getattr(d, f)] for d in devices], dtype=float) for f in cls._fields))


class _ModelColumns(NamedTuple):
    """The ModelSpec fields `costs.request_time_s` reads, for several models as (k, 1) integer
    columns. Its arithmetic on them is elementwise and exact in int64 as in Python ints (all
    products < 2^53), so with `_DeviceColumns` one call costs k (model, device) pairs, bit for bit
    as k calls. Side by side (k, 7), the same columns are the input of the compiled copy of that
    call the resets use (`kernels.request_times`). tests/test_tiered_service_costs.py pins both,
    bit for bit, for every catalog model x device."""

    n_layers: np.ndarray
    hidden: np.ndarray
    kv_heads: np.ndarray
    head_dim: np.ndarray
    ffn: np.ndarray
    vocab: np.ndarray
    mlp_matrices: np.ndarray

    @classmethod
    def of(cls, models: list[ModelSpec]) -> _ModelColumns:
        return cls(*(np.array([[getattr(mo, f)] for mo in models], dtype=np.int64) for f in cls._fields))


def _known(lookup, name, where):
    try:
        return lookup(name)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


# ------------------------------------------------------------ pure helpers
def parse_node(name: str) -> DeviceSpec:
    """A catalog device, or "<k>x<device>": k GPUs as one node with ideal tensor parallelism."""
    match = re.fullmatch(r"(\d+)x(.+)", name)
    if not match:
        return get_device(name)
    gpus, device = int(match[1]), get_device(match[2])
    if gpus < 1:
        raise ValueError(f"node {name!r}: the GPU count must be >= 1")
    return node_device(device, gpus)


def node_device(device: DeviceSpec, gpus: int) -> DeviceSpec:
    """`gpus` copies of `device` as one node with ideal tensor parallelism (all rates and memory x gpus)."""
    if gpus == 1:
        return device
    return dataclasses.replace(device, name=f"{gpus}x{device.name}", peak_flops=device.peak_flops * gpus,
                               mem_bytes=device.mem_bytes * gpus, mem_bw_Bps=device.mem_bw_Bps * gpus,
                               power_idle_w=device.power_idle_w * gpus, power_busy_w=device.power_busy_w * gpus)


def deploy_variants(budget_bytes: float, weight_bytes) -> np.ndarray:
    """Greedy packing, largest variant first: host each variant whose weights still fit the budget.

    Largest first because a node's memory is worth most to the variants that fit
    nowhere smaller; ties keep the given order.
    """
    weight_bytes = np.asarray(weight_bytes, dtype=float)
    hosted = np.zeros(weight_bytes.size, dtype=bool)
    free = float(budget_bytes)
    for i in np.argsort(-weight_bytes, kind="stable"):
        if weight_bytes[i] <= free:
            hosted[i] = True
            free -= weight_bytes[i]
    return hosted


def path_time_s(links, prompt_tokens, output_tokens, bytes_per_token: float):
    """Network time over a path of links: upload the prompt, download the output, hop by hop."""
    n_bytes = (np.asarray(prompt_tokens, dtype=float) + np.asarray(output_tokens, dtype=float)) * bytes_per_token
    total = np.zeros(np.shape(n_bytes))
    for link in links:
        total = total + 2 * link.latency_s + n_bytes * 8.0 / link.bw_bps
    return total


def edf_finish_s(edf_deadline_s, compute_s, user) -> np.ndarray:
    """Finish times (s from the window start) of jobs served one at a time in EDF order.

    The order is by `edf_deadline_s` (the user's deadline minus its network
    time), ties by user index. EDF is optimal for jobs all present at time 0
    on one processor: a set of jobs can all meet their deadlines iff EDF does it.
    """
    order = np.lexsort((np.asarray(user), np.asarray(edf_deadline_s)))
    finish = np.empty(len(order))
    finish[order] = np.cumsum(np.asarray(compute_s, dtype=float)[order])
    return finish


def evaluate_window(assignment, min_accuracy, deadline_s, net_s, compute_s, accuracy):
    """The env's rule over one window: (satisfied, response_s) per user.

    `assignment[u]` is a pair index node * n_variants + variant, or -1 for
    rejected (response NaN, not satisfied). Shapes: min_accuracy, deadline_s
    (K,); net_s (K, N); compute_s (K, N, M); accuracy (M,). Each node serves
    its users one at a time in EDF order (`edf_finish_s`); response = network +
    waiting + compute; satisfied = accuracy met and response <= deadline.
    """
    assignment = np.asarray(assignment)
    k, n_nodes, n_var = compute_s.shape
    satisfied = np.zeros(k, dtype=bool)
    response = np.full(k, np.nan)
    served = np.flatnonzero(assignment >= 0)
    node, var = np.divmod(assignment[served], n_var)
    for n in np.unique(node):
        users = served[node == n]
        p = compute_s[users, n, var[node == n]]
        d_edf = deadline_s[users] - net_s[users, n]
        finish = edf_finish_s(d_edf, p, users)
        response[users] = net_s[users, n] + finish
        satisfied[users] = (finish <= d_edf) & (accuracy[var[node == n]] >= min_accuracy[users])
    return satisfied, response


register_preset(ENV_KEY, "default", TieredServiceScenario())
register_preset(ENV_KEY, "high-load", TieredServiceScenario(users_per_window=48))
register_preset(ENV_KEY, "small", TieredServiceScenario(
    end_devices=("orin-nano-8gb",), edge_servers=("rtx4090",), cloud_servers=("a100-80gb",),
    variants=("qwen2.5-0.5b", "qwen2.5-3b", "qwen2.5-7b", "qwen2.5-14b"), users_per_window=6, n_windows=4,
    min_accuracy_high=0.79))


# ------------------------------------------------------------------ state
@dataclass
class TieredState:
    """What reference policies may read (`env.unwrapped.state`; read-only by convention).

    Per-user arrays cover the whole episode, users in window order (window w
    holds users w*K .. w*K+K-1, K = users_per_window). `user` is the user
    deciding now (== n_users at the end); `window_start` the first user of its
    window. compute_s is +inf where the variant is not deployed on the node.
    `assignment[u]`: -2 undecided, -1 rejected, else node * n_variants + variant.
    `used_s[n]`: compute time of the current window already assigned to node n.
    """

    user: int
    window_start: int
    users_per_window: int
    node_names: tuple[str, ...]
    node_tier: np.ndarray
    variant_names: tuple[str, ...]
    accuracy: np.ndarray
    deployed: np.ndarray
    capacity_s: np.ndarray
    used_s: np.ndarray
    min_accuracy: np.ndarray
    deadline_s: np.ndarray
    net_s: np.ndarray
    compute_s: np.ndarray
    assignment: np.ndarray

    def window(self) -> slice:
        """The users of the current window."""
        return slice(self.window_start, self.window_start + self.users_per_window)


class TieredServiceEnv(MaskedEnv):
    """
    ## Description
    Users request an LLM service with a minimum accuracy and a deadline. Model
    variants of one family (default: Qwen2.5 0.5B .. 72B, MMLU as accuracy) are
    deployed where memory allows on nodes of three tiers: end devices (Raspberry
    Pi 5, Jetson Orin Nano), edge servers (Jetson AGX Orin, T4, RTX 4090) and
    cloud servers (2 x H100, A100), reached over Wi-Fi, Wi-Fi + LAN, and
    Wi-Fi + WAN. Users come in windows; the agent assigns them one by one to a
    (node, variant) pair or rejects them. Each node serves the users of a window
    one at a time in EDF order of their deadline minus network time, starting at
    the window's start; compute times come from the roofline cost model. A user
    is satisfied when the variant's accuracy >= its minimum and network +
    waiting + compute <= its deadline. This is GUS's problem (DESIGN 4.5; the
    paper is known to us by its abstract only, the service model is ours).

    ## Action Space
    `Discrete(N * M + 1)`, N nodes, M variants: action `n * M + m` serves the
    current user with variant m on node n; action `N * M` rejects it (always
    valid). Masked: variants not deployed on the node, and pairs whose compute
    time would exceed the node's remaining capacity `window_s` in this window.

    ## Observation Space
    `Box(-1, 1, (4 + 4M + 3 + 3N + 4NM,), float32)`, in this order; times
    squashed by x / (|x| + window_s) unless said otherwise; all zeros after the
    last user. Current user: minimum accuracy, deadline, prompt and output
    tokens / their caps. Rest of its window, per accuracy level (level = number
    of variants below the minimum accuracy): share of the K users still to
    come, and their earliest deadline (1 if none). Window index / n_windows.
    Per variant: meets the current user's accuracy; then per variant: its
    accuracy minus the user's minimum. Position in the window / K. Some pair
    earns +1 now (the last pair block below, over all pairs). Per node: used
    share of capacity, compute queued ahead of the current user in EDF order,
    and the least slack of the satisfied users the current user would go
    before (1 if none). Per pair, four blocks: deadline - response time if
    assigned now (-1 if not deployed); the assignment keeps every satisfied
    user of the node satisfied; the user's compute time there (1 if not
    deployed); and "earns +1 now": valid, accuracy flag 1, slack >= 0 and keep
    flag 1, exactly when serving there gives reward +1. GUS's feasible pairs
    are those that earn +1 now, and its choice among them the least compute
    feature; with none, serving only uses capacity and GUS rejects.

    ## Rewards
    The change in the number of satisfied users of the current window: +1 for
    a user served in time with enough accuracy, -1 for each user an assignment
    pushes past its deadline. It telescopes: the return is exactly the number
    of satisfied users. A masked action gives `-invalid_action_penalty`.

    ## Starting State
    All users of the episode are drawn at `reset(seed=...)` with `np_random`.

    ## Episode End
    Terminated after the last user of the last window. Truncated only after
    `max_invalid_streak` consecutive masked actions.

    ## Arguments
    `gymnasium.make("edgellm_gym/TieredService-v0", scenario="default",
    render_mode=None, invalid_action="penalize", invalid_action_penalty=1.0,
    max_invalid_streak=100)`. `scenario`: a preset ("default", "high-load",
    "small"), a YAML path, a dict or a `TieredServiceScenario`.

    ## Info
    `action_mask`, `invalid_action`, `window`, `user`, and at the end
    `episode_metrics`: satisfied_share, satisfied_users, rejected_share,
    deadline_miss_share, accuracy_miss_share, share_end, share_edge,
    share_cloud (of decided users), mean_accuracy_served, mean_latency_s
    (over served users).

    ## Version History
    * v0: initial version. 2026-11-23: users presented tightest deadline
      first (`user_order`). 2026-11-23, later: the observation gains the
      per-pair compute time and "earns +1 now" flag, the per-variant accuracy
      margin and the "some pair earns +1" flag (size 4 + 4M + 3 + 3N + 4NM,
      was 4 + 3M + 2 + 3N + 2NM); dynamics and rewards unchanged.
    """

    def __init__(self, scenario=None, render_mode: str | None = None, invalid_action: str = "penalize",
                 invalid_action_penalty: float = 1.0, max_invalid_streak: int = 100) -> None:
        super().__init__(render_mode, invalid_action, invalid_action_penalty, max_invalid_streak)
        self.scenario = sc = resolve_scenario(TieredServiceScenario, ENV_KEY, scenario)
        self._devices = sc.node_devices()
        self._models = [get_model(v) for v in sc.variants]
        self._deployed = sc.deployment()
        self._tier = sc.node_tiers()
        self._accuracy = np.array([m.accuracy for m in self._models])
        # the deployed (node, variant) pairs, their models and devices side by side (the input of
        # kernels.request_times, the compiled costs.request_time_s)
        self._pair_nodes, self._pair_variants = (np.ascontiguousarray(x) for x in np.nonzero(self._deployed))
        self._pair_models = np.hstack(_ModelColumns.of([self._models[j] for j in self._pair_variants]))
        self._pair_device = np.hstack(_DeviceColumns.of([self._devices[i] for i in self._pair_nodes]))
        self._paths = [[get_link(x) for x in p] for p in (sc.end_path, sc.edge_path, sc.cloud_path)]
        n, m, k = len(self._devices), len(self._models), sc.users_per_window
        self.n_nodes, self.n_variants, self.n_users = n, m, k * sc.n_windows
        self.reject_action = n * m
        self.action_space = spaces.Discrete(n * m + 1)
        self._n_obs = (N_USER_FEATURES + N_VARIANT_FEATURES * m + N_GLOBAL_FEATURES + N_NODE_FEATURES * n
                       + N_PAIR_FEATURES * n * m)
        self.observation_space = spaces.Box(-1.0, 1.0, (self._n_obs,), np.float32)
        self._mask = np.zeros(n * m + 1, dtype=bool)
        self._mask[-1] = True  # reject: always valid
        self._window_s = float(sc.window_s)
        # Buffers the step kernels write in place. The node queues (`kernels` module docstring):
        self._jobs = np.zeros((kernels.N_JOB_ROWS, n, k))
        self._job_user = np.zeros((n, k), dtype=np.int64)
        self._n_jobs = np.zeros(n, dtype=np.int64)
        self._obs_now = np.zeros(self._n_obs, dtype=np.float32)  # the observation of the current user
        # per-user tables of the episode (`kernels.user_tables`)
        u = self.n_users
        f = N_USER_FEATURES + N_VARIANT_FEATURES * m + 2  # the user's rows: window index and position too
        self._edf_deadline = np.zeros((u, n))
        self._user_obs = np.zeros((u, f + n * m), dtype=np.float32)
        self.state: TieredState | None = None

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sc, rng = self.scenario, self.np_random
        n, m, k, u = self.n_nodes, self.n_variants, sc.users_per_window, self.n_users
        req = sample_requests(sc.workload, rng, u)
        min_acc = rng.uniform(sc.min_accuracy_low, sc.min_accuracy_high, size=u)
        tpot = rng.uniform(sc.tpot_min_s, sc.tpot_max_s, size=u)
        deadline = sc.deadline_base_s + req.output_tokens * tpot
        if sc.user_order == "deadline":  # every user of a window is there at its start: present tightest first
            w = u // k
            order = np.lexsort((-min_acc.reshape(w, k), deadline.reshape(w, k)), axis=-1)
            idx = (order + k * np.arange(w)[:, None]).ravel()
            req = type(req)(req.arrival_s, req.prompt_tokens[idx], req.output_tokens[idx])
            min_acc, deadline = min_acc[idx], deadline[idx]
        net_tier = np.stack([path_time_s(path, req.prompt_tokens, req.output_tokens, sc.bytes_per_token)
                             for path in self._paths], axis=1)  # (U, 3)
        net = np.ascontiguousarray(net_tier[:, self._tier])  # (U, N)
        compute = np.full((u, n, m), np.inf)
        # costs.request_time_s of every user on the deployed pairs (compiled; +inf elsewhere)
        kernels.request_times(self._pair_models, self._pair_device, req.prompt_tokens, req.output_tokens,
                              int(sc.bits), self._pair_nodes, self._pair_variants, compute)
        self.state = st = TieredState(
            user=0, window_start=0, users_per_window=k, node_names=sc.node_names(), node_tier=self._tier,
            variant_names=sc.variants, accuracy=self._accuracy, deployed=self._deployed,
            capacity_s=np.full(n, sc.window_s), used_s=np.zeros(n), min_accuracy=min_acc, deadline_s=deadline,
            net_s=net, compute_s=compute, assignment=np.full(u, -2, dtype=np.int64))
        # EDF deadline (deadline - network) per user and node, and the observation's start per user
        # (clipped here once: the rest is within [-1, 1] by construction), then its squashed compute
        # time per pair (1 where not deployed)
        kernels.user_tables(min_acc, deadline, req.prompt_tokens, req.output_tokens, net, compute, self._accuracy,
                            k, sc.n_windows, self._window_s, float(sc.workload.prompt_max),
                            float(sc.workload.output_max), self._edf_deadline, self._user_obs)
        self._response = np.full(u, np.nan)
        self._satisfied = np.zeros(u, dtype=bool)
        self._n_satisfied = 0
        self._clear_jobs()
        self._update_mask()
        return self._obs_now.copy(), self._info()

    # ------------------------------------------------------------------ step
    def _step(self, a: int):
        st = self.state
        u = st.user
        st.user = nxt = u + 1
        close = nxt == st.window_start + st.users_per_window
        # decide user u: assign or reject, insert it in its node's EDF queue; then the mask and
        # observation of the next user, unless the window closes first (kernels.step)
        delta = kernels.step(a, u, not close, self._window_s, st.compute_s, self._edf_deadline, self._user_obs,
                             st.used_s, st.assignment, self._jobs, self._job_user, self._n_jobs, self._obs_now,
                             self._mask)
        if close:
            self._close_window()
            self._update_mask()
        self._n_satisfied += delta
        info = {"action_mask": self._mask.copy(), "invalid_action": False,
                "window": st.window_start // st.users_per_window, "user": nxt}
        terminated = nxt == self.n_users
        if terminated:
            info["episode_metrics"] = self.episode_metrics()
        return self._obs_now.copy(), float(delta), terminated, False, info

    def _window_outcome(self) -> None:
        """Write response times and satisfaction of the current window's served users."""
        kernels.window_outcome(self._jobs, self._job_user, self._n_jobs, self.state.net_s, self._response,
                               self._satisfied)

    def _clear_jobs(self) -> None:
        """No jobs on any node (a new window)."""
        self._jobs[:] = 0.0
        self._job_user[:] = 0
        self._n_jobs[:] = 0

    def _close_window(self) -> None:
        st = self.state
        kernels.close_window(self._jobs, self._job_user, self._n_jobs, st.net_s, st.used_s, self._response,
                             self._satisfied)
        st.window_start = st.user

    def _queue(self, n: int) -> slice:
        """Node n's jobs in its queue's columns."""
        return slice(0, int(self._n_jobs[n]))

    # --------------------------------------------------------- observations
    def _update_mask(self) -> None:
        """The mask and the observation of the current user into `_mask`, `_obs_now` (the name is
        older than the observation's place here; `kernels.observe` says what it computes)."""
        st = self.state
        kernels.observe(st.user, self._window_s, st.compute_s, self._edf_deadline, self._user_obs, st.used_s,
                        self._jobs, self._n_jobs, self._obs_now, self._mask)

    def earning_pairs(self) -> np.ndarray:
        """(N, M) bool: the (node, variant) pairs that would earn +1 for the current user now
        (valid, accurate enough, in time, pushing nobody late); all False once the episode is over."""
        if self.state is None:
            raise RuntimeError("call reset() before earning_pairs()")
        nm = self.n_nodes * self.n_variants
        return (self._obs_now[self._n_obs - nm:] == 1.0).reshape(self.n_nodes, self.n_variants)

    def _obs(self) -> np.ndarray:
        return self._obs_now.copy()

    def _info(self) -> dict:
        st = self.state
        return {"action_mask": self._mask.copy(), "invalid_action": False,
                "window": st.window_start // st.users_per_window, "user": st.user}

    # -------------------------------------------------------------- metrics
    def episode_metrics(self) -> dict[str, float]:
        self._window_outcome()
        st = self.state
        decided = st.assignment[: st.user]
        total = max(len(decided), 1)
        served = np.flatnonzero(decided >= 0)
        node, var = np.divmod(decided[served], self.n_variants)
        tier = self._tier[node]
        acc_ok = self._accuracy[var] >= st.min_accuracy[served]
        late = self._response[served] > st.deadline_s[served]
        out = {
            "satisfied_share": float(np.count_nonzero(self._satisfied[: st.user])) / total,
            "satisfied_users": float(np.count_nonzero(self._satisfied[: st.user])),
            "rejected_share": float(np.count_nonzero(decided == -1)) / total,
            "deadline_miss_share": float(np.count_nonzero(late)) / total,
            "accuracy_miss_share": float(np.count_nonzero(~acc_ok)) / total,
        }
        for t, name in enumerate(TIERS):
            out[f"share_{name}"] = float(np.count_nonzero(tier == t)) / total
        out["mean_accuracy_served"] = mean_or_zero(self._accuracy[var])
        out["mean_latency_s"] = mean_or_zero(self._response[served])
        return out

    def invariant_violations(self) -> list[str]:
        st, bad = self.state, []
        over = np.flatnonzero(st.used_s > st.capacity_s * (1 + 1e-12))
        if over.size:
            bad.append(f"capacity exceeded on nodes {over.tolist()}: {st.used_s[over]} > {st.capacity_s[over]}")
        load = self._jobs[kernels.JOB_COMPUTE].sum(axis=1)  # zeros after each queue's jobs
        if not np.allclose(st.used_s, load, rtol=1e-9, atol=1e-9):
            bad.append(f"node load {st.used_s} != sum of its jobs {load}")
        if np.any(st.assignment[: st.user] == -2) or np.any(st.assignment[st.user:] != -2):
            bad.append(f"decided users are not exactly the first {st.user}")
        window = st.assignment[st.window_start: st.user]
        served = np.flatnonzero(window >= 0) + st.window_start
        queues = [self._queue(n) for n in range(self.n_nodes)]
        on_nodes = np.sort(np.concatenate([self._job_user[n, q] for n, q in enumerate(queues)]))
        if not np.array_equal(on_nodes, served):
            bad.append(f"users on nodes {on_nodes.tolist()} != served users {served.tolist()}")
        for n, q in enumerate(queues):
            if np.any(st.assignment[self._job_user[n, q]] // self.n_variants != n):
                bad.append(f"node {n} holds users assigned elsewhere")
            if np.any(np.diff(self._jobs[kernels.JOB_DEADLINE, n, q]) < 0):
                bad.append(f"node {n}'s queue is not in EDF order")
            if not np.array_equal(self._jobs[kernels.JOB_FINISH, n, q], np.cumsum(self._jobs[kernels.JOB_COMPUTE, n, q])):
                bad.append(f"node {n}'s finish times are not its jobs' compute summed in EDF order")
        a = st.assignment[: st.user]
        if np.any(a >= 0) and not np.all(self._deployed.ravel()[a[a >= 0]]):
            bad.append("a user was served by a variant not deployed on its node")
        recount = int(np.count_nonzero(self._satisfied[: st.window_start])) + sum(
            self._node_satisfied(n) for n in range(self.n_nodes))
        if recount != self._n_satisfied:
            bad.append(f"reward sum {self._n_satisfied} != satisfied users {recount}")
        return bad

    def _node_satisfied(self, n: int) -> int:
        """Satisfied users in node n's queue."""
        return int(np.count_nonzero(self._jobs[kernels.JOB_SLACK, n, self._queue(n)] < np.inf))

    # ------------------------------------------------------------- rendering
    def _render_ansi(self) -> str:
        st = self.state
        k = st.users_per_window
        lines = [f"window {st.window_start // k}/{self.scenario.n_windows} user {st.user}/{self.n_users} "
                 f"satisfied so far {self._n_satisfied}"]
        if st.user < self.n_users:
            u = st.user
            lines.append(f"  current user: min accuracy {st.min_accuracy[u]:.3f}, deadline {st.deadline_s[u]:.2f}s")
        for n, name in enumerate(st.node_names):
            c = int(self._n_jobs[n])
            hosted = ",".join(v.removeprefix("qwen2.5-") for v, d in zip(st.variant_names, self._deployed[n]) if d)
            lines.append(f"  {TIERS[self._tier[n]]:5s} {name:18s} load {st.used_s[n]:6.2f}/{st.capacity_s[n]:.0f}s "
                         f"users {c:3d} satisfied {self._node_satisfied(n):3d} [{hosted}]")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        from ..render import bars_rgb

        st = self.state
        return bars_rgb(list(st.node_names), st.used_s, st.capacity_s,
                        title=f"window {st.window_start // st.users_per_window}: compute assigned per node",
                        unit="s")
