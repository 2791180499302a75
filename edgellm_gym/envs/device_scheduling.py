"""DeviceScheduling-v0: one edge device, a queue of LLM inference tasks with deadlines."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from gymnasium import spaces

from .. import costs
from ..catalog import get_device, get_model
from ..jit import njit
from ..metrics import mean_or_zero
from ..scenario import register_preset, require, resolve_scenario
from ..workload import WorkloadSpec, sample_requests, workload_preset
from .base import MaskedEnv

__all__ = ["SchedulingScenario", "SchedulingState", "DeviceSchedulingEnv"]

ENV_KEY = "DeviceScheduling"
N_SLOT_FEATURES = 8
N_GLOBAL_FEATURES = 3
RUNNING, REMAINING, LAXITY, PREEMPTED = 1, 2, 5, 7  # slot feature columns written by the step
SLOT_NOW = (0, 0, 0, 0, -1, -1, 1, 0)  # a slot's features before squashing = its base + now x SLOT_NOW
SLOT_SQUASHED = (False, False, True, True, True, True, True, False)  # times: x / (|x| + reward_time_scale_s)
# a flag (0 or 1) goes through the same x / (|x| + scale) with this scale: 0 / tiny = 0 and 1 / (1 + tiny) = 1
# exactly (tiny < 2^-53), so one formula covers the whole slot block
FLAG_SCALE = float(np.finfo(np.float64).tiny)


@dataclass(frozen=True)
class SchedulingScenario:
    """One device serving `n_tasks` requests; deadlines = arrival + slack x (compute + transmission).

    Result transmission (to the user, after compute; it does not hold the
    processor) takes a per-task access-network latency drawn uniformly from
    [trans_latency_min_s, trans_latency_max_s] plus the result bytes over
    `trans_bw_bps`. A preempted task pays `reload` when it resumes: "recompute"
    (its prefill again, vLLM-style recompute preemption) or "none".
    """

    device: str = "orin-nano-8gb"
    model: str = "tinyllama-1.1b"
    bits: int = 16
    # Azure conv 2023 token lengths; rate set for a load of about 0.87 on this device.
    workload: WorkloadSpec = field(default_factory=lambda: workload_preset("azure-conv-2023", rate_per_s=0.16))
    n_tasks: int = 200
    queue_slots: int = 16
    slack_min: float = 1.5
    slack_max: float = 4.0
    trans_latency_min_s: float = 0.005
    trans_latency_max_s: float = 0.3
    trans_bw_bps: float = 17e6
    result_bytes_per_token: float = 4.0
    reload: str = "recompute"
    drop_expired: bool = False
    miss_penalty: float = 1.0
    reward_time_scale_s: float = 5.0

    def __post_init__(self) -> None:
        get_device(self.device), get_model(self.model)
        require(self.bits in (2, 3, 4, 8, 16, 32), "bits", self.bits, "one of 2, 3, 4, 8, 16, 32")
        require(self.n_tasks >= 1, "n_tasks", self.n_tasks, ">= 1")
        require(2 <= self.queue_slots <= 256, "queue_slots", self.queue_slots, "in [2, 256]")
        require(self.slack_min >= 1.0, "slack_min", self.slack_min, ">= 1 (a deadline before the ideal finish)")
        require(self.slack_max >= self.slack_min, "slack_max", self.slack_max, ">= slack_min")
        require(self.trans_latency_min_s >= 0, "trans_latency_min_s", self.trans_latency_min_s, ">= 0")
        require(self.trans_latency_max_s >= self.trans_latency_min_s, "trans_latency_max_s",
                self.trans_latency_max_s, ">= trans_latency_min_s")
        require(self.trans_bw_bps > 0, "trans_bw_bps", self.trans_bw_bps, "> 0")
        require(self.result_bytes_per_token >= 0, "result_bytes_per_token", self.result_bytes_per_token, ">= 0")
        require(self.reload in ("recompute", "none"), "reload", self.reload, '"recompute" or "none"')
        require(self.miss_penalty >= 0, "miss_penalty", self.miss_penalty, ">= 0")
        require(self.reward_time_scale_s > 0, "reward_time_scale_s", self.reward_time_scale_s, "> 0")


register_preset(ENV_KEY, "default", SchedulingScenario())
register_preset(ENV_KEY, "strict", SchedulingScenario(slack_min=1.1, slack_max=2.0))
register_preset(ENV_KEY, "loose", SchedulingScenario(slack_min=3.0, slack_max=10.0))
register_preset(ENV_KEY, "bursty-code", SchedulingScenario(
    workload=workload_preset("azure-code-2023", rate_per_s=0.5)))
register_preset(ENV_KEY, "small", SchedulingScenario(n_tasks=30, queue_slots=8))


@dataclass
class SchedulingState:
    """What reference policies may read (`env.unwrapped.state`; read-only by convention).

    Per-task arrays are indexed by task id (arrival order). `queue` lists the
    task ids in the queue, in arrival order; action i picks `queue[i]`.
    `remaining_s` includes a pending reload for a preempted task. The arrays
    are columns of one table (remaining, trans, deadline, arrival).
    """

    now_s: float
    queue: list[int]
    running: int
    table: np.ndarray
    compute_s: np.ndarray
    reload_s: np.ndarray

    @property
    def remaining_s(self) -> np.ndarray:
        return self.table[:, 0]

    @property
    def trans_s(self) -> np.ndarray:
        return self.table[:, 1]

    @property
    def deadline_s(self) -> np.ndarray:
        return self.table[:, 2]

    @property
    def arrival_s(self) -> np.ndarray:
        return self.table[:, 3]


@njit
def _observe(sign, base, scale, now, obs64):
    """obs64[i] = x / (|x| + scale[i]) with x = sign[i] * now + base[i] over the slot block; obs64 as float32."""
    for i in range(sign.size):
        x = sign[i] * now + base[i]
        obs64[i] = x / (abs(x) + scale[i])
    out = np.empty(obs64.size, np.float32)
    for i in range(obs64.size):
        out[i] = obs64[i]
    return out


class DeviceSchedulingEnv(MaskedEnv):
    """
    ## Description
    One edge device (default: Jetson Orin Nano 8GB running TinyLlama-1.1B at fp16)
    serves LLM inference tasks that arrive over time (default: the Azure 2023
    conversation trace's token lengths, Poisson arrivals at a load of about 0.87).
    A task has an arrival time, a compute time (prefill + decode from the cost
    model), a result transmission time that does not hold the processor, and an
    absolute deadline. The env is event-driven: the agent decides at every
    arrival and completion which queued task runs. Picking another task than the
    running one preempts it; the preempted task pays a reload (its prefill again)
    when it resumes. This is the problem of ADSA (DESIGN 4.1).

    ## Action Space
    `Discrete(K)`, K = `queue_slots`: action i runs the i-th task of the queue in
    arrival order. Empty slots are masked (`action_masks()`, `info["action_mask"]`).

    ## Observation Space
    `Box(-1, 1, (K * 8 + 3,), float32)`. Per slot: present, running, remaining
    compute, transmission time, time to deadline, laxity (time to deadline -
    remaining - transmission), time waited, preempted-before; times are squashed
    by x / (|x| + reward_time_scale_s). Then: queue length / K, share of tasks
    arrived, device busy share so far.

    ## Rewards
    Per step: -(sum over waiting tasks of the time they waited during the step) /
    reward_time_scale_s, minus `miss_penalty` per task that finishes after its
    deadline or is dropped. The return is minus the total queueing time (in units
    of reward_time_scale_s) minus the penalties. A masked action under
    `invalid_action="penalize"` gives `-invalid_action_penalty` and changes nothing.

    ## Starting State
    `n_tasks` tasks drawn from the scenario's workload with `np_random`; time
    jumps to the first arrival, which is the first decision.

    ## Episode End
    Terminated when every task has finished or been dropped. Truncated after
    `max_invalid_streak` consecutive masked actions.

    ## Arguments
    `gymnasium.make("edgellm_gym/DeviceScheduling-v0", scenario="default",
    render_mode=None, invalid_action="penalize", invalid_action_penalty=1.0,
    max_invalid_streak=100)`. `scenario`: a preset name ("default", "strict",
    "loose", "bursty-code", "small"), a YAML path, a dict or a `SchedulingScenario`.
    A task arriving to a full queue (K tasks) is dropped; with `drop_expired`,
    waiting tasks past their deadline are dropped too.

    ## Info
    `action_mask`, `invalid_action`, `now_s`, and at the end `episode_metrics`:
    mean_queueing_delay_s (first start - arrival), mean_completion_time_s
    (result delivered - arrival), deadline_satisfaction (on time / arrived),
    preemptions, reload_time_s, tasks_finished, tasks_dropped, utilization.

    ## Version History
    * v0: initial version.
    """

    def __init__(self, scenario=None, render_mode: str | None = None, invalid_action: str = "penalize",
                 invalid_action_penalty: float = 1.0, max_invalid_streak: int = 100) -> None:
        super().__init__(render_mode, invalid_action, invalid_action_penalty, max_invalid_streak)
        self.scenario = sc = resolve_scenario(SchedulingScenario, ENV_KEY, scenario)
        self._model, self._device = get_model(sc.model), get_device(sc.device)
        k = sc.queue_slots
        self.action_space = spaces.Discrete(k)
        self.observation_space = spaces.Box(-1.0, 1.0, (k * N_SLOT_FEATURES + N_GLOBAL_FEATURES,), np.float32)
        # row m: the mask with m tasks queued (the first m slots valid); read-only, never written through
        self._mask_rows = np.tri(k + 1, k, -1, dtype=bool)
        # observation: slot block x / (|x| + scale), x = base + now x SLOT_NOW, over the m queued slots
        # and one empty slot after them (one compiled call, `_observe`); the globals are written as
        # they change. `_obs64` holds the float64 values the float32 observation rounds.
        # The base has one more slot than the queue, always empty: removing a task shifts it in, so
        # the slots from the queue length on are zeros in the base and in the observation.
        n_obs = k * N_SLOT_FEATURES + N_GLOBAL_FEATURES
        self._obs_base = np.zeros((k + 1) * N_SLOT_FEATURES)  # features at now = 0, slot by slot in queue order
        self._obs64 = np.zeros(n_obs)
        self._obs_scale = np.tile(np.where(SLOT_SQUASHED, sc.reward_time_scale_s, FLAG_SCALE), k + 1)
        # arrivals are admitted only when one is due, unless expired tasks are dropped, or an infinite
        # miss penalty makes "penalty x 0 dropped" a NaN that the reward must still show
        self._admit_always = sc.drop_expired or not np.isfinite(sc.miss_penalty)
        self._record_segments = render_mode == "rgb_array"  # the timeline only an rgb frame draws
        self._build_views()
        self.state: SchedulingState | None = None

    _VIEWS = ("_masks", "_obs_views", "_mask", "_remaining_col")

    def _build_views(self) -> None:
        """Views the step path reuses (per queue length m): built here, not per step, and rebuilt
        after unpickling or deep-copying (a copied view no longer shares its base's memory)."""
        k, f = self.scenario.queue_slots, N_SLOT_FEATURES
        self._mask_rows.flags.writeable = False
        self._masks = [self._mask_rows[m] for m in range(k + 1)]
        self._obs_views = []
        for m in range(k + 1):
            r = min(m + 1, k) * f  # the queued slots and the empty one after them (if any)
            sign = np.zeros(r)
            sign[: m * f] = np.tile(np.asarray(SLOT_NOW, dtype=float), m)
            self._obs_views.append((sign, self._obs_base[:r], self._obs_scale[:r]))
        st = getattr(self, "state", None)
        self._mask = self._masks[len(st.queue) if st is not None else 0]
        self._remaining_col = st.table[:, 0] if st is not None else None

    # ----------------------------------------------------------------- reset
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        sc, rng = self.scenario, self.np_random
        req = sample_requests(sc.workload, rng, sc.n_tasks)
        n = len(req)
        # compute time, and the prefill of all layers a preempted task recomputes when it resumes
        compute, prefill = costs.request_and_prefill_time_s(self._model, self._device, req.prompt_tokens,
                                                            req.output_tokens, sc.bits)
        latency = rng.uniform(sc.trans_latency_min_s, sc.trans_latency_max_s, size=n)
        trans = costs.transfer_time_s(req.output_tokens * sc.result_bytes_per_token, sc.trans_bw_bps, latency)
        slack = rng.uniform(sc.slack_min, sc.slack_max, size=n)
        reload = prefill if sc.reload == "recompute" else np.zeros(n)
        deadline = req.arrival_s + slack * (compute + trans)
        table = np.column_stack([compute, trans, deadline, req.arrival_s])
        self.state = SchedulingState(now_s=float(req.arrival_s[0]), queue=[], running=-1, table=table,
                                     compute_s=compute, reload_s=reload)
        # the step path reads Python floats (numpy scalars are slow); `remaining` mirrors table[:, 0]
        self._remaining, self._trans = compute.tolist(), trans.tolist()
        self._deadline, self._arrival = deadline.tolist(), req.arrival_s.tolist()
        self._arrival_inf = self._arrival + [np.inf]  # the next arrival time, inf after the last
        self._n, self._t0 = n, self._arrival[0]
        self._reload = reload.tolist()
        self._remaining_col = table[:, 0]
        # observation base (x at now = 0, before squashing) a task brings into its queue slot: present,
        # running, remaining, trans, deadline, laxity, -arrival, preempted-before
        self._task_rows = np.column_stack([np.ones(n), np.zeros(n), compute, trans, deadline,
                                           (-compute - trans) + deadline, -req.arrival_s, np.zeros(n)])
        self._obs_base[:] = 0.0
        self._obs64[:] = 0.0
        self._start_s = [np.nan] * n
        self._done_s = [np.nan] * n  # result delivered
        self._started = [False] * n
        self._next_arrival = 0
        self._finished = self._dropped = self._late = self._preemptions = 0
        self._busy_s = self._reload_time_s = 0.0
        self._segments: deque[tuple[int, float, float, int]] = deque(maxlen=60)  # for rgb rendering
        self._last_now_s = self.state.now_s
        self._admit_arrivals()
        self._mask = self._masks[len(self.state.queue)]
        return self._obs(), self._info()

    # ------------------------------------------------------------------ step
    def _step(self, a: int):
        # the hot path: Python floats and lists, numpy only for slices of the observation base
        st, sc, base = self.state, self.scenario, self._obs_base
        queue, now, f = st.queue, st.now_s, N_SLOT_FEATURES
        tid, run = queue[a], st.running
        if tid != run:
            if run >= 0:  # preempt: the running task pays its reload when it resumes
                self._preemptions += 1
                self._reload_time_s += self._reload[run]
                i = queue.index(run) * f
                self._remaining_col[run] = self._remaining[run] = r = self._remaining[run] + self._reload[run]
                base[i + REMAINING] = r
                base[i + LAXITY] = (-r - self._trans[run]) + self._deadline[run]  # at now = 0
                base[i + RUNNING], base[i + PREEMPTED] = 0.0, 1.0
            if not self._started[tid]:
                self._started[tid] = True
                self._start_s[tid] = now
            base[a * f + RUNNING], base[a * f + PREEMPTED] = 1.0, 0.0
            st.running = tid

        remaining = self._remaining[tid]
        t_done = now + remaining
        t_arrival = self._arrival_inf[self._next_arrival]
        t_next = t_done if t_done <= t_arrival else t_arrival
        dt = t_next - now
        m = len(queue)
        reward = -(m - 1) * dt / sc.reward_time_scale_s
        self._busy_s += dt
        if self._record_segments:
            self._segments.append((0, now, t_next, tid))
        st.now_s = t_next
        if t_done <= t_arrival:  # completion first on ties: it frees the processor
            self._remaining_col[tid] = self._remaining[tid] = 0.0
            # take the task out of the queue: the later slots, and the empty one after them, move up
            base[a * f: m * f] = base[(a + 1) * f: (m + 1) * f]
            del queue[a]
            m -= 1
            self._obs64[-3] = m / sc.queue_slots
            st.running = -1
            self._finished += 1
            self._done_s[tid] = done = t_next + self._trans[tid]
            if done > self._deadline[tid]:
                self._late += 1
                reward -= sc.miss_penalty
        else:
            remaining -= dt
            self._remaining_col[tid] = self._remaining[tid] = remaining
            base[a * f + REMAINING] = remaining
            base[a * f + LAXITY] = (-remaining - self._trans[tid]) + self._deadline[tid]  # at now = 0
        nxt = self._next_arrival
        if (t_arrival <= t_next and m < sc.queue_slots and not self._admit_always
                and self._arrival_inf[nxt + 1] > t_next):  # one arrival, with room: `_admit_arrivals` in short
            base[m * f: (m + 1) * f] = self._task_rows[nxt]
            queue.append(nxt)
            m += 1
            self._next_arrival = nxt = nxt + 1
            self._obs64[-3] = m / sc.queue_slots
            self._obs64[-2] = nxt / self._n
        elif t_arrival <= t_next or not m or self._admit_always:
            reward -= sc.miss_penalty * self._admit_arrivals()
            m = len(queue)
            nxt = self._next_arrival

        self._mask = mask = self._masks[m]
        info = {"action_mask": mask.copy(), "invalid_action": False, "now_s": st.now_s}
        if not m and nxt == self._n:  # terminated
            info["episode_metrics"] = self.episode_metrics()
            return self._obs(), reward, True, False, info
        return self._obs(), reward, False, False, info

    def _remove_slot(self, slot: int) -> None:
        """Take a task out of the queue: the later slots move up one, the empty slot after them too."""
        f, queue = N_SLOT_FEATURES, self.state.queue
        m = len(queue)
        self._obs_base[slot * f: m * f] = self._obs_base[(slot + 1) * f: (m + 1) * f]
        del queue[slot]
        self._obs64[-3] = (m - 1) / self.scenario.queue_slots

    def _admit_arrivals(self) -> int:
        """Queue the arrivals up to now (dropping those that find it full), drop expired
        tasks if asked, and jump over idle time. Returns the number dropped."""
        st, sc = self.state, self.scenario
        queue, arrival, k, n = st.queue, self._arrival_inf, sc.queue_slots, self._n
        nxt, now, dropped = self._next_arrival, st.now_s, 0
        while True:
            while arrival[nxt] <= now:  # the last entry is inf
                if len(queue) < k:
                    i = len(queue) * N_SLOT_FEATURES
                    self._obs_base[i: i + N_SLOT_FEATURES] = self._task_rows[nxt]
                    queue.append(nxt)
                else:
                    dropped += 1
                nxt += 1
            if sc.drop_expired:
                expired = [t for t in queue if t != st.running and self._deadline[t] <= now]
                if expired:
                    for t in expired:
                        self._remove_slot(queue.index(t))
                    # the observation covers one slot after the queue: clear those that were queued before
                    self._obs64[len(queue) * N_SLOT_FEATURES: k * N_SLOT_FEATURES] = 0.0
                    dropped += len(expired)
            if queue or nxt == n:
                break
            st.now_s = now = arrival[nxt]  # idle until the next arrival
        self._next_arrival = nxt
        self._dropped += dropped
        self._obs64[-3] = len(queue) / k
        self._obs64[-2] = nxt / n
        return dropped

    # --------------------------------------------------------- observations
    def _obs(self) -> np.ndarray:
        """The busy share, then the slot block and the float32 copy in one compiled call (a new array)."""
        now = self.state.now_s
        elapsed = now - self._t0
        if elapsed > 0:
            busy = self._busy_s / elapsed
            self._obs64[-1] = 1.0 if 1.0 < busy else busy  # min(busy, 1.0)
        else:
            self._obs64[-1] = 0.0
        sign, base, scale = self._obs_views[len(self.state.queue)]
        return _observe(sign, base, scale, now, self._obs64)

    def _info(self) -> dict:
        return {"action_mask": self._mask.copy(), "invalid_action": False, "now_s": self.state.now_s}

    # -------------------------------------------------------------- metrics
    def counts(self) -> dict[str, int]:
        """Task accounting: arrived = finished + dropped + waiting + running."""
        st = self.state
        running = int(st.running >= 0)
        return {"arrived": self._next_arrival, "finished": self._finished, "dropped": self._dropped,
                "waiting": len(st.queue) - running, "running": running}

    def invariant_violations(self) -> list[str]:
        st, c, bad = self.state, self.counts(), []
        if st.now_s < self._last_now_s:
            bad.append(f"time ran backwards: {st.now_s} < {self._last_now_s}")
        self._last_now_s = st.now_s
        if c["arrived"] != c["finished"] + c["dropped"] + c["waiting"] + c["running"]:
            bad.append(f"tasks lost: {c}")
        if len(st.queue) > self.scenario.queue_slots:
            bad.append(f"queue over capacity: {len(st.queue)} > {self.scenario.queue_slots}")
        if np.any(st.remaining_s < 0):
            bad.append("negative remaining compute")
        if self._busy_s < 0 or self._busy_s > st.now_s - st.arrival_s[0] + 1e-9:
            bad.append(f"busy time {self._busy_s} outside [0, elapsed]")
        return bad

    def episode_metrics(self) -> dict[str, float]:
        st = self.state
        done_s, start_s = np.array(self._done_s), np.array(self._start_s)
        done = ~np.isnan(done_s)
        arrived = max(self._next_arrival, 1)
        on_time = int(np.sum(done_s[done] <= st.deadline_s[done]))
        started = ~np.isnan(start_s)
        span = st.now_s - st.arrival_s[0]
        return {
            "mean_queueing_delay_s": mean_or_zero(start_s[started] - st.arrival_s[started]),
            "mean_completion_time_s": mean_or_zero(done_s[done] - st.arrival_s[done]),
            "deadline_satisfaction": on_time / arrived,
            "preemptions": float(self._preemptions),
            "reload_time_s": self._reload_time_s,
            "tasks_finished": float(self._finished),
            "tasks_dropped": float(self._dropped),
            "utilization": float(self._busy_s / span) if span > 0 else 0.0,
        }

    # ------------------------------------------------------------- rendering
    def _render_ansi(self) -> str:
        st = self.state
        lines = [f"t={st.now_s:9.2f}s running={st.running} finished={self._finished} "
                 f"dropped={self._dropped} preemptions={self._preemptions}"]
        for i, t in enumerate(st.queue):
            lines.append(f"  slot {i:2d} task {t:4d} {'*' if t == st.running else ' '} "
                         f"remaining={st.remaining_s[t]:7.2f}s trans={st.trans_s[t]:5.3f}s "
                         f"deadline_in={st.deadline_s[t] - st.now_s:8.2f}s")
        return "\n".join(lines)

    def _render_rgb(self) -> np.ndarray:
        from ..render import timeline_rgb

        return timeline_rgb([self.scenario.device], list(self._segments), self.state.now_s,
                            title=f"{self.scenario.model} on {self.scenario.device}: task per segment")
