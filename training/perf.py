"""`edgellm-gym perf`: env steps per second beside Gymnasium's CartPole-v1, same machine, same run.

Each env is stepped with uniformly random *valid* actions (drawn from the mask,
as a masked agent acts) through the raw env (`.unwrapped`, no checker
wrappers), resetting at episode ends; CartPole-v1 with random actions likewise.
Action drawing is included in the timing for both, done the same cheap way for
both (`_Draws`: uniforms drawn in blocks; rejection sampling on the mask), so
the ratio is about the envs. Also measured: Gymnasium's
`make_vec` (sync, 8 copies) and SB3's SubprocVecEnv (2 processes), in steps of
one copy per second summed over copies.

With `--detail`, each figure is split (`step_split`): the same episodes are
replayed, recorded actions first (the env's `step` and `reset` alone, resets
spread over the steps), then the action drawing alone on the recorded masks.
This explains a ratio; it does not replace it (the table's figures are the
measure).
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

import edgellm_gym

__all__ = ["steps_per_second", "cartpole_steps_per_second", "vec_steps_per_second", "step_split", "main"]


class _Draws:
    """Uniformly random actions for the timing loops, as cheap as Python allows, so that the
    figures measure the env rather than the drawing: uniforms come from a numpy Generator in
    blocks (as a Python list); `valid(mask)` is rejection sampling (a uniform index, kept if the
    mask allows it; after 4 misses a uniform pick among the allowed ones: either way uniform over
    the valid actions); `any(n)` is a uniform index below n (CartPole's draw)."""

    BLOCK = 4096

    def __init__(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._u: list[float] = []

    def _next(self) -> float:
        if not self._u:
            self._u = self._rng.random(self.BLOCK).tolist()
        return self._u.pop()

    def any(self, n: int) -> int:
        return int(self._next() * n)

    def valid(self, mask: np.ndarray) -> int:
        n = mask.size
        for _ in range(4):
            a = int(self._next() * n)
            if mask[a]:
                return a
        allowed = np.flatnonzero(mask)
        return int(allowed[int(self._next() * allowed.size)])


def steps_per_second(env_id: str, seconds: float = 2.0, scenario: str | None = None, seed: int = 0) -> float:
    """Single-env steps/s with random masked actions (resets included)."""
    env = gym.make(env_id, **({"scenario": scenario} if scenario else {})).unwrapped
    draws = _Draws(seed)
    _, info = env.reset(seed=seed)
    steps, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(256):
            _, _, term, trunc, info = env.step(draws.valid(info["action_mask"]))
            if term or trunc:
                _, info = env.reset()
        steps += 256
        now = time.perf_counter()
        if now >= deadline:
            return steps / (now - t0)


def cartpole_steps_per_second(seconds: float = 2.0, seed: int = 0) -> float:
    """CartPole-v1 steps/s with random actions, measured the same way."""
    env = gym.make("CartPole-v1").unwrapped
    draws = _Draws(seed)
    env.reset(seed=seed)
    steps, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(256):
            _, _, term, trunc, _ = env.step(draws.any(2))
            if term or trunc:
                env.reset()
        steps += 256
        now = time.perf_counter()
        if now >= deadline:
            return steps / (now - t0)


def vec_steps_per_second(env_id: str, kind: str, n_envs: int, seconds: float = 2.0) -> float:
    """Total env steps/s of a vector env: gymnasium "sync" make_vec or SB3 "subproc"."""
    draws = _Draws(0)
    if kind == "sync":
        envs = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="sync")
        _, info = envs.reset(seed=0)

        def step():
            nonlocal info
            masks = info["action_mask"]
            acts = np.array([draws.valid(m) if m.any() else 0 for m in masks])
            _, _, _, _, info = envs.step(acts)
    elif kind == "subproc":
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import SubprocVecEnv

        # "module:id" makes each worker process import edgellm_gym (and so register the ids)
        envs = make_vec_env(f"edgellm_gym:{env_id}", n_envs=n_envs, seed=0, vec_env_cls=SubprocVecEnv)
        envs.reset()

        def step():
            masks = envs.env_method("action_masks")
            envs.step(np.array([draws.valid(m) for m in masks]))
    else:
        raise ValueError(f"kind must be 'sync' or 'subproc', got {kind!r}")
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += n_envs
    rate = steps / (time.perf_counter() - t0)
    envs.close()
    return rate


def step_split(env_id: str, steps: int = 20_000, seed: int = 0, repeats: int = 5) -> dict[str, float]:
    """Microseconds per step of one run of `steps` random masked steps (as `steps_per_second`
    draws them), split into: `env_us` (`step` and `reset` alone, replaying the recorded actions;
    resets spread over the steps), `draw_us` (drawing the actions from the recorded masks) and
    `reset_us` (one reset). Best of `repeats` timings each (the least disturbed by other load).
    `env_id` "CartPole-v1" draws `any(2)` as `cartpole_steps_per_second` does."""
    cartpole = env_id == "CartPole-v1"
    env = gym.make(env_id).unwrapped
    draws = _Draws(seed)
    _, info = env.reset(seed=seed)
    actions, masks, resets = [], [], 0
    for _ in range(steps):
        if not cartpole:
            masks.append(info["action_mask"])
        a = draws.any(2) if cartpole else draws.valid(info["action_mask"])
        _, _, term, trunc, info = env.step(a)
        actions.append(a)
        if term or trunc:
            actions.append(None)
            resets += 1
            _, info = env.reset()

    def replay() -> float:
        env.reset(seed=seed)
        t0 = time.perf_counter()
        for a in actions:
            if a is None:
                env.reset()
            else:
                env.step(a)
        return time.perf_counter() - t0

    def draw() -> float:
        r = _Draws(seed)
        t0 = time.perf_counter()
        if cartpole:
            for _ in range(steps):
                r.any(2)
        else:
            for m in masks:
                r.valid(m)
        return time.perf_counter() - t0

    def one_reset() -> float:
        t0 = time.perf_counter()
        env.reset()
        return time.perf_counter() - t0

    env_s = min(replay() for _ in range(repeats))
    draw_s = min(draw() for _ in range(repeats))
    reset_s = min(one_reset() for _ in range(max(repeats, 20)))
    return {"env_us": env_s / steps * 1e6, "draw_us": draw_s / steps * 1e6, "reset_us": reset_s * 1e6,
            "steps_per_episode": steps / max(resets, 1)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="edgellm-gym perf", description=__doc__)
    p.add_argument("--env", default="all", help="an env id, or 'all' (default)")
    p.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure")
    p.add_argument("--no-vec", action="store_true", help="skip the vector-env figures")
    p.add_argument("--detail", action="store_true",
                   help="then split each figure: env step + reset alone, action drawing, one reset (us)")
    args = p.parse_args(argv)
    env_ids = list(edgellm_gym.ENV_IDS) if args.env == "all" else [args.env]
    cart = cartpole_steps_per_second(args.seconds)
    print(f"{'env':<40} {'steps/s':>10} {'x CartPole':>10} {'sync x8':>10} {'subproc x2':>11}")
    print(f"{'CartPole-v1':<40} {cart:>10.0f} {1.0:>10.2f}")
    for env_id in env_ids:
        rate = steps_per_second(env_id, args.seconds)
        vec = "" if args.no_vec else (f" {vec_steps_per_second(env_id, 'sync', 8, args.seconds):>10.0f}"
                                      f" {vec_steps_per_second(env_id, 'subproc', 2, args.seconds):>11.0f}")
        print(f"{env_id:<40} {rate:>10.0f} {rate / cart:>10.2f}{vec}")
    if args.detail:
        print(f"\n{'us per step':<40} {'env':>10} {'draw':>10} {'reset (1)':>10} {'steps/ep':>10}")
        for env_id in ["CartPole-v1"] + env_ids:
            d = step_split(env_id)
            print(f"{env_id:<40} {d['env_us']:>10.2f} {d['draw_us']:>10.2f} {d['reset_us']:>10.0f} "
                  f"{d['steps_per_episode']:>10.0f}")
    return 0
