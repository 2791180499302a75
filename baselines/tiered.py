"""Baseline heuristics of the GUS paper's comparison (DESIGN 4.5), one user at a time.

Each reads the current user and node loads from `env.unwrapped.state` and
returns an action: `node * M + variant`, or the env's reject action when none
of its choices is valid (not deployed, or the node's capacity is used up).
Unlike GUS, none of them plans the window or checks the deadline. "Least
loaded" means least compute already assigned in the window; ties go to the
lower node index.
"""

from __future__ import annotations

import numpy as np

from .base import BasePolicy, RandomMaskedPolicy, register_policy

__all__ = ["RandomTiered", "AlwaysCloud", "NearestTier", "HighestAccuracy", "FastestVariant", "SmallestEarning",
           "smallest_adequate"]

ENV_ID = "edgellm_gym/TieredService-v0"


def smallest_adequate(accuracy: np.ndarray, deployed_row: np.ndarray, min_accuracy: float) -> int:
    """The least accurate deployed variant that meets `min_accuracy`, else the most accurate deployed; -1 if none."""
    idx = np.flatnonzero(deployed_row)
    if idx.size == 0:
        return -1
    ok = idx[accuracy[idx] >= min_accuracy]
    return int(ok[np.argmin(accuracy[ok])]) if ok.size else int(idx[np.argmax(accuracy[idx])])


class _OneUser(BasePolicy):
    """Shared helper: first valid action among candidate pairs in preference order, else reject."""

    def first_valid(self, pairs, mask) -> int:
        for a in pairs:
            if a >= 0 and mask[a]:
                return int(a)
        return self.env.reject_action

    def nodes_by_load(self, nodes) -> list[int]:
        st = self.env.state
        return sorted(nodes, key=lambda n: (st.used_s[n], n))

    def adequate_pairs(self, nodes) -> list[int]:
        st, m = self.env.state, self.env.n_variants
        out = []
        for n in self.nodes_by_load(nodes):
            v = smallest_adequate(st.accuracy, st.deployed[n], st.min_accuracy[st.user])
            if v >= 0:
                out.append(n * m + v)
        return out


@register_policy(ENV_ID, "random")
class RandomTiered(RandomMaskedPolicy):
    """A uniformly random valid action, rejection included (the policy's own seeded generator)."""


@register_policy(ENV_ID, "always-cloud")
class AlwaysCloud(_OneUser):
    """Least loaded cloud node, smallest variant meeting the accuracy (else the most accurate)."""

    def act(self, obs, info) -> int:
        st = self.env.state
        return self.first_valid(self.adequate_pairs(np.flatnonzero(st.node_tier == 2)), info["action_mask"])


@register_policy(ENV_ID, "nearest-tier")
class NearestTier(_OneUser):
    """End devices, then edge, then cloud: the first node (least loaded in its tier) hosting a
    variant that meets the accuracy, with the smallest such variant."""

    def act(self, obs, info) -> int:
        st = self.env.state
        pairs = []
        for tier in range(3):
            nodes = np.flatnonzero(st.node_tier == tier)
            pairs += [a for a in self.adequate_pairs(nodes)
                      if st.accuracy[a % self.env.n_variants] >= st.min_accuracy[st.user]]
        return self.first_valid(pairs, info["action_mask"])


@register_policy(ENV_ID, "highest-accuracy")
class HighestAccuracy(_OneUser):
    """The most accurate variant with a valid node (least loaded), whatever the user asks."""

    def act(self, obs, info) -> int:
        st, m = self.env.state, self.env.n_variants
        nodes = self.nodes_by_load(range(self.env.n_nodes))
        pairs = [n * m + v for v in np.argsort(-st.accuracy, kind="stable") for n in nodes]
        return self.first_valid(pairs, info["action_mask"])


@register_policy(ENV_ID, "fastest-variant")
class FastestVariant(_OneUser):
    """The valid pair of least estimated response time (network + load queued on the node +
    compute), whatever the user asks."""

    def act(self, obs, info) -> int:
        st = self.env.state
        u = st.user
        est = (st.net_s[u][:, None] + st.used_s[:, None] + st.compute_s[u]).ravel()
        est = np.where(info["action_mask"][:-1], est, np.inf)
        best = int(np.argmin(est))
        return best if np.isfinite(est[best]) else self.env.reject_action


@register_policy(ENV_ID, "smallest-earning")
class SmallestEarning(BasePolicy):
    """Ours, not from the GUS paper: among the pairs that earn +1 now (`env.earning_pairs()`, the
    same feasible set GUS uses), the least accurate variant, then the least compute time, ties to
    the lower action index; none: reject. GUS instead takes the least-compute feasible pair, which
    is often a larger variant on a cloud GPU; keeping that capacity for the demanding users that
    follow is what the shipped agent learned (docs/agents.md), and this rule writes it down."""

    def act(self, obs, info) -> int:
        env, st = self.env, self.env.state
        earns = env.earning_pairs()
        if not earns.any():
            return env.reject_action
        nodes, variants = np.nonzero(earns)
        key = np.lexsort((nodes * env.n_variants + variants, st.compute_s[st.user, nodes, variants],
                          st.accuracy[variants]))
        return int(nodes[key[0]] * env.n_variants + variants[key[0]])
