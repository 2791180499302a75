"""Request workloads: arrival processes, token lengths, and trace replay.

A workload draws a whole episode's requests at once (vectorised, from the env's
`np_random`), so the step path only reads arrays. Arrival processes:

- ``poisson``: exponential inter-arrivals at `rate_per_s`;
- ``hyperexp``: a two-phase hyper-exponential renewal process with balanced
  means, fitted exactly to `rate_per_s` and the inter-arrival coefficient of
  variation `cv` (> 1): the bursty Azure code trace has CV 13.2;
- ``mmpp``: a two-state Markov-modulated Poisson process (rates `mmpp_rates_per_s`,
  mean sojourn `mmpp_sojourn_s` in each state), for bursts with a set duration;
- ``trace``: replay of a CSV with columns TIMESTAMP, ContextTokens,
  GeneratedTokens, from a random offset, inter-arrivals scaled by `trace_time_scale`.

Token lengths (synthetic processes) are log-normal, fitted to a median and a
99th percentile, rounded and clipped to [1, max].
"""

from __future__ import annotations

import csv
import functools
import os
from dataclasses import dataclass

import numpy as np

__all__ = ["WorkloadSpec", "Requests", "sample_requests", "load_trace", "WORKLOAD_PRESETS", "workload_preset"]

_Z99 = 2.3263478740408408  # standard normal 99th percentile
ARRIVALS = ("poisson", "hyperexp", "mmpp", "trace")


@dataclass(frozen=True)
class WorkloadSpec:
    """How requests arrive and how long they are (see the module docstring)."""

    arrival: str = "poisson"
    rate_per_s: float = 1.0
    cv: float = 1.0
    mmpp_rates_per_s: tuple[float, float] = (2.0, 0.5)
    mmpp_sojourn_s: tuple[float, float] = (10.0, 30.0)
    trace_path: str = ""
    trace_time_scale: float = 1.0
    prompt_median: float = 1020.0
    prompt_p99: float = 4142.0
    prompt_max: int = 8192
    output_median: float = 129.0
    output_p99: float = 601.0
    output_max: int = 2048

    def __post_init__(self) -> None:
        if self.arrival not in ARRIVALS:
            raise ValueError(f"workload.arrival must be one of {ARRIVALS}, got {self.arrival!r}")
        for name in ("rate_per_s", "trace_time_scale", "prompt_median", "output_median"):
            if not getattr(self, name) > 0:
                raise ValueError(f"workload.{name} must be > 0, got {getattr(self, name)}")
        if self.arrival == "hyperexp" and not self.cv > 1:
            raise ValueError(f"workload.cv must be > 1 for hyperexp arrivals, got {self.cv}")
        if self.prompt_p99 < self.prompt_median:
            raise ValueError(f"workload.prompt_p99 must be >= prompt_median, got {self.prompt_p99}")
        if self.output_p99 < self.output_median:
            raise ValueError(f"workload.output_p99 must be >= output_median, got {self.output_p99}")
        if self.prompt_max < 1 or self.output_max < 1:
            raise ValueError("workload.prompt_max and workload.output_max must be >= 1")
        if len(self.mmpp_rates_per_s) != 2 or min(self.mmpp_rates_per_s) < 0 or max(self.mmpp_rates_per_s) <= 0:
            raise ValueError(f"workload.mmpp_rates_per_s must be two rates >= 0, got {self.mmpp_rates_per_s}")
        if len(self.mmpp_sojourn_s) != 2 or min(self.mmpp_sojourn_s) <= 0:
            raise ValueError(f"workload.mmpp_sojourn_s must be two times > 0, got {self.mmpp_sojourn_s}")
        if self.arrival == "trace":
            if not self.trace_path:
                raise ValueError("workload.trace_path is required for trace arrivals")
            if not os.path.isfile(self.trace_path):
                raise ValueError(f"workload.trace_path: no such file {self.trace_path!r}")


@dataclass(frozen=True)
class Requests:
    """An episode's requests, sorted by arrival (seconds from the episode start)."""

    arrival_s: np.ndarray
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.arrival_s)


def _lognormal_tokens(rng: np.random.Generator, median: float, p99: float, cap: int, n: int) -> np.ndarray:
    sigma = np.log(p99 / median) / _Z99
    x = rng.lognormal(np.log(median), sigma, size=n)
    return np.clip(np.rint(x), 1, cap).astype(np.int64)


def _interarrivals(spec: WorkloadSpec, rng: np.random.Generator, n: int) -> np.ndarray:
    if spec.arrival == "poisson":
        return rng.exponential(1.0 / spec.rate_per_s, size=n)
    if spec.arrival == "hyperexp":
        # balanced-means H2: p/l1 = (1-p)/l2 = 1/(2 rate); matches mean and CV exactly
        c2 = spec.cv**2
        p = 0.5 * (1.0 + np.sqrt((c2 - 1.0) / (c2 + 1.0)))
        rates = np.array([2 * p * spec.rate_per_s, 2 * (1 - p) * spec.rate_per_s])
        phase = (rng.random(n) >= p).astype(np.int64)
        return rng.exponential(1.0, size=n) / rates[phase]
    # mmpp: simulate state changes and arrivals until n arrivals
    rates, sojourn = spec.mmpp_rates_per_s, spec.mmpp_sojourn_s
    times, t, state = [], 0.0, 0
    while len(times) < n:
        stay = rng.exponential(sojourn[state])
        if rates[state] > 0:
            k = rng.poisson(rates[state] * stay)
            times.extend(np.sort(t + rng.random(k) * stay))
        t += stay
        state = 1 - state
    return np.diff(np.asarray(times[:n]), prepend=0.0)


@functools.lru_cache(maxsize=8)
def load_trace(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a TIMESTAMP, ContextTokens, GeneratedTokens CSV: (seconds from first row, prompt, output)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"TIMESTAMP", "ContextTokens", "GeneratedTokens"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"trace {path!r}: missing columns {sorted(missing)}")
        rows = [(r["TIMESTAMP"], int(r["ContextTokens"]), int(r["GeneratedTokens"])) for r in reader]
    if not rows:
        raise ValueError(f"trace {path!r} has no rows")
    stamps = np.array([np.datetime64(r[0].strip().replace(" ", "T")[:26]) for r in rows], dtype="datetime64[us]")
    order = np.argsort(stamps, kind="stable")
    seconds = (stamps[order] - stamps[order][0]).astype(np.float64) / 1e6
    prompt = np.array([r[1] for r in rows], dtype=np.int64)[order]
    output = np.array([r[2] for r in rows], dtype=np.int64)[order]
    return seconds, prompt, output


def sample_requests(spec: WorkloadSpec, rng: np.random.Generator, n: int) -> Requests:
    """Draw `n` requests from `spec` with `rng` (the env's np_random)."""
    if n < 1:
        raise ValueError(f"number of requests must be >= 1, got {n}")
    if spec.arrival == "trace":
        seconds, prompt, output = load_trace(spec.trace_path)
        start = int(rng.integers(len(seconds)))
        idx = (start + np.arange(n)) % len(seconds)
        gaps = np.diff(seconds[idx], prepend=seconds[idx[0]])
        gaps[gaps < 0] = 0.0  # wrap-around to the trace start
        arrival = np.cumsum(gaps) * spec.trace_time_scale
        return Requests(
            arrival,
            np.clip(prompt[idx], 1, spec.prompt_max),
            np.clip(output[idx], 1, spec.output_max),
        )
    arrival = np.cumsum(_interarrivals(spec, rng, n))
    prompt = _lognormal_tokens(rng, spec.prompt_median, spec.prompt_p99, spec.prompt_max, n)
    output = _lognormal_tokens(rng, spec.output_median, spec.output_p99, spec.output_max, n)
    return Requests(arrival, prompt, output)


# Fitted to ../shared/data/azure-llm-inference-2023/README.md (Azure LLM inference
# trace 2023, Patel et al., Splitwise, ISCA 2024): rate, inter-arrival CV, and the
# median / p99 of prompt and output tokens.
WORKLOAD_PRESETS: dict[str, WorkloadSpec] = {
    "azure-conv-2023": WorkloadSpec("poisson", 5.53, 1.0, prompt_median=1020, prompt_p99=4142,
                                    output_median=129, output_p99=601),
    "azure-code-2023": WorkloadSpec("hyperexp", 2.57, 13.2, prompt_median=1469, prompt_p99=7436,
                                    output_median=13, output_p99=251),
}


def workload_preset(name: str, **overrides) -> WorkloadSpec:
    """A named preset, with fields replaced by `overrides` (e.g. `rate_per_s`)."""
    if name not in WORKLOAD_PRESETS:
        raise ValueError(f"unknown workload preset {name!r}; known: {sorted(WORKLOAD_PRESETS)}")
    from dataclasses import replace

    return replace(WORKLOAD_PRESETS[name], **overrides)
