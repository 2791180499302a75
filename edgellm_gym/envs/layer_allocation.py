"""LayerAllocation-v0: split each arriving task's model layers over shared, bidding edge devices."""

from __future__ import annotations

from types import SimpleNamespace
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from .. import costs
from ..catalog import get_device, get_model
from ..metrics import jain_index, mean_or_zero
from ..scenario import register_preset, require, resolve_scenario
from ..workload import WorkloadSpec, sample_requests, workload_preset
from . import layer_allocation_kernels as K
from .base import MaskedEnv, squash

__all__ = ["LayerAllocationScenario", "LayerAllocationState", "LayerAllocationEnv", "OUTCOMES"]

ENV_KEY = "LayerAllocation"
N_DEVICE_FEATURES = K.N_DEVICE_FEATURES  # 9
N_GLOBAL_FEATURES = 6
PAYMENT_RULES = ("fcim", "pay_as_bid")
# task outcome codes: 0 = not decided yet
ALLOCATED, REJECTED_BY_POLICY, REJECTED_NO_CAPACITY = K.ALLOCATED, K.REJECTED_BY_POLICY, K.REJECTED_NO_CAPACITY
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
        # > 0: the budget is a multiple of the cheapest whole-model price, and prices are normalised by it
        require(all(p > 0 for p in self.price_usd_per_h), "price_usd_per_h", self.price_usd_per_h, "> 0")
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


def _field(array: str, index: int, kind, doc: str) -> property:
    """A state attribute read from the env's scalar array `array` at `index`, as a Python `kind`."""
    return property(lambda self: kind(getattr(self, array)[index]), doc=doc)


class LayerAllocationState:
    """What reference policies may read (`env.unwrapped.state`; read-only by convention).

    Device arrays have one entry per device. The bid arrays are the bids of the
    current task: layers l_i a device can host now (capped at the model's
    layers; 0 for a device without room or already used by this task), compute
    time T_i of those layers, price P_i = rate x T_i. `hop_s[i, j]`: the
    communication time of the task's hidden states from device i to j over the
    whole request; `client_s[i]`: returning its tokens from device i to the client.

    The env's step kernel updates its arrays in place; every attribute here is
    read from them on each read (Python numbers and lists, new arrays, or views
    of the per-task tables), so it always shows the current state. Writing into
    a returned list or array changes nothing (except the tables' views).
    """

    def __init__(self, env: "LayerAllocationEnv") -> None:
        # the env's arrays themselves (not views: pickling and deepcopy keep them shared with the env)
        self._sf, self._si, self._dev_f, self._dev_i, self._tf = env._sf, env._si, env._dev_f, env._dev_i, env._tf
        self.total_layers: int = int(env._si[K.I_L])
        self.capacity_bytes: np.ndarray = env._capacity.copy()

    now_s = _field("_sf", K.F_NOW, float, "Simulated time (s): the current task's arrival.")
    task = _field("_si", K.I_TASK, int, "Current task id; -1 once every task is decided.")
    remaining_layers = _field("_si", K.I_REMAINING, int, "Layers of the current task not placed yet.")
    layer_bytes = _field("_si", K.I_LAYER_BYTES, int, "Bytes per layer of the current task (weights + KV cache).")
    budget_usd = _field("_sf", K.F_BUDGET, float, "The current task's budget.")
    deadline_s = _field("_sf", K.F_DEADLINE, float, "The current task's deadline.")
    arrival_s = _field("_sf", K.F_ARRIVAL, float, "The current task's arrival.")
    row = _field("_si", K.I_ROW, int, "The current (or, at the end, the last) task's row of the per-task tables.")

    @property
    def chain(self) -> list[int]:
        """Devices chosen for the current task, in pipeline order."""
        return self._dev_i[K.DI_CHAIN, : self._si[K.I_N_CHAIN]].tolist()

    @property
    def taken(self) -> list[int]:
        """Layers each device of `chain` took."""
        return self._dev_i[K.DI_TAKEN, : self._si[K.I_N_CHAIN]].tolist()

    @property
    def free(self) -> list[int]:
        """Free bytes per device."""
        return self._dev_i[K.DI_FREE].tolist()

    @property
    def busy(self) -> list[float]:
        """Time each device is busy until."""
        return self._dev_f[K.DF_BUSY].tolist()

    def _bids(self, values: np.ndarray) -> list:
        return values.tolist() if self._si[K.I_TASK] >= 0 else [0] * len(values)

    @property
    def bids(self) -> list[int]:
        """Bid layers of the current task per device, before any was used."""
        return self._bids(self._dev_i[K.DI_BIDS])

    @property
    def bid_times(self) -> list[float]:
        return self._bids(self._dev_f[K.DF_BID_T])

    @property
    def bid_prices(self) -> list[float]:
        return self._bids(self._dev_f[K.DF_BID_P])

    @property
    def tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per task: per_layer_s (tasks, N), hop_s (tasks, N, N), client_s (tasks, N) (views)."""
        return _task_tables(self._tf, len(self.capacity_bytes))

    @property
    def free_bytes(self) -> np.ndarray:
        return self._dev_i[K.DI_FREE].copy()

    @property
    def busy_until_s(self) -> np.ndarray:
        return self._dev_f[K.DF_BUSY].copy()

    @property
    def used(self) -> np.ndarray:
        """Bool: device already used by the current task."""
        used = np.zeros(len(self.capacity_bytes), dtype=bool)
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
        n, row = len(self.capacity_bytes), self._si[K.I_ROW]
        return self._tf[row, K.TF_PER: K.TF_PER + n]

    @property
    def hop_s(self) -> np.ndarray:
        n, row, hop = len(self.capacity_bytes), self._si[K.I_ROW], K.TF_PER + 2 * len(self.capacity_bytes)
        return self._tf[row, hop: hop + n * n].reshape(n, n)

    @property
    def client_s(self) -> np.ndarray:
        n, row = len(self.capacity_bytes), self._si[K.I_ROW]
        return self._tf[row, K.TF_PER + n: K.TF_PER + 2 * n]

    def __repr__(self) -> str:
        names = ("now_s", "task", "total_layers", "remaining_layers", "chain", "taken", "capacity_bytes",
                 "layer_bytes", "budget_usd", "deadline_s", "arrival_s", "free", "busy", "bids", "bid_times",
                 "bid_prices", "row")
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in names)})"


def _task_tables(tf: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the per-task table `tf`: per_layer_s (tasks, n), hop_s (tasks, n, n), client_s (tasks, n)."""
    per, client, hop = K.TF_PER, K.TF_PER + n, K.TF_PER + 2 * n
    return tf[:, per:per + n], tf[:, hop:hop + n * n].reshape(len(tf), n, n), tf[:, client:client + n]


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
        self._mask = np.zeros(n + 1, dtype=bool)
        self._obs_buf = np.zeros(self.observation_space.shape, dtype=np.float32)
        self._capacity = np.array([capacity_bytes(d, sc.mem_usable_fraction) for d in self._devices], np.int64)
        self._price_per_s = np.asarray(sc.price_usd_per_h, dtype=float) / 3600.0
        self._offdiag = 1.0 - np.eye(n)
        self._act_bytes_bits = self._model.hidden * 2 * 8.0  # one token's hidden state, in bits
        # the distinct device types, their cost-model fields as columns (one call covers them all)
        kinds = list(dict.fromkeys(sc.devices))
        self._kind_of = np.array([kinds.index(d) for d in sc.devices])
        self._kind_cols = SimpleNamespace(**{f: np.array([[getattr(get_device(d), f)] for d in kinds])
                                             for f in ("peak_flops", "compute_efficiency", "mem_bw_Bps")})
        # the step kernels' scalars that are the scenario's (layout: layer_allocation_kernels)
        self._sf0 = np.zeros(K.N_SF)
        for i, name in ((K.F_W_LATENCY, "w_latency"), (K.F_W_PAYMENT, "w_payment"), (K.F_W_DEVICES, "w_devices"),
                        (K.F_REJECT_PENALTY, "reject_penalty"), (K.F_MISS_PENALTY, "miss_penalty"),
                        (K.F_ALPHA, "alpha"), (K.F_BETA, "beta"), (K.F_GAMMA, "gamma"), (K.F_DELTA, "delta")):
            self._sf0[i] = getattr(sc, name)
        self._si0 = np.zeros(K.N_SI, dtype=np.int64)
        self._si0[K.I_L] = self._model.n_layers
        self._si0[K.I_FCIM] = sc.payment_rule == "fcim"
        # FCIM step 3 with gamma > alpha + beta: a winner taking all its bid layers is paid its price
        self._si0[K.I_OWN_PRICE] = sc.gamma > sc.alpha + sc.beta
        self.state: LayerAllocationState | None = None

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sc, rng, m, n = self.scenario, self.np_random, self._model, self.n_devices
        req = sample_requests(sc.workload, rng, sc.n_tasks)
        k = len(req)
        # one row per task of the step kernels' tables (layout: layer_allocation_kernels)
        self._tf = tf = np.empty((k, K.tf_columns(n)))
        self._ti = ti = np.zeros((k, K.TI_HOLD + n), dtype=np.int64)
        per_layer_s, hop_s, client_s = _task_tables(tf, n)
        tf[:, K.TF_ARRIVAL] = arrival = req.arrival_s.astype(float)
        # per task x device: compute time of one layer (the cost model is linear in the layer count);
        # one cost-model call over the distinct device types (their fields as columns), then per device
        per_kind = costs.layers_time_s(m, self._kind_cols, 1, req.prompt_tokens, req.output_tokens, sc.bits)
        per_layer_s[:] = per_kind[self._kind_of].T
        ti[:, K.TI_LAYER_BYTES] = layer_bytes(m, sc.bits, req.prompt_tokens + req.output_tokens)
        tf[:, K.TF_IDEAL] = ideal = per_layer_s.min(axis=1) * m.n_layers
        tf[:, K.TF_DEADLINE] = deadline = arrival + rng.uniform(sc.slack_min, sc.slack_max, size=k) * ideal
        cheapest = (per_layer_s * self._price_per_s).min(axis=1) * m.n_layers
        tf[:, K.TF_BUDGET] = budget = rng.uniform(sc.budget_min, sc.budget_max, size=k) * cheapest
        # the authors draw every ordered pair's delay and each client delay from a Rayleigh law
        latency = rng.rayleigh(sc.delay_scale_s, size=(n, n)) * self._offdiag if sc.delay_scale_s > 0 \
            else np.zeros((n, n))
        client_latency = rng.rayleigh(sc.client_delay_scale_s, size=n) if sc.client_delay_scale_s > 0 \
            else np.zeros(n)
        # every generated token crosses each hop once, and so do the hidden states of the prompt and of
        # each decode step, (S + G - 1) x h x 2 bytes; the last device returns each token to the client
        g = req.output_tokens.astype(float)
        act_s = (req.prompt_tokens + g - 1) * self._act_bytes_bits / sc.link_bw_bps
        hop_s[:] = g[:, None, None] * latency + act_s[:, None, None] * self._offdiag
        client_s[:] = g[:, None] * client_latency
        tf[:, K.TF_COMPLETION: K.TF_WAIT + 1] = np.nan
        tf[:, K.TF_COMPUTE: K.TF_PAYMENT + 1] = 0.0

        # observation parts that are fixed per task, one row per task (the rest: the comment above _step)
        scale = ideal[:, None]
        whole_s = per_layer_s * m.n_layers
        price = whole_s * self._price_per_s
        base = np.zeros((k,) + self.observation_space.shape, dtype=np.float32)
        dev = base[:, : n * N_DEVICE_FEATURES].reshape(k, n, N_DEVICE_FEATURES)
        dev[:, :, 0] = whole_s / (whole_s + scale)
        dev[:, :, 1] = price / (price + budget[:, None])
        dev[:, :, 2] = client_s / (client_s + scale)
        glob = base[:, n * N_DEVICE_FEATURES:]
        glob[:, 0] = squash(deadline - arrival, ideal)
        glob[:, 1] = squash(req.prompt_tokens, 1000.0)
        glob[:, 2] = squash(g, 100.0)
        glob[:, 3] = 1.0
        self._obs_base = base
        self._hop_obs = (hop_s / (hop_s + scale[:, :, None])).astype(np.float32)

        # the current task and the devices (every device empty, free from the first arrival)
        self._sf, self._si = self._sf0.copy(), self._si0.copy()
        self._dev_f = np.zeros((K.N_DF, n))
        self._dev_f[K.DF_BUSY] = arrival[0]
        self._dev_f[K.DF_RATE] = self._price_per_s
        self._dev_i = np.zeros((K.N_DI, n), dtype=np.int64)
        self._dev_i[K.DI_FREE] = self._dev_i[K.DI_CAP] = self._capacity
        self._sf[K.F_NOW] = arrival[0]
        self.state = LayerAllocationState(self)
        self._last_now_s = self.state.now_s
        penalty = K.begin_task(0, self._sf, self._si, self._dev_f, self._dev_i, tf, ti, base, self._obs_buf,
                               self._mask)
        assert penalty == 0.0, "scenario validation guarantees the first task fits"
        return self._obs(), self._info()

    # ------------------------------------------------------------------ step
    # One kernel call does the step's numeric work in place (layer_allocation_kernels.step), as follows.
    #
    # A task begins (`begin_task`) at its arrival: the memory of tasks completed by then is freed; each
    # device bids the layers it can host, min(free bytes // bytes per layer, L); a task whose bids sum to
    # fewer than L layers is rejected ("no capacity", -reject_penalty) and the next one begins. A task
    # that fits opens: bid time T_i = l_i x per-layer time, price P_i = rate x T_i, FCIM-feasible when
    # P_i <= budget and T_i <= time to deadline (fixed while the task is placed: a used device leaves the
    # pool); the pool and the mask are the devices with room; the observation is the task's fixed
    # features (built at reset) with each device's free memory share, bid layers / L, wait until free
    # w / (w + ideal latency) and feasibility.
    #
    # A device action (`_place`) appends the device, which takes min(its bid, remaining) layers and holds
    # their bytes; its payment (paid at commit): its price for the layers taken under "pay_as_bid";
    # under "fcim", `fcim_chosen_reward` (the auction's round with the device as winner; with gamma >
    # alpha + beta a device taking all its bid layers is paid its price). While layers remain, the
    # device leaves the pool and the mask, and the observation gets its new free share, used = 1, the
    # hop times from it, and the remaining layers, devices used and payment so far.
    #
    # The last layer placed commits the task (`_commit`): it starts when all its devices are free and
    # ends after compute + communication (hops between consecutive devices, then to the client), each
    # summed in pipeline order; its devices are busy until then and hold their memory until then; the
    # reward is the docstring's. The reject action (N) releases what the task holds (-reject_penalty).
    def _step(self, a: int):
        reward, now, task, code = K.step(a, self._sf, self._si, self._dev_f, self._dev_i, self._tf, self._ti,
                                         self._obs_base, self._hop_obs, self._obs_buf, self._mask)
        if code:
            reward, now, task = self._step_rare(code, reward)
        info = {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": now, "task": task}
        if task < 0:  # terminated
            info["episode_metrics"] = self.episode_metrics()
            return self._obs_buf.copy(), reward, True, False, info
        return self._obs_buf.copy(), reward, False, False, info

    def _step_rare(self, code: int, reward: float) -> tuple[float, float, int]:
        """The kernel's codes: the episode had ended; or a pipeline of 8 devices or more is complete, whose
        sums numpy does (pairwise sums and a BLAS dot: not the kernel's in-order sums)."""
        if code == K.ENDED:
            raise RuntimeError("the episode has ended; call reset()")
        st = self.state
        c = np.array(st.chain)
        compute = float(st.per_layer_s[c] @ np.array(st.taken, dtype=np.int64))
        comm = float(st.hop_s[c[:-1], c[1:]].sum() + st.client_s[c[-1]])
        paid = float(np.sum(self._dev_f[K.DF_PAY, : len(c)]))
        reward = K.commit_with_sums(reward, compute, comm, paid, self._sf, self._si, self._dev_f, self._dev_i,
                                    self._tf, self._ti, self._obs_base, self._obs_buf, self._mask)
        return reward, st.now_s, st.task

    # ---------------------------------------------- per-task tables (views)
    _arrival = property(lambda self: self._tf[:, K.TF_ARRIVAL])
    _ideal_s = property(lambda self: self._tf[:, K.TF_IDEAL])
    _budget = property(lambda self: self._tf[:, K.TF_BUDGET])
    _deadline = property(lambda self: self._tf[:, K.TF_DEADLINE])
    _completion = property(lambda self: self._tf[:, K.TF_COMPLETION])
    _wait = property(lambda self: self._tf[:, K.TF_WAIT])
    _compute = property(lambda self: self._tf[:, K.TF_COMPUTE])
    _comm = property(lambda self: self._tf[:, K.TF_COMM])
    _payment = property(lambda self: self._tf[:, K.TF_PAYMENT])
    _outcome = property(lambda self: self._ti[:, K.TI_OUTCOME], doc="Per task: 0 pending, or an OUTCOMES code.")
    _n_used = property(lambda self: self._ti[:, K.TI_N_USED])

    @property
    def _layers_per_device(self) -> np.ndarray:
        """Layers each device has taken over the episode's allocated tasks."""
        return self._dev_f[K.DF_LPD].copy()

    @property
    def _paid_per_device(self) -> np.ndarray:
        """Payments (USD) each device has received over the episode."""
        return self._dev_f[K.DF_PPD].copy()

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
        held = self._ti[self._ti[:, K.TI_HELD] == 1, K.TI_HOLD:].sum(axis=0)  # by allocated tasks still running
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
        rounds, positive = int(self._si[K.I_ROUNDS]), int(self._si[K.I_POSITIVE])  # placements; paid >= bid
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
            "positive_utility_share": positive / rounds if rounds else 1.0,
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
