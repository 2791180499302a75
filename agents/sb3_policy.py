"""SB3Policy: a trained SB3 model as a baselines `Policy`, so the benchmark runs it like any other."""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np

from baselines.base import BasePolicy

__all__ = ["SB3Policy"]


class SB3Policy(BasePolicy):
    """Acts with `model.predict(obs, deterministic=True)`, passing `info["action_mask"]` to maskable models.

    A model trained without masks (PPO, A2C, DQN) gets the observation only; a
    masked-out choice then costs the env's invalid-action penalty, as in training.
    `obs_normalizer` is a VecNormalize whose observation statistics the model
    was trained with (None when training normalised rewards only or nothing).
    `torch_threads` sets torch's (process-wide) intra-op thread count: for
    networks this small, extra threads only contend (measured on the shared
    2-core machine: 0.23 ms per action with 1 thread, 18 ms with 2). None
    leaves it alone.
    """

    kind = "learned"

    def __init__(self, model, name: str = "agent", obs_normalizer=None, torch_threads: int | None = 1) -> None:
        self.model, self.name, self.obs_normalizer = model, name, obs_normalizer
        if torch_threads is not None:
            import torch

            torch.set_num_threads(torch_threads)
        from sb3_contrib import MaskablePPO

        self.maskable = isinstance(model, MaskablePPO)

    @classmethod
    def load(cls, path: str, algo: str, name: str | None = None, vecnormalize: str | None = None) -> "SB3Policy":
        """Load a saved model of `algo` (a name in agents.factory.ALGOS) onto the CPU."""
        from agents.factory import algo_class

        model = algo_class(algo).load(path, device="cpu")
        normalizer = None
        if vecnormalize:
            with open(vecnormalize, "rb") as f:
                normalizer = pickle.load(f)
            if not normalizer.norm_obs:
                normalizer = None
        return cls(model, name or algo, normalizer)

    def reset(self, env: gym.Env, seed: int | None = None) -> None:
        self.env = env.unwrapped

    def act(self, obs: np.ndarray, info: dict[str, Any]) -> int:
        if self.obs_normalizer is not None:
            obs = self.obs_normalizer.normalize_obs(obs)
        if self.maskable:
            mask = info.get("action_mask")
            action, _ = self.model.predict(obs, deterministic=True, action_masks=mask)
        else:
            action, _ = self.model.predict(obs, deterministic=True)
        return int(action)
