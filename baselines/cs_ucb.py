"""CS-UCB: PerLLM's constraint-satisfying upper-confidence-bound dispatcher (DESIGN 4.3).

From PerLLM's abstract and secondary sources (the paper body was not available to us):
- an online bandit whose arms are (service type, server);
- arms that violate a hard constraint are removed before each decision;
- UCB index = mean reward + c sqrt(ln t / n_arm), unplayed arms first;
- reward = - normalised energy + lambda x constraint slack;
- regret O(sqrt(M N log L)) (not checked here; a test shows sublinear regret).

Our choices where the abstract is silent:
- hard constraints of an arm for the current request: memory (the env's mask: the server
  holds the service's model and has room for its KV cache), and the processing-time
  requirement at the current bandwidth with an empty queue (upload + compute + download
  <= requirement; this includes the bandwidth constraint: the transfer alone must fit).
  When no arm is feasible we send the request where its idle latency is least (a valid action).
- t = decisions taken so far in the episode (all service types), counted from 1;
  ties in the index go to the lowest arm (edge servers before the cloud); unplayed feasible
  arms are played lowest index first.
- normalised energy = the request's weighted transmission + inference energy on the played
  arm / the largest such energy over the request's valid arms (so in [0, 1]); idle energy is
  not attributable to one request and is left out of the bandit reward.
- constraint slack = (requirement - latency) / requirement, clipped to [-1, 1].
- c = 1.0, lambda = 1.0; statistics start afresh at every `reset` (one episode = one run).
"""

from __future__ import annotations

import numpy as np

from .base import BasePolicy, register_policy

__all__ = ["ucb_index", "ucb_select", "constraint_slack", "cs_ucb_reward", "CSUCB"]

ENV_ID = "edgellm_gym/EdgeCloudOffload-v0"


def ucb_index(means: np.ndarray, counts: np.ndarray, t: int, c: float) -> np.ndarray:
    """mean + c sqrt(ln t / n) per arm; +inf for unplayed arms (n = 0)."""
    counts = np.asarray(counts, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        bonus = c * np.sqrt(np.log(max(t, 1)) / counts)
    return np.where(counts > 0, np.asarray(means, dtype=float) + bonus, np.inf)


def ucb_select(means, counts, t: int, feasible, c: float = 1.0) -> int:
    """The arm to play among `feasible` (bool): the lowest unplayed feasible arm if any, else the
    feasible arm of largest UCB index (lowest index on ties); -1 when no arm is feasible."""
    feasible = np.asarray(feasible, dtype=bool)
    if not feasible.any():
        return -1
    index = np.where(feasible, ucb_index(means, counts, t, c), -np.inf)
    return int(np.argmax(index))  # argmax returns the first maximum: lowest unplayed / tied arm


def constraint_slack(latency_s: float, requirement_s: float) -> float:
    """(requirement - latency) / requirement, clipped to [-1, 1]: > 0 when the requirement is met."""
    return float(np.clip((requirement_s - latency_s) / requirement_s, -1.0, 1.0))


def cs_ucb_reward(energy_norm: float, slack: float, lam: float = 1.0) -> float:
    """Bandit reward: - normalised energy + lambda x constraint slack."""
    return -energy_norm + lam * slack


@register_policy(ENV_ID, "cs-ucb", kind="reference")
class CSUCB(BasePolicy):
    """CS-UCB over (service type, server) arms on `env.unwrapped.state`; learns in `update`."""

    def __init__(self, c: float = 1.0, lam: float = 1.0) -> None:
        self.c, self.lam = c, lam

    def reset(self, env, seed=None) -> None:
        super().reset(env, seed)
        sc = self.env.scenario
        shape = (len(sc.services), sc.n_edge + 1)
        self.means, self.counts, self.t = np.zeros(shape), np.zeros(shape, dtype=np.int64), 0
        self._energy_max = 1.0

    def feasible(self) -> np.ndarray:
        """Arms of the current request that break no hard constraint (memory, requirement when idle)."""
        st = self.env.state
        return st.valid & (st.upload_s + st.compute_s + st.download_s <= st.requirement_s)

    def act(self, obs, info) -> int:
        st = self.env.state
        self._energy_max = float(st.energy_j[st.valid].max()) or 1.0
        k = st.service
        arm = ucb_select(self.means[k], self.counts[k], self.t + 1, self.feasible(), self.c)
        if arm < 0:
            idle = np.where(st.valid, st.upload_s + st.compute_s + st.download_s, np.inf)
            arm = int(np.argmin(idle))
        return arm

    def update(self, obs, action, reward, next_obs, info) -> None:
        d = info.get("dispatched")
        if d is None or info.get("invalid_action"):
            return
        r = cs_ucb_reward(d["energy_j"] / self._energy_max, constraint_slack(d["latency_s"], d["requirement_s"]),
                          self.lam)
        k, a = d["service"], d["action"]
        self.t += 1
        self.counts[k, a] += 1
        self.means[k, a] += (r - self.means[k, a]) / self.counts[k, a]
