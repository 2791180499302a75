"""Classic single-device schedulers the ADSA paper compares with (DESIGN 4.1).

Each reads the queue from `env.unwrapped.state` and returns a queue slot.
Ties go to the earliest slot (earliest arrival), so a tie never preempts a
task that arrived earlier.
"""

from __future__ import annotations

import numpy as np

from .base import BasePolicy, RandomMaskedPolicy, register_policy

__all__ = ["FCFS", "SRTF", "EDF", "LLF", "RandomScheduler"]

ENV_ID = "edgellm_gym/DeviceScheduling-v0"


@register_policy(ENV_ID, "fcfs")
class FCFS(BasePolicy):
    """First come, first served, non-preemptive: keep the running task, else the oldest."""

    def act(self, obs, info) -> int:
        st = self.env.state
        return st.queue.index(st.running) if st.running >= 0 else 0


@register_policy(ENV_ID, "srtf")
class SRTF(BasePolicy):
    """Shortest remaining time first (preemptive)."""

    def act(self, obs, info) -> int:
        st = self.env.state
        return int(np.argmin(st.remaining_s[np.asarray(st.queue)]))


@register_policy(ENV_ID, "edf")
class EDF(BasePolicy):
    """Earliest deadline first (preemptive)."""

    def act(self, obs, info) -> int:
        st = self.env.state
        return int(np.argmin(st.deadline_s[np.asarray(st.queue)]))


@register_policy(ENV_ID, "llf")
class LLF(BasePolicy):
    """Least laxity first: deadline - now - remaining compute - transmission (preemptive)."""

    def act(self, obs, info) -> int:
        st = self.env.state
        q = np.asarray(st.queue)
        return int(np.argmin(st.deadline_s[q] - st.now_s - st.remaining_s[q] - st.trans_s[q]))


@register_policy(ENV_ID, "random")
class RandomScheduler(RandomMaskedPolicy):
    """A uniformly random queued task (the policy's own seeded generator)."""
