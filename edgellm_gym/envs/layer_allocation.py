"""LayerAllocation-v0: split each arriving task's model layers over shared, bidding edge devices."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from .. import costs
from ..auction import fcim_pool_round
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
    """

    now_s: float
    task: int  # current task id; -1 once every task is decided
    total_layers: int
    remaining_layers: int
    chain: list[int]  # devices chosen for the current task, in pipeline order
    taken: list[int]  # layers each of them took
    used: np.ndarray  # bool: device already used by the current task
    capacity_bytes: np.ndarray
    free_bytes: np.ndarray
    busy_until_s: np.ndarray
    layer_bytes: int  # per layer of the current task (weights + KV cache)
    per_layer_s: np.ndarray  # compute time of one layer of the current task per device
    bid_layers: np.ndarray
    bid_time_s: np.ndarray
    bid_price_usd: np.ndarray
    hop_s: np.ndarray
    client_s: np.ndarray
    budget_usd: float
    deadline_s: float
    arrival_s: float


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
        self.state: LayerAllocationState | None = None

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sc, rng, m, n = self.scenario, self.np_random, self._model, self.n_devices
        req = sample_requests(sc.workload, rng, sc.n_tasks)
        k = len(req)
        self._arrival = req.arrival_s.astype(float)
        self._prompt, self._output = req.prompt_tokens, req.output_tokens
        # per task x device: compute time of one layer (the cost model is linear in the layer count)
        self._per_layer_s = np.stack(
            [costs.layers_time_s(m, d, 1, req.prompt_tokens, req.output_tokens, sc.bits) for d in self._devices],
            axis=1)
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

        # observation parts that are fixed per task (see _open_task for the layout)
        scale = self._ideal_s[:, None]
        whole_s = self._per_layer_s * m.n_layers
        price = whole_s * self._price_per_s
        self._static_dev = np.stack([whole_s / (whole_s + scale), price / (price + self._budget[:, None]),
                                     self._client_s / (self._client_s + scale)], axis=2).astype(np.float32)
        self._static_glob = np.stack([squash(self._deadline - self._arrival, self._ideal_s),
                                      squash(req.prompt_tokens, 1000.0), squash(g, 100.0)], axis=1).astype(np.float32)
        self._hop_obs = (self._hop_s / (self._hop_s + scale[:, :, None])).astype(np.float32)

        self._outcome = np.zeros(k, dtype=np.int8)
        self._completion = np.full(k, np.nan)
        self._wait = np.full(k, np.nan)
        self._compute = np.zeros(k)
        self._comm = np.zeros(k)
        self._payment = np.zeros(k)
        self._n_used = np.zeros(k, dtype=np.int64)
        self._holdings: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # task -> (devices, bytes) held
        self._events: list[tuple[float, int]] = []  # (completion time, task): frees its memory
        self._layers_per_device = np.zeros(n)
        self._paid_per_device = np.zeros(n)
        self._rounds = self._positive_rounds = 0
        self._pending_pay: list[float] = []
        self._pending_bid: list[float] = []
        self.state = LayerAllocationState(
            now_s=float(self._arrival[0]), task=0, total_layers=m.n_layers, remaining_layers=m.n_layers,
            chain=[], taken=[], used=np.zeros(n, dtype=bool), capacity_bytes=self._capacity.copy(),
            free_bytes=self._capacity.copy(), busy_until_s=np.full(n, float(self._arrival[0])), layer_bytes=0,
            per_layer_s=np.zeros(n), bid_layers=np.zeros(n, dtype=np.int64), bid_time_s=np.zeros(n),
            bid_price_usd=np.zeros(n), hop_s=np.zeros((n, n)), client_s=np.zeros(n), budget_usd=0.0,
            deadline_s=0.0, arrival_s=0.0)
        self._last_now_s = self.state.now_s
        self._obs_buf = np.zeros(self.observation_space.shape, dtype=np.float32)
        penalty = self._begin_task(0)
        assert penalty == 0.0, "scenario validation guarantees the first task fits"
        return self._obs(), self._info()

    # ------------------------------------------------------------------ step
    def step(self, action):
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        if a is None:
            return self._invalid_step(self._obs(), self._info())
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
        terminated = st.task < 0
        self._update_mask()
        info = self._info()
        if terminated:
            info["episode_metrics"] = self.episode_metrics()
        return self._obs(), float(reward), terminated, False, info

    def _begin_task(self, task: int) -> float:
        """Move to `task`'s arrival, free the memory of tasks completed by then, build the bids.
        Tasks that do not fit the free memory are rejected here; returns their penalties."""
        st, sc, n_tasks = self.state, self.scenario, len(self._arrival)
        penalty = 0.0
        st.chain, st.taken = [], []
        st.used[:] = False
        self._pending_pay, self._pending_bid = [], []
        while task < n_tasks:
            st.now_s = float(self._arrival[task])
            while self._events and self._events[0][0] <= st.now_s:
                _, done = heapq.heappop(self._events)
                devs, held = self._holdings.pop(done)
                st.free_bytes[devs] += held
            st.task = task
            st.layer_bytes = int(self._layer_bytes[task])
            bid_layers = np.minimum(st.free_bytes // st.layer_bytes, st.total_layers)
            if bid_layers.sum() >= st.total_layers:
                self._open_task(task, bid_layers)
                return penalty
            self._outcome[task] = REJECTED_NO_CAPACITY
            penalty -= sc.reject_penalty
            task += 1
        st.task = -1
        st.remaining_layers = 0
        st.bid_layers[:] = 0
        st.bid_time_s[:] = 0.0
        st.bid_price_usd[:] = 0.0
        self._obs_buf[:] = 0.0
        self._update_mask()
        return penalty

    def _open_task(self, task: int, bid_layers: np.ndarray) -> None:
        """Set the state, the FCIM bid arrays and the observation for a task that fits."""
        st, L = self.state, self.state.total_layers
        st.remaining_layers = L
        st.per_layer_s = self._per_layer_s[task]
        st.hop_s, st.client_s = self._hop_s[task], self._client_s[task]
        st.budget_usd, st.deadline_s = float(self._budget[task]), float(self._deadline[task])
        st.arrival_s = st.now_s
        st.bid_layers = bid_layers
        st.bid_time_s = bid_layers * st.per_layer_s
        st.bid_price_usd = st.bid_time_s * self._price_per_s
        self._update_mask()
        # FCIM ratios of this task's bids as lists (fixed while it is placed: a used device leaves the pool)
        p, l, t = st.bid_price_usd.tolist(), bid_layers.tolist(), st.bid_time_s.tolist()
        safe = [max(x, 1) for x in l]
        feasible = (st.bid_price_usd <= st.budget_usd) & (st.bid_time_s <= st.deadline_s - st.now_s)
        self._fcim = (p, l, [L / x for x in safe], [ti / x for ti, x in zip(t, safe)],
                      [pi / x for pi, x in zip(p, safe)], feasible.tolist())
        # observation: fixed per task (precomputed at reset), then what placing changes
        dev, g = self._dev_obs, self._glob_obs
        dev[:, :3] = self._static_dev[task]
        dev[:, 3] = st.free_bytes / st.capacity_bytes
        dev[:, 4] = bid_layers / L
        dev[:, 5] = 0.0
        wait = np.maximum(st.busy_until_s - st.now_s, 0.0)
        dev[:, 6] = wait / (wait + self._ideal_s[task])
        dev[:, 7] = 0.0
        dev[:, 8] = feasible & (bid_layers >= 1)
        g[:3] = self._static_glob[task]
        g[3:] = (1.0, 0.0, 0.0)

    def _place(self, d: int) -> float:
        """Append device `d` to the current task's pipeline; it is paid when the task commits."""
        st, sc = self.state, self.scenario
        layers = int(st.bid_layers[d])
        take = min(layers, st.remaining_layers)
        price = float(st.bid_price_usd[d])
        if sc.payment_rule == "fcim":
            pool = np.flatnonzero(self._mask[:-1]).tolist()
            pay = fcim_pool_round(*self._fcim, pool, st.remaining_layers, chosen=d, alpha=sc.alpha,
                                  beta=sc.beta, gamma=sc.gamma, delta=sc.delta)[2]
        else:
            pay = price / layers * take
        self._pending_pay.append(pay)
        self._pending_bid.append(price / layers * take)
        st.chain.append(d)
        st.taken.append(take)
        st.used[d] = True
        st.free_bytes[d] -= take * st.layer_bytes
        st.remaining_layers -= take
        st.bid_layers[d] = 0
        st.bid_time_s[d] = 0.0
        st.bid_price_usd[d] = 0.0
        self._mask[d] = False
        dev, g, L = self._dev_obs, self._glob_obs, st.total_layers
        dev[d, 3] = st.free_bytes[d] / st.capacity_bytes[d]
        dev[d, 4] = 0.0
        dev[d, 5] = 1.0
        dev[:, 7] = self._hop_obs[st.task, d]
        dev[d, 8] = 0.0
        g[3] = st.remaining_layers / L
        g[4] = len(st.chain) / self.n_devices
        pays = sum(self._pending_pay)
        g[5] = pays / (pays + st.budget_usd)
        return 0.0

    def _commit(self) -> float:
        """The task's pipeline is complete: schedule it, pay its devices, return its reward."""
        st, sc, t = self.state, self.scenario, self.state.task
        chain = np.array(st.chain, dtype=np.int64)  # no device twice in a chain: fancy += is safe below
        taken = np.array(st.taken, dtype=np.int64)
        pays = np.array(self._pending_pay)
        compute = float(st.per_layer_s[chain] @ taken)
        comm = float(st.hop_s[chain[:-1], chain[1:]].sum() + st.client_s[chain[-1]])
        start = max(st.now_s, float(st.busy_until_s[chain].max()))
        done = start + compute + comm
        st.busy_until_s[chain] = done
        self._holdings[t] = (chain, taken * st.layer_bytes)
        heapq.heappush(self._events, (done, t))
        paid = float(pays.sum())
        self._outcome[t] = ALLOCATED
        self._completion[t], self._wait[t] = done, start - st.now_s
        self._compute[t], self._comm[t], self._payment[t] = compute, comm, paid
        self._n_used[t] = chain.size
        self._layers_per_device[chain] += taken
        self._paid_per_device[chain] += pays
        self._rounds += chain.size
        self._positive_rounds += sum(p >= q * (1 - 1e-12) for p, q in zip(self._pending_pay, self._pending_bid))
        reward = -(sc.w_latency * (done - st.now_s) / self._ideal_s[t] + sc.w_payment * paid / st.budget_usd
                   + sc.w_devices * chain.size)
        if done > st.deadline_s:
            reward -= sc.miss_penalty
        return float(reward)

    def _reject(self, reason: int) -> float:
        """Reject the current task: release what it holds, count the reason."""
        st = self.state
        for d, k in zip(st.chain, st.taken):
            st.free_bytes[d] += k * st.layer_bytes
        self._outcome[st.task] = reason
        return -self.scenario.reject_penalty

    # --------------------------------------------------------- observations
    # views of the observation buffer, made on use: views kept as attributes would not survive a pickle
    @property
    def _dev_obs(self) -> np.ndarray:
        return self._obs_buf[: self.n_devices * N_DEVICE_FEATURES].reshape(self.n_devices, N_DEVICE_FEATURES)

    @property
    def _glob_obs(self) -> np.ndarray:
        return self._obs_buf[self.n_devices * N_DEVICE_FEATURES:]

    def _update_mask(self) -> None:
        st = self.state
        self._mask[:-1] = (st.bid_layers >= 1) & ~st.used
        self._mask[-1] = True

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
