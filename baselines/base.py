"""The Policy protocol and the registry of policies per environment id.

A policy is reset with the env it will act in (it may read the env's
documented, read-only `env.unwrapped.state`), then maps `(obs, info)` to an
action. Online learners (CS-UCB) also get `update(...)` after every step.
Policies register themselves with `@register_policy(env_id, name, kind)`;
`policies_for(env_id)` imports the modules listed in `POLICY_MODULES` first.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

__all__ = ["Policy", "BasePolicy", "RandomMaskedPolicy", "register_policy", "policies_for", "make_policy", "POLICY_MODULES", "KINDS"]

KINDS = ("reference", "baseline", "optimal", "learned")

# env id -> modules whose import registers its policies
POLICY_MODULES: dict[str, tuple[str, ...]] = {
    "edgellm_gym/DeviceScheduling-v0": ("baselines.adsa", "baselines.scheduling"),
    "edgellm_gym/LayerAllocation-v0": ("baselines.fcim", "baselines.allocation"),
    "edgellm_gym/EdgeCloudOffload-v0": ("baselines.cs_ucb", "baselines.offloading"),
    "edgellm_gym/PlacementQuantization-v0": ("baselines.dilemma", "baselines.placement"),
    "edgellm_gym/TieredService-v0": ("baselines.gus", "baselines.tiered"),
}

_REGISTRY: dict[str, dict[str, tuple[Callable[..., "Policy"], str]]] = {}


@runtime_checkable
class Policy(Protocol):
    """What the benchmark drives: `reset(env, seed)`, then `act(obs, info)` every step."""

    name: str
    kind: str

    def reset(self, env: gym.Env, seed: int | None = None) -> None: ...

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int: ...

    def update(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray,
               info: dict[str, Any]) -> None: ...


class BasePolicy:
    """Keeps the unwrapped env and a seeded generator; `update` does nothing."""

    name = "base"
    kind = "baseline"

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env.unwrapped
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self, obs, action, reward, next_obs, info) -> None:
        return None


class RandomMaskedPolicy(BasePolicy):
    """A uniformly random valid action from `info["action_mask"]` (its own seeded generator)."""

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        return int(self.rng.choice(np.flatnonzero(info["action_mask"])))


def register_policy(env_id: str, name: str, kind: str = "baseline"):
    """Class decorator: make `cls()` available as policy `name` for `env_id`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def deco(cls):
        cls.name, cls.kind = name, kind
        _REGISTRY.setdefault(env_id, {})[name] = (cls, kind)
        return cls

    return deco


def policies_for(env_id: str) -> dict[str, tuple[Callable[..., Policy], str]]:
    """All registered policies of `env_id`: name -> (factory, kind), references first."""
    if env_id not in POLICY_MODULES:
        raise ValueError(f"unknown env id {env_id!r}; known: {sorted(POLICY_MODULES)}")
    for module in POLICY_MODULES[env_id]:
        importlib.import_module(module)
    found = _REGISTRY.get(env_id, {})
    return dict(sorted(found.items(), key=lambda kv: (KINDS.index(kv[1][1]), kv[0])))


def make_policy(env_id: str, name: str, **kwargs) -> Policy:
    """Instantiate the registered policy `name` of `env_id`."""
    found = policies_for(env_id)
    if name not in found:
        raise ValueError(f"unknown policy {name!r} for {env_id}; known: {sorted(found)}")
    return found[name][0](**kwargs)
