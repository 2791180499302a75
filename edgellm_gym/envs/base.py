"""What every edgellm-gym environment shares: masked Discrete actions,
invalid-action handling, and render dispatch.

Invalid actions (DESIGN, correction of 2026-11-23): an action outside the
action space always raises `ValueError`. An action inside the space but masked
out either

- ``invalid_action="penalize"`` (default): reward `-invalid_action_penalty`,
  state unchanged, `info["invalid_action"] = True`; `max_invalid_streak`
  consecutive invalid actions truncate the episode, or
- ``invalid_action="raise"``: `ValueError` naming the action and the mask.
"""

from __future__ import annotations

import operator
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["MaskedEnv", "INVALID_ACTION_MODES", "squash"]

INVALID_ACTION_MODES = ("penalize", "raise")


def squash(x, scale: float):
    """x / (|x| + scale): a monotone map of any real into (-1, 1), for observations."""
    x = np.asarray(x, dtype=np.float64)
    return x / (np.abs(x) + scale)


class MaskedEnv(gym.Env):
    """Base class: a `Discrete(n)` env whose valid actions are given by a mask.

    Subclasses set `self.action_space`, keep `self._mask` (bool array) current,
    and implement `_step(a)` for a valid action; `step` checks the action first.
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    # attributes that are views into other arrays: pickle and deepcopy copy each array on its own,
    # so a copied view stops sharing memory with its base. They are dropped from the pickled state
    # and rebuilt by `_build_views()` after unpickling.
    _VIEWS: tuple[str, ...] = ()

    def _build_views(self) -> None:
        """Bind the attributes named in `_VIEWS` (subclasses with views override this)."""

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._VIEWS:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._build_views()

    def __init__(
        self,
        render_mode: str | None = None,
        invalid_action: str = "penalize",
        invalid_action_penalty: float = 1.0,
        max_invalid_streak: int = 100,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} or None, got {render_mode!r}")
        if invalid_action not in INVALID_ACTION_MODES:
            raise ValueError(f"invalid_action must be one of {INVALID_ACTION_MODES}, got {invalid_action!r}")
        if not invalid_action_penalty >= 0:
            raise ValueError(f"invalid_action_penalty must be >= 0, got {invalid_action_penalty!r}")
        if max_invalid_streak < 1:
            raise ValueError(f"max_invalid_streak must be >= 1, got {max_invalid_streak!r}")
        self.render_mode = render_mode
        self.invalid_action = invalid_action
        self.invalid_action_penalty = float(invalid_action_penalty)
        self.max_invalid_streak = int(max_invalid_streak)
        self._invalid_streak = 0
        self._mask = np.zeros(0, dtype=bool)
        self._n_actions = 0  # the action count once reset() has run (0 before: step() then raises)
        self.state = None  # set by reset(); what reference policies read

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Seed `np_random` (subclasses call this first, then build their episode)."""
        super().reset(seed=seed, options=options)
        self._n_actions = int(self.action_space.n)

    def step(self, action):
        """Check the action (see the module docstring), then advance the simulation with `_step`."""
        try:  # fast path: an int (or numpy integer) in range whose mask entry is set
            a = operator.index(action)
        except TypeError:
            a = -1
        if 0 <= a < self._n_actions and self._mask[a]:
            self._invalid_streak = 0
            return self._step(a)
        if self.state is None:
            raise RuntimeError("call reset() before step()")
        a = self._check_action(action)
        if a is None:
            return self._invalid_step(self._obs(), self._info())
        return self._step(a)

    def _step(self, a: int) -> tuple:  # pragma: no cover - abstract
        """Advance by the valid action `a`: (obs, reward, terminated, truncated, info)."""
        raise NotImplementedError

    def _obs(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _info(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def action_masks(self) -> np.ndarray:
        """Bool array, True where the action is valid now (MaskablePPO reads this)."""
        return self._mask.copy()

    def _check_action(self, action: Any) -> int | None:
        """The action as an int if valid; None if masked out under "penalize"; raise otherwise."""
        try:  # fast path for int, numpy integers and 0-d integer arrays
            a = operator.index(action)
        except TypeError:
            a = -1
        if not 0 <= a < self.action_space.n:
            raise ValueError(f"action {action!r} is outside the action space {self.action_space}")
        if self._mask[a]:
            self._invalid_streak = 0
            return a
        if self.invalid_action == "raise":
            raise ValueError(f"action {a} is masked out; valid actions: {np.flatnonzero(self._mask).tolist()}")
        self._invalid_streak += 1
        return None

    def _invalid_step(self, obs: np.ndarray, info: dict) -> tuple:
        """The step result for a masked-out action under "penalize": state unchanged."""
        truncated = self._invalid_streak >= self.max_invalid_streak
        info = dict(info, invalid_action=True)
        if truncated:
            info["episode_metrics"] = self.episode_metrics()
        return obs, -self.invalid_action_penalty, False, truncated, info

    def episode_metrics(self) -> dict[str, float]:  # pragma: no cover - abstract
        """The domain metrics of the episode so far (flat dict of floats, units in names)."""
        raise NotImplementedError

    def invariant_violations(self) -> list[str]:  # pragma: no cover - abstract
        """The simulator invariants broken now, as readable strings (empty when all hold).

        Checked after every step by the property tests and `edgellm-gym stress`:
        time never runs backwards, nothing is lost (arrived = finished + dropped +
        waiting), memory/capacity within limits, energy >= 0, as the env has them.
        """
        raise NotImplementedError

    def render(self):
        if self.render_mode == "ansi":
            return self._render_ansi()
        if self.render_mode == "rgb_array":
            return self._render_rgb()
        return None

    def _render_ansi(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def _render_rgb(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError
