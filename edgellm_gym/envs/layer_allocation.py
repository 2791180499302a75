"""LayerAllocation-v0: split each arriving task's model layers over shared, bidding edge devices."""

from __future__ import annotations

import heapq
from types import SimpleNamespace
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from .. import costs
from ..auction import fcim_bid_ratios, fcim_chosen_reward
from ..catalog import get_device, get_model
from ..metrics import jain_index, mean_or_zero
from ..scenario import register_preset, require, resolve_scenario
from ..workload import WorkloadSpec, sample_requests, workload_preset
from .base import MaskedEnv, squash

__all__ = ["LayerAllocationScenario", "LayerAllocationState", "LayerAllocationEnv", "OUTCOMES"]

ENV_KEY = "LayerAllocation"
N_DEVICE_FEATURES = 9
N_GLOBAL_FEATURES = 6
PAYMENT_RULES = ("fcim", "pay_as_bid")
# task outcome codes: 0 = not decided yet
ALLOCATED, REJECTED_BY_POLICY, REJECTED_NO_CAPACITY = 1, 2, 3
OUTCOMES = {0: "pending", ALLOCATED: "allocated", REJECTED_BY_POLICY: "rejected_by_policy",
            REJECTED_NO_CAPACITY: "rejected_no_capacity"}


@dataclass(frozen=True)
class LayerAllocationScenario:
    """Devices that bid for the layers of each arriving task, and how tasks are paid and rewarded.

    Default: the FCIM authors' set-up, 3 x RTX 4090 + 3 x T4 on a 1 Gb/s LAN with
    Rayleigh delays (scale 3 ms; the authors' scale is 3, unit unstated). Their
    BLOOM-176B (352 GB at fp16) fits in none of it; we use Qwen2.5-14B (48
    layers, 0.55 GB each, 26.4 GB): it fits several times in the six GPUs' 120 GiB
    yet on no single one (an RTX 4090 holds 41 of its layers, a T4 27), so every
    task is split over two devices or more as BLOOM was, and tasks contend for
    memory. (Qwen2.5-32B, 62 GB, would fit only once: no contention.)

    Prices are rental rates per hour of a device (our estimates of 2024 market
    rates: RTX 4090 about 0.40 USD/h on community clouds, T4 0.35 USD/h on
    demand); a bid's price is that rate times its compute time.
    `mem_usable_fraction` of each device's memory holds layers and KV cache (the
    rest: CUDA context, activations, fragmentation; our estimate).
    """

    devices: tuple[str, ...] = ("rtx4090", "rtx4090", "rtx4090", "t4", "t4", "t4")
    price_usd_per_h: tuple[float, ...] = (0.40, 0.40, 0.40, 0.35, 0.35, 0.35)
    model: str = "qwen2.5-14b"
    bits: int = 16
    mem_usable_fraction: float = 0.9
    # Azure conv 2023 token lengths; Poisson arrivals (rate: see the docs' load note)
    workload: WorkloadSpec = field(default_factory=lambda: workload_preset("azure-conv-2023", rate_per_s=0.15))
    n_tasks: int = 200
    link_bw_bps: float = 1e9
    delay_scale_s: float = 3e-3  # Rayleigh scale of the one-way latency of each ordered device pair
    client_delay_scale_s: float = 3e-3  # Rayleigh scale of each device's latency to the client
    slack_min: float = 1.5  # deadline = arrival + slack x ideal latency, slack ~ U[slack_min, slack_max]
    slack_max: float = 4.0
    budget_min: float = 1.0  # budget = factor x cheapest whole-model price, factor ~ U[budget_min, budget_max]
    budget_max: float = 3.0
    payment_rule: str = "fcim"
    alpha: float = 0.1
    beta: float = 0.3
    gamma: float = 0.6
    delta: float = 0.1
    w_latency: float = 1.0
    w_payment: float = 1.0
    w_devices: float = 0.1
    reject_penalty: float = 10.0
    miss_penalty: float = 1.0

    def __post_init__(self) -> None:
        require(len(self.devices) >= 1, "devices", self.devices, "a non-empty list of catalog device names")
        for d in self.devices:
            get_device(d)
        model = get_model(self.model)
        require(len(self.price_usd_per_h) == len(self.devices), "price_usd_per_h", self.price_usd_per_h,
                f"one price per device ({len(self.devices)})")
        require(all(p >= 0 for p in self.price_usd_per_h), "price_usd_per_h", self.price_usd_per_h, ">= 0")
        require(self.bits in (4, 8, 16), "bits", self.bits, "one of 4, 8, 16")
        require(0 < self.mem_usable_fraction <= 1, "mem_usable_fraction", self.mem_usable_fraction, "in (0, 1]")
        require(self.n_tasks >= 1, "n_tasks", self.n_tasks, ">= 1")
        require(self.link_bw_bps > 0, "link_bw_bps", self.link_bw_bps, "> 0")
        require(self.delay_scale_s >= 0, "delay_scale_s", self.delay_scale_s, ">= 0")
        require(self.client_delay_scale_s >= 0, "client_delay_scale_s", self.client_delay_scale_s, ">= 0")
        require(self.slack_min >= 1.0, "slack_min", self.slack_min, ">= 1 (a deadline before the ideal finish)")
        require(self.slack_max >= self.slack_min, "slack_max", self.slack_max, ">= slack_min")
        require(self.budget_min > 0, "budget_min", self.budget_min, "> 0")
        require(self.budget_max >= self.budget_min, "budget_max", self.budget_max, ">= budget_min")
        require(self.payment_rule in PAYMENT_RULES, "payment_rule", self.payment_rule, f"one of {PAYMENT_RULES}")
        for name in ("alpha", "beta", "gamma", "delta", "w_latency", "w_payment", "w_devices",
                     "reject_penalty", "miss_penalty"):
            require(getattr(self, name) >= 0, name, getattr(self, name), ">= 0")
        # every task must fit the empty cluster, or it could never be served
        longest = self.workload.prompt_max + self.workload.output_max
        per_layer = layer_bytes(model, self.bits, longest)
        fit = sum(int(capacity_bytes(get_device(d), self.mem_usable_fraction) // per_layer) for d in self.devices)
        require(fit >= model.n_layers, "devices", self.devices,
                f"able to hold the {model.n_layers} layers of {self.model} together (they hold {fit} "
                f"at {longest} tokens of KV cache)")


def layer_bytes(model, bits: int, tokens) -> np.ndarray:
    """Memory one layer of one task holds: its weights plus the KV cache of its `tokens` (int bytes)."""
    return np.ceil(costs.layer_weight_bytes(model, bits)
                   + costs.kv_bytes_per_token_layer(model) * np.asarray(tokens, dtype=float)).astype(np.int64)


def capacity_bytes(device, usable_fraction: float) -> int:
    """Bytes of a device usable for layers and KV cache."""
    return int(device.mem_bytes * usable_fraction)


register_preset(ENV_KEY, "default", LayerAllocationScenario())
register_preset(ENV_KEY, "small", LayerAllocationScenario(
    devices=("rtx4090", "rtx4090", "t4"), price_usd_per_h=(0.40, 0.40, 0.35), n_tasks=20,
    workload=workload_preset("azure-conv-2023", rate_per_s=0.3)))
# Jetson-class edge cluster on Wi-Fi: prices are hardware amortised over 3 years plus busy power at
# 0.15 USD/kWh (our estimates: Orin Nano 8GB 249 USD, 15 W; Orin NX 16GB 699 USD, 25 W); 75% of the
# memory usable (shared with the OS). Qwen2.5-7B: a Nano holds 13 of its 28 layers, an NX 27.
register_preset(ENV_KEY, "jetson", LayerAllocationScenario(
    devices=("orin-nano-8gb",) * 4 + ("orin-nx-16gb",) * 2, price_usd_per_h=(0.012,) * 4 + (0.030,) * 2,
    model="qwen2.5-7b", mem_usable_fraction=0.75, link_bw_bps=300e6, delay_scale_s=5e-3,
    client_delay_scale_s=5e-3, workload=workload_preset("azure-conv-2023", rate_per_s=0.02)))


@dataclass
class LayerAllocationState:
    """What reference policies may read (`env.unwrapped.state`; read-only by convention).

    Device arrays have one entry per device. The bid arrays are the bids of the
    current task: layers l_i a device can host now (capped at the model's
    layers; 0 for a device without room or already used by this task), compute
    time T_i of those layers, price P_i = rate x T_i. `hop_s[i, j]`: the
    communication time of the task's hidden states from device i to j over the
    whole request; `client_s[i]`: returning its tokens from device i to the client.

    The env's step path updates Python lists (`free`, `busy`, `bids`, ...); the
    device arrays (`free_bytes`, `used`, `bid_layers`, ...) are built from them
    on each read, so they always show the current state and writing into them
    changes nothing.
    """

    now_s: float
    task: int  # current task id; -1 once every task is decided
    total_layers: int
    remaining_layers: int
    chain: list[int]  # devices chosen for the current task, in pipeline order
    taken: list[int]  # layers each of them took
    capacity_bytes: np.ndarray
    layer_bytes: int  # per layer of the current task (weights + KV cache)
    budget_usd: float
    deadline_s: float
    arrival_s: float
    free: list[int]  # free bytes per device
    busy: list[float]  # time each device is busy until
    bids: list[int]  # bid layers of the current task per device, before any was used
    bid_times: list[float]
    bid_prices: list[float]
    row: int  # the current (or, at the end, the last) task's row of the per-task tables
    tables: tuple[np.ndarray, np.ndarray, np.ndarray] = field(repr=False)  # per_layer_s, hop_s, client_s

    @property
    def free_bytes(self) -> np.ndarray:
        return np.array(self.free, dtype=np.int64)

    @property
    def busy_until_s(self) -> np.ndarray:
        return np.array(self.busy, dtype=float)

    @property
    def used(self) -> np.ndarray:
        """Bool: device already used by the current task."""
        used = np.zeros(len(self.free), dtype=bool)
        used[self.chain] = True
        return used

    def _bid_array(self, values, dtype) -> np.ndarray:
        out = np.array(values, dtype=dtype)
        out[self.chain] = 0  # a used device bids no more for this task
        return out

    @property
    def bid_layers(self) -> np.ndarray:
        return self._bid_array(self.bids, np.int64)

    @property
    def bid_time_s(self) -> np.ndarray:
        return self._bid_array(self.bid_times, float)

    @property
    def bid_price_usd(self) -> np.ndarray:
        return self._bid_array(self.bid_prices, float)

    @property
    def per_layer_s(self) -> np.ndarray:
        """Compute time of one layer of the current task per device."""
        return self.tables[0][self.row]

    @property
    def hop_s(self) -> np.ndarray:
        return self.tables[1][self.row]

    @property
    def client_s(self) -> np.ndarray:
        return self.tables[2][self.row]


class LayerAllocationEnv(MaskedEnv):
    """
    ## Description
    LLM inference tasks arrive over time (default: Azure 2023 conversation token
    lengths, Poisson arrivals). Each task needs all L layers of the scenario's
    model placed on shared edge devices (default: 3 x RTX 4090 + 3 x T4, the FCIM
    authors' set-up, with Qwen2.5-14B as the model). Devices bid for each task:
    the layers they can host from their free memory (weights + the task's KV
    cache per layer), the compute time of those layers from the cost model, and a
    price = their rental rate x that time. The agent builds the task's pipeline
    one device per step; each picked device takes min(its layers, remaining). The
    memory is held from the allocation until the task completes. A task starts
    when every device it uses is free (devices serve their tasks one at a time,
    first come first served) and completes after its compute, the communication
    between consecutive devices and to the client. This is the problem of FCIM
    (DESIGN 4.2), as a stream of tasks on shared devices.

    ## Action Space
    `Discrete(N + 1)` for N devices: action i < N appends device i to the
    current task's pipeline; action N rejects the task (always valid). A device
    is masked when it has no room for one layer of the task or is already used
    by it. Time does not move while a task is placed, so the devices left always
    hold the layers left (a task that does not fit the free memory at its
    arrival is rejected by the env: reason "no capacity").

    ## Observation Space
    `Box(-1, 1, (9N + 6,), float32)`. Per device: whole-model compute time of the
    task on it, whole-model price on it / budget, time to the client, free memory
    share, bid layers / L, used by this task, wait until free, hop time from the
    last chosen device, bid feasible for FCIM (price <= budget and time <= time
    to deadline); times squashed by x / (|x| + ideal latency of the task), prices
    by the budget. Then: time to deadline, prompt and output tokens (squashed by
    1000 and 100), remaining layers / L, devices used / N, payment so far / budget.
    Layout table: docs/envs/layer_allocation.md.

    ## Rewards
    When a task's last layer is placed: -(w_latency x (completion - arrival) /
    ideal latency + w_payment x payment / budget + w_devices x devices used) -
    miss_penalty if it completes after its deadline. A rejected task:
    -reject_penalty. Other steps: 0. The payment is the sum over the task's
    devices of the FCIM reward for that device (the second-price rule of
    `baselines.fcim`, the picked device being the winner of a round over the
    devices still free for the task) with `payment_rule="fcim"`, or its price
    for the layers it took with "pay_as_bid".

    ## Starting State
    `n_tasks` tasks drawn with `np_random` (tokens, deadline slack, budget) and
    the network delays of the episode (Rayleigh); every device empty; time at
    the first arrival, which is the first decision.

    ## Episode End
    Terminated when every task is allocated or rejected (running tasks finish
    at their known completion times). Truncated after `max_invalid_streak`
    consecutive masked actions.

    ## Arguments
    `gymnasium.make("edgellm_gym/LayerAllocation-v0", scenario="default",
    render_mode=None, invalid_action="penalize", invalid_action_penalty=1.0,
    max_invalid_streak=100)`; `scenario`: a preset ("default", "small",
    "jetson"), a YAML path, a dict or a `LayerAllocationScenario`.

    ## Info
    `action_mask`, `invalid_action`, `now_s`, `task`; at the end
    `episode_metrics` (see `episode_metrics`).

    ## Version History
    * v0: initial version.
    """

    def __init__(self, scenario=None, render_mode: str | None = None, invalid_action: str = "penalize",
                 invalid_action_penalty: float = 1.0, max_invalid_streak: int = 100) -> None:
        super().__init__(render_mode, invalid_action, invalid_action_penalty, max_invalid_streak)
        self.scenario = sc = resolve_scenario(LayerAllocationScenario, ENV_KEY, scenario)
        self._model = get_model(sc.model)
        self._devices = [get_device(d) for d in sc.devices]
        n = self.n_devices = len(self._devices)
        self.action_space = spaces.Discrete(n + 1)
        self.observation_space = spaces.Box(-1.0, 1.0, (n * N_DEVICE_FEATURES + N_GLOBAL_FEATURES,), np.float32)
        self._reject_action = n
        self._mask = np.zeros(n + 1, dtype=bool)
        self._capacity = np.array([capacity_bytes(d, sc.mem_usable_fraction) for d in self._devices], np.int64)
        self._price_per_s = np.asarray(sc.price_usd_per_h, dtype=float) / 3600.0
        self._offdiag = 1.0 - np.eye(n)
        self._act_bytes_bits = self._model.hidden * 2 * 8.0  # one token's hidden state, in bits
        # the distinct device types, their cost-model fields as columns (one call covers them all)
        kinds = list(dict.fromkeys(sc.devices))
        self._kind_of = np.array([kinds.index(d) for d in sc.devices])
        self._kind_cols = SimpleNamespace(**{f: np.array([[getattr(get_device(d), f)] for d in kinds])
                                             for f in ("peak_flops", "compute_efficiency", "mem_bw_Bps")})
        self._cap_l, self._price_per_s_l = self._capacity.tolist(), self._price_per_s.tolist()
        self._fcim_rule = sc.payment_rule == "fcim"
        # FCIM step 3 with gamma > alpha + beta: a winner taking all its bid layers is paid its price
        self._fcim_own_price = sc.gamma > sc.alpha + sc.beta
        self._mask_patterns: dict[tuple[int, ...], np.ndarray] = {}  # devices with room -> the mask
        # flat observation indices written when a task opens: free share, bid layers, wait, feasible
        self._open_idx = np.array([i * N_DEVICE_FEATURES + f for i in range(n) for f in (3, 4, 6, 8)])
        self.state: LayerAllocationState | None = None

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sc, rng, m, n = self.scenario, self.np_random, self._model, self.n_devices
        req = sample_requests(sc.workload, rng, sc.n_tasks)
        k = len(req)
        self._arrival = req.arrival_s.astype(float)
        self._prompt, self._output = req.prompt_tokens, req.output_tokens
        # per task x device: compute time of one layer (the cost model is linear in the layer count);
        # one cost-model call over the distinct device types (their fields as columns), then per device
        per_kind = costs.layers_time_s(m, self._kind_cols, 1, req.prompt_tokens, req.output_tokens, sc.bits)
        self._per_layer_s = np.ascontiguousarray(per_kind[self._kind_of].T)
        self._layer_bytes = layer_bytes(m, sc.bits, req.prompt_tokens + req.output_tokens)
        self._ideal_s = self._per_layer_s.min(axis=1) * m.n_layers
        self._deadline = self._arrival + rng.uniform(sc.slack_min, sc.slack_max, size=k) * self._ideal_s
        cheapest = (self._per_layer_s * self._price_per_s).min(axis=1) * m.n_layers
        self._budget = rng.uniform(sc.budget_min, sc.budget_max, size=k) * cheapest
        # the authors draw every ordered pair's delay and each client delay from a Rayleigh law
        latency = rng.rayleigh(sc.delay_scale_s, size=(n, n)) * self._offdiag if sc.delay_scale_s > 0 \
            else np.zeros((n, n))
        client_latency = rng.rayleigh(sc.client_delay_scale_s, size=n) if sc.client_delay_scale_s > 0 \
            else np.zeros(n)
        # every generated token crosses each hop once, and so do the hidden states of the prompt and of
        # each decode step, (S + G - 1) x h x 2 bytes; the last device returns each token to the client
        g = req.output_tokens.astype(float)
        act_s = (req.prompt_tokens + g - 1) * self._act_bytes_bits / sc.link_bw_bps
        self._hop_s = g[:, None, None] * latency + act_s[:, None, None] * self._offdiag
        self._client_s = g[:, None] * client_latency

        # observation parts that are fixed per task, in place in one row per task (layout: _open_task)
        scale = self._ideal_s[:, None]
        whole_s = self._per_layer_s * m.n_layers
        price = whole_s * self._price_per_s
        base = np.zeros((k,) + self.observation_space.shape, dtype=np.float32)
        dev = base[:, : n * N_DEVICE_FEATURES].reshape(k, n, N_DEVICE_FEATURES)
        dev[:, :, 0] = whole_s / (whole_s + scale)
        dev[:, :, 1] = price / (price + self._budget[:, None])
        dev[:, :, 2] = self._client_s / (self._client_s + scale)
        glob = base[:, n * N_DEVICE_FEATURES:]
        glob[:, 0] = squash(self._deadline - self._arrival, self._ideal_s)
        glob[:, 1] = squash(req.prompt_tokens, 1000.0)
        glob[:, 2] = squash(g, 100.0)
        glob[:, 3] = 1.0
        self._obs_base = base
        self._hop_obs = (self._hop_s / (self._hop_s + scale[:, :, None])).astype(np.float32)
        # the step path works on Python numbers (numpy calls cost more than they save on a few devices)
        self._arrival_l, self._layer_bytes_l = self._arrival.tolist(), self._layer_bytes.tolist()
        self._ideal_l, self._budget_l = self._ideal_s.tolist(), self._budget.tolist()
        # row-major flat (task x device): a list of lists per task would cost the garbage collector more
        self._deadline_l, self._per_layer_l = self._deadline.tolist(), self._per_layer_s.ravel().tolist()

        self._outcome = np.zeros(k, dtype=np.int8)
        self._completion = np.full(k, np.nan)
        self._wait = np.full(k, np.nan)
        self._compute = np.zeros(k)
        self._comm = np.zeros(k)
        self._payment = np.zeros(k)
        self._n_used = np.zeros(k, dtype=np.int64)
        self._holdings: dict[int, tuple[list[int], list[int]]] = {}  # task -> (devices, bytes) held
        self._events: list[tuple[float, int]] = []  # (completion time, task): frees its memory
        self._lpd, self._ppd = [0.0] * n, [0.0] * n  # layers and payments per device so far
        self._rounds = self._positive_rounds = 0
        self._pending_pay: list[float] = []
        self._pending_bid: list[float] = []
        zeros = [0] * n
        self.state = LayerAllocationState(
            now_s=float(self._arrival[0]), task=0, total_layers=m.n_layers, remaining_layers=m.n_layers,
            chain=[], taken=[], capacity_bytes=self._capacity.copy(), layer_bytes=0, budget_usd=0.0,
            deadline_s=0.0, arrival_s=0.0, free=self._capacity.tolist(), busy=[float(self._arrival[0])] * n,
            bids=zeros, bid_times=zeros, bid_prices=zeros, row=0,
            tables=(self._per_layer_s, self._hop_s, self._client_s))
        self._pool: list[int] = []  # the current task's FCIM pool: devices with room not used yet
        self._last_now_s = self.state.now_s
        self._obs_buf = np.zeros(self.observation_space.shape, dtype=np.float32)
        penalty = self._begin_task(0)
        assert penalty == 0.0, "scenario validation guarantees the first task fits"
        return self._obs(), self._info()

    # ------------------------------------------------------------------ step
    # The step path works on Python numbers and lists (numpy calls cost more than they save on a few
    # devices); numpy only for the observation buffer.
    def _step(self, a: int):
        st = self.state
        if st.task < 0:
            raise RuntimeError("the episode has ended; call reset()")
        if a == self._reject_action:
            reward = self._reject(REJECTED_BY_POLICY)
            reward += self._begin_task(st.task + 1)
        else:
            reward = self._place(a)
            if st.remaining_layers == 0:
                reward += self._commit()
                reward += self._begin_task(st.task + 1)
        info = {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": st.now_s, "task": st.task}
        if st.task < 0:  # terminated
            info["episode_metrics"] = self.episode_metrics()
            return self._obs_buf.copy(), float(reward), True, False, info
        return self._obs_buf.copy(), float(reward), False, False, info

    def _begin_task(self, task: int) -> float:
        """Move to `task`'s arrival, free the memory of tasks completed by then, build the bids.
        Tasks that do not fit the free memory are rejected here; returns their penalties."""
        st, n_tasks = self.state, len(self._arrival_l)
        free, events, L = st.free, self._events, st.total_layers
        penalty = 0.0
        st.chain, st.taken = [], []
        self._pending_pay, self._pending_bid = [], []
        while task < n_tasks:
            st.now_s = now = self._arrival_l[task]
            while events and events[0][0] <= now:
                _, done = heapq.heappop(events)
                devs, held = self._holdings.pop(done)
                for d, b in zip(devs, held):
                    free[d] += b
            st.task = task
            st.layer_bytes = lb = self._layer_bytes_l[task]
            bid = [x if (x := f // lb) < L else L for f in free]  # min(free // lb, L)
            if sum(bid) >= L:
                self._open_task(task, bid)
                return penalty
            self._outcome[task] = REJECTED_NO_CAPACITY
            penalty -= self.scenario.reject_penalty
            task += 1
        st.task = -1
        st.remaining_layers = 0
        st.bids = st.bid_times = st.bid_prices = [0] * self.n_devices
        self._obs_buf[:] = 0.0
        self._mask[:-1] = False
        self._mask[-1] = True
        return penalty

    def _open_task(self, task: int, bid: list[int]) -> None:
        """Set the state, the FCIM bids, the mask and the observation for a task that fits, in one
        pass over the devices."""
        st, L = self.state, self.state.total_layers
        st.remaining_layers = L
        st.row = task
        st.budget_usd = budget = self._budget_l[task]
        st.deadline_s = deadline = self._deadline_l[task]
        st.arrival_s = now = st.now_s
        st.bids = bid
        n = self.n_devices
        per, rate, free, cap = self._per_layer_l[task * n: task * n + n], self._price_per_s_l, st.free, self._cap_l
        ideal = self._ideal_l[task]
        slack = deadline - now
        # bid time and price; FCIM feasibility (price <= budget and time <= time to deadline: fixed while
        # the task is placed, a used device leaves the pool); the pool (devices with room); and the
        # observation's free memory share, bid layers / L, wait until free and feasibility, per device
        times, prices, feasible, pool, vals = [], [], [], [], []
        for i, b in enumerate(st.busy):
            x = bid[i]
            ti = x * per[i]
            pi = ti * rate[i]
            times.append(ti)
            prices.append(pi)
            fe = pi <= budget and ti <= slack
            feasible.append(fe)
            w = b - now if b > now else 0.0
            if x >= 1:
                pool.append(i)
                vals += (free[i] / cap[i], x / L, w / (w + ideal), 1.0 if fe else 0.0)
            else:
                vals += (free[i] / cap[i], x / L, w / (w + ideal), 0.0)
        st.bid_times, st.bid_prices = times, prices
        self._feasible, self._pool, self._ratios, self._paid_so_far = feasible, pool, None, 0.0
        key = tuple(pool)
        mask = self._mask_patterns.get(key)
        if mask is None:  # one mask per set of devices with room (the reject action always valid)
            mask = np.zeros(self.n_devices + 1, dtype=bool)
            mask[pool] = True
            mask[-1] = True
            self._mask_patterns[key] = mask
        self._mask = mask.copy()
        buf = self._obs_base[task].copy()  # the task's fixed features (built at reset)
        buf[self._open_idx] = vals
        self._obs_buf = buf

    def _place(self, d: int) -> float:
        """Append device `d` to the current task's pipeline; it is paid when the task commits."""
        st, sc = self.state, self.scenario
        layers = st.bids[d]
        remaining = st.remaining_layers
        take = layers if layers < remaining else remaining
        price = st.bid_prices[d]
        bid_pay = price / layers * take
        if not self._fcim_rule:
            pay = bid_pay
        elif self._fcim_own_price and remaining >= layers:  # fcim_chosen_reward's first shortcut
            pay = float(price)
        else:
            if self._ratios is None:  # the FCIM ratios of this task's bids, once per task
                self._ratios = fcim_bid_ratios(st.bid_prices, st.bids, st.bid_times, st.total_layers)
            pay = fcim_chosen_reward(st.bid_prices, st.bids, st.bid_times, self._feasible, st.total_layers,
                                     self._pool, remaining, d, sc.alpha, sc.beta, sc.gamma, sc.delta,
                                     ratios=self._ratios)
        self._pending_pay.append(pay)
        self._pending_bid.append(bid_pay)
        st.chain.append(d)
        st.taken.append(take)
        st.free[d] = free = st.free[d] - take * st.layer_bytes
        st.remaining_layers = remaining = remaining - take
        if remaining == 0:  # the task commits now: the next one brings its own pool, mask and observation
            return 0.0
        self._pool.remove(d)
        self._mask[d] = False
        buf, L, n, i = self._obs_buf, st.total_layers, self.n_devices, d * N_DEVICE_FEATURES
        buf[i + 3] = free / self._cap_l[d]
        buf[i + 4] = 0.0
        buf[i + 5] = 1.0
        buf[7:n * N_DEVICE_FEATURES:N_DEVICE_FEATURES] = self._hop_obs[st.task, d]
        buf[i + 8] = 0.0
        g = n * N_DEVICE_FEATURES
        buf[g + 3] = remaining / L
        buf[g + 4] = len(st.chain) / n
        self._paid_so_far = pays = self._paid_so_far + pay  # the sum of the pending payments, in order
        buf[g + 5] = pays / (pays + st.budget_usd)
        return 0.0

    def _commit(self) -> float:
        """The task's pipeline is complete: schedule it, pay its devices, return its reward."""
        st, sc, t = self.state, self.scenario, self.state.task
        chain, taken, pays = st.chain, st.taken, self._pending_pay  # no device twice in a chain
        now, busy = st.now_s, st.busy
        if len(chain) < 8:  # numpy adds fewer than 8 (dot: 16) float64s in order: so does this, bit for bit
            per = self._per_layer_l[t * self.n_devices: (t + 1) * self.n_devices]
            compute = 0.0
            for d, k in zip(chain, taken):
                compute += per[d] * k
            hop = self._hop_s[t]
            comm = 0.0
            for i, j in zip(chain, chain[1:]):
                comm += hop[i, j]
            comm = float(comm + self._client_s[t, chain[-1]])
            paid = 0.0
            for x in pays:
                paid += x
        else:
            c = np.array(chain)
            compute = float(self._per_layer_s[t, c] @ np.array(taken, dtype=np.int64))
            comm = float(self._hop_s[t, c[:-1], c[1:]].sum() + self._client_s[t, c[-1]])
            paid = float(np.sum(pays))
        start = now
        for d in chain:
            if busy[d] > start:
                start = busy[d]
        done = start + compute + comm
        for d in chain:
            busy[d] = done
        lb = st.layer_bytes
        self._holdings[t] = (chain, [k * lb for k in taken])
        heapq.heappush(self._events, (done, t))
        self._outcome[t] = ALLOCATED
        self._completion[t], self._wait[t] = done, start - now
        self._compute[t], self._comm[t], self._payment[t] = compute, comm, paid
        self._n_used[t] = len(chain)
        lpd, ppd = self._lpd, self._ppd
        positive = 0
        for d, k, x, q in zip(chain, taken, pays, self._pending_bid):
            lpd[d] += k
            ppd[d] += x
            if x >= q * (1 - 1e-12):
                positive += 1
        self._rounds += len(chain)
        self._positive_rounds += positive
        reward = -(sc.w_latency * (done - now) / self._ideal_l[t] + sc.w_payment * paid / st.budget_usd
                   + sc.w_devices * len(chain))
        if done > st.deadline_s:
            reward -= sc.miss_penalty
        return float(reward)

    def _reject(self, reason: int) -> float:
        """Reject the current task: release what it holds, count the reason."""
        st, free = self.state, self.state.free
        for d, k in zip(st.chain, st.taken):
            free[d] += k * st.layer_bytes
        self._outcome[st.task] = reason
        return -self.scenario.reject_penalty

    @property
    def _layers_per_device(self) -> np.ndarray:
        """Layers each device has taken over the episode's allocated tasks."""
        return np.array(self._lpd)

    @property
    def _paid_per_device(self) -> np.ndarray:
        """Payments (USD) each device has received over the episode."""
        return np.array(self._ppd)

    # --------------------------------------------------------- observations
    def _obs(self) -> np.ndarray:
        return self._obs_buf.copy()

    def _info(self) -> dict:
        st = self.state
        return {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": st.now_s, "task": st.task}


    # -------------------------------------------------------------- metrics
    def invariant_violations(self) -> list[str]:
        st, bad = self.state, []
        if st.now_s < self._last_now_s:
            bad.append(f"time ran backwards: {st.now_s} < {self._last_now_s}")
        self._last_now_s = st.now_s
        if np.any(st.free_bytes < 0):
            bad.append(f"memory over capacity: free bytes {st.free_bytes.tolist()}")
        if np.any(st.free_bytes > st.capacity_bytes):
            bad.append(f"negative memory use: free {st.free_bytes.tolist()} > capacity {st.capacity_bytes.tolist()}")
        held = np.zeros(self.n_devices, dtype=np.int64)
        for devs, nbytes in self._holdings.values():
            np.add.at(held, devs, nbytes)
        for d, k in zip(st.chain, st.taken):
            held[d] += k * st.layer_bytes
        if not np.array_equal(st.capacity_bytes - st.free_bytes, held):
            bad.append(f"memory held {held.tolist()} != capacity - free {(st.capacity_bytes - st.free_bytes).tolist()}")
        n_tasks = len(self._arrival)
        decided = n_tasks if st.task < 0 else st.task
        if np.any(self._outcome[:decided] == 0):
            bad.append(f"tasks before {decided} neither allocated nor rejected")
        if np.any(self._outcome[decided:] != 0):
            bad.append(f"tasks from {decided} on decided early")
        if st.task >= 0 and st.remaining_layers + sum(st.taken) != st.total_layers:
            bad.append(f"layers lost: {st.remaining_layers} remaining + {sum(st.taken)} placed != {st.total_layers}")
        alloc = self._outcome == ALLOCATED
        if np.any(self._completion[alloc] < self._arrival[alloc]):
            bad.append("a task completes before it arrives")
        if abs(self._layers_per_device.sum() - alloc.sum() * st.total_layers) > 0:
            bad.append("allocated tasks do not hold exactly L layers each")
        return bad

    def episode_metrics(self) -> dict[str, float]:
        """Flat dict of floats over the tasks decided so far (units in names)."""
        alloc = self._outcome == ALLOCATED
        decided = max(int(np.sum(self._outcome != 0)), 1)
        comm, compute = float(self._comm[alloc].sum()), float(self._compute[alloc].sum())
        paid = float(self._payment[alloc].sum())
        on_time = int(np.sum(self._completion[alloc] <= self._deadline[alloc]))
        return {
            "mean_completion_time_s": mean_or_zero(self._completion[alloc] - self._arrival[alloc]),
            "mean_wait_s": mean_or_zero(self._wait[alloc]),
            "comm_overhead": comm / (comm + compute) if comm + compute > 0 else 0.0,
            "total_payment_usd": paid,
            "jain_layers": jain_index(self._layers_per_device),
            "jain_rewards": jain_index(self._paid_per_device),
            "devices_per_task": mean_or_zero(self._n_used[alloc]),
            "tasks_allocated": float(alloc.sum()),
            "tasks_no_feasible_allocation": float(np.sum((self._outcome == REJECTED_BY_POLICY)
                                                         | (self._outcome == REJECTED_NO_CAPACITY))),
            "tasks_rejected_no_capacity": float(np.sum(self._outcome == REJECTED_NO_CAPACITY)),
            "deadline_satisfaction": on_time / decided,
            "cost_efficiency_layers_per_usd": float(self._layers_per_device.sum() / paid) if paid > 0 else 0.0,
            "positive_utility_share": self._positive_rounds / self._rounds if self._rounds else 1.0,
        }

    # ------------------------------------------------------------- rendering
    def _render_ansi(self) -> str:
        st = self.state
        c = np.bincount(self._outcome, minlength=4)
        lines = [f"t={st.now_s:10.2f}s task={st.task} remaining={st.remaining_layers}/{st.total_layers} "
                 f"chain={st.chain} allocated={c[ALLOCATED]} rejected={c[REJECTED_BY_POLICY]} "
                 f"no_capacity={c[REJECTED_NO_CAPACITY]}"]
        for i, name in enumerate(self.scenario.devices):
            lines.append(f"  {i} {name:<14} free={st.free_bytes[i] / 2**30:6.2f}/"
                         f"{st.capacity_bytes[i] / 2**30:6.2f} GiB "
                         f"busy_for={max(st.busy_until_s[i] - st.now_s, 0):8.2f}s bid: l={st.bid_layers[i]:3d} "
                         f"T={st.bid_time_s[i]:7.2f}s P={st.bid_price_usd[i]:.5f} USD{' used' if st.used[i] else ''}")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        from ..render import bars_rgb

        st = self.state
        labels = [f"{i} {d}" for i, d in enumerate(self.scenario.devices)]
        return bars_rgb(labels, (st.capacity_bytes - st.free_bytes) / 2**30, st.capacity_bytes / 2**30,
                        title=f"{self.scenario.model}: memory held at t={st.now_s:.1f}s", unit="GiB")
