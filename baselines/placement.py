"""Heuristic baselines for PlacementQuantization-v0 (DESIGN 4.4).

The fixed-width heuristics pick among `env.safe_action_mask()` (the valid actions after which the
later layers can all still take one common width), so none ever dead-ends. When a heuristic's
preferred width has no safe action, it takes the safe width closest to it, higher first.
`lookahead` takes the valid action with the least lookahead value instead (one step of lookahead
over a greedy completion; see `LookaheadGreedy`).
"""

from __future__ import annotations

import numpy as np

from .base import BasePolicy, register_policy

__all__ = ["greedy_fixed_width", "FP16Greedy", "UniformInt8", "UniformInt4", "MemoryFirstFit", "RandomFeasible",
           "LookaheadGreedy"]

ENV_ID = "edgellm_gym/PlacementQuantization-v0"


def _width_order(bits: tuple[int, ...], preferred: int) -> list[int]:
    """Width indices by closeness to `preferred` bits, the higher width first on ties."""
    return sorted(range(len(bits)), key=lambda i: (abs(np.log2(bits[i]) - np.log2(preferred)), -bits[i]))


def _safe(env) -> np.ndarray:
    safe = env.safe_action_mask()
    return safe if safe.any() else env.action_masks()


def greedy_fixed_width(env, preferred_bits: int) -> int:
    """The safe action at the width closest to `preferred_bits` that adds the least per-token time
    (compute + hop in, + hop out for the last layer)."""
    st = env.state
    p, l = st.problem, st.layer
    B = p.n_bits
    ok = _safe(env).reshape(p.n_servers, B)
    hop = p.client_in_s if st.prev_server < 0 else p.transfer_s[st.prev_server]
    out = p.client_out_s if l == p.n_layers - 1 else 0.0
    for b in _width_order(p.bits, preferred_bits):
        if ok[:, b].any():
            inc = np.where(ok[:, b], p.compute_s[:, b] + hop + out, np.inf)
            return int(np.argmin(inc)) * B + b
    raise RuntimeError("no valid action")  # unreachable: a non-terminal state has one


@register_policy(ENV_ID, "fp16_greedy")
class FP16Greedy(BasePolicy):
    """Every layer at fp16 (or the highest safe width), on the server adding the least time."""

    def act(self, obs, info) -> int:
        return greedy_fixed_width(self.env, 16)


@register_policy(ENV_ID, "uniform_int8")
class UniformInt8(BasePolicy):
    """Every layer at 8 bits (or the closest safe width), on the server adding the least time."""

    def act(self, obs, info) -> int:
        return greedy_fixed_width(self.env, 8)


@register_policy(ENV_ID, "uniform_int4")
class UniformInt4(BasePolicy):
    """Every layer at 4 bits (or the closest safe width), on the server adding the least time."""

    def act(self, obs, info) -> int:
        return greedy_fixed_width(self.env, 4)


@register_policy(ENV_ID, "memory_first_fit")
class MemoryFirstFit(BasePolicy):
    """Servers by free memory at the start, largest first; each layer on the first that takes it
    at the highest safe width (speed ignored)."""

    def reset(self, env, seed=None) -> None:
        super().reset(env, seed)
        self._order = None

    def act(self, obs, info) -> int:
        st = self.env.state
        p = st.problem
        if self._order is None or st.layer == 0:
            self._order = np.argsort(-p.capacity_bytes, kind="stable")
        ok = _safe(self.env).reshape(p.n_servers, p.n_bits)
        for s in self._order:
            if ok[s].any():
                return int(s) * p.n_bits + int(np.flatnonzero(ok[s])[0])  # index 0 = highest width
        raise RuntimeError("no valid action")


@register_policy(ENV_ID, "random")
class RandomFeasible(BasePolicy):
    """A uniformly random safe action (its own seeded generator): a random feasible plan."""

    def act(self, obs, info) -> int:
        return int(self.rng.choice(np.flatnonzero(_safe(self.env))))


@register_policy(ENV_ID, "lookahead")
class LookaheadGreedy(BasePolicy):
    """The valid action with the least lookahead value (`env.lookahead_q_values()`: the time it adds
    plus a greedy 4-bit completion's, with the last layer's memory held back on a cheap-client
    server): one step of lookahead over a greedy completion, the per-action estimate the agent's
    observation shows. It reads the mask, not the safe mask, so it can dead-end (none did on seeds
    1000-1019)."""

    def act(self, obs, info) -> int:
        return int(np.argmin(self.env.lookahead_q_values()))
