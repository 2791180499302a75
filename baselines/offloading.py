"""Edge-cloud dispatch baselines PerLLM-style studies compare with (DESIGN 4.3).

Each reads `env.unwrapped.state` (the current request and what each action would give) and
returns an action: edge server m < M, or M for the cloud. Ties go to the lowest action.
"""

from __future__ import annotations

import numpy as np

from .base import BasePolicy, RandomMaskedPolicy, register_policy

__all__ = ["RandomOffload", "RoundRobin", "AlwaysCloud", "AlwaysEdge", "GreedyMinLatency", "GreedyMinEnergy"]

ENV_ID = "edgellm_gym/EdgeCloudOffload-v0"


@register_policy(ENV_ID, "random")
class RandomOffload(RandomMaskedPolicy):
    """A uniformly random valid server (the policy's own seeded generator)."""


@register_policy(ENV_ID, "round-robin")
class RoundRobin(BasePolicy):
    """Servers in turn (edge 0, 1, ..., cloud, edge 0, ...), skipping those masked for the request."""

    def reset(self, env, seed=None) -> None:
        super().reset(env, seed)
        self.next = 0

    def act(self, obs, info) -> int:
        mask = info["action_mask"]
        n = len(mask)
        order = (self.next + np.arange(n)) % n
        a = int(order[np.argmax(mask[order])])
        self.next = (a + 1) % n
        return a


@register_policy(ENV_ID, "always-cloud")
class AlwaysCloud(BasePolicy):
    """Every request to the cloud."""

    def act(self, obs, info) -> int:
        return self.env.state.n_edge


@register_policy(ENV_ID, "always-edge")
class AlwaysEdge(BasePolicy):
    """The least-loaded valid edge server (smallest backlog); the cloud only when no edge server is valid."""

    def act(self, obs, info) -> int:
        st = self.env.state
        m = st.n_edge
        if not st.valid[:m].any():
            return m
        return int(np.argmin(np.where(st.valid[:m], st.backlog_s[:m], np.inf)))


@register_policy(ENV_ID, "greedy-latency")
class GreedyMinLatency(BasePolicy):
    """The valid server of least latency for this request (upload + queueing + compute + download)."""

    def act(self, obs, info) -> int:
        st = self.env.state
        return int(np.argmin(np.where(st.valid, st.latency_s, np.inf)))


@register_policy(ENV_ID, "greedy-energy")
class GreedyMinEnergy(BasePolicy):
    """The valid server of least weighted transmission + inference energy for this request."""

    def act(self, obs, info) -> int:
        st = self.env.state
        return int(np.argmin(np.where(st.valid, st.energy_j, np.inf)))
