"""`edgellm-gym perf`: env steps per second beside Gymnasium's CartPole-v1, same machine, same run.

Each env is stepped with uniformly random *valid* actions (drawn from the mask,
as a masked agent acts) through the raw env (`.unwrapped`, no checker
wrappers), resetting at episode ends; CartPole-v1 with random actions likewise.
Action drawing is included in the timing for both. Also measured: Gymnasium's
`make_vec` (sync, 8 copies) and SB3's SubprocVecEnv (2 processes), in steps of
one copy per second summed over copies.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

import edgellm_gym

__all__ = ["steps_per_second", "cartpole_steps_per_second", "vec_steps_per_second", "main"]


def _random_valid(rng: np.random.Generator, mask: np.ndarray) -> int:
    valid = np.flatnonzero(mask)
    return int(valid[rng.integers(valid.size)])


def steps_per_second(env_id: str, seconds: float = 2.0, scenario: str | None = None, seed: int = 0) -> float:
    """Single-env steps/s with random masked actions (resets included)."""
    env = gym.make(env_id, **({"scenario": scenario} if scenario else {})).unwrapped
    rng = np.random.default_rng(seed)
    _, info = env.reset(seed=seed)
    steps, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(256):
            _, _, term, trunc, info = env.step(_random_valid(rng, info["action_mask"]))
            if term or trunc:
                _, info = env.reset()
        steps += 256
        now = time.perf_counter()
        if now >= deadline:
            return steps / (now - t0)


def cartpole_steps_per_second(seconds: float = 2.0, seed: int = 0) -> float:
    """CartPole-v1 steps/s with random actions, measured the same way."""
    env = gym.make("CartPole-v1").unwrapped
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    steps, t0 = 0, time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(256):
            _, _, term, trunc, _ = env.step(int(rng.integers(2)))
            if term or trunc:
                env.reset()
        steps += 256
        now = time.perf_counter()
        if now >= deadline:
            return steps / (now - t0)


def vec_steps_per_second(env_id: str, kind: str, n_envs: int, seconds: float = 2.0) -> float:
    """Total env steps/s of a vector env: gymnasium "sync" make_vec or SB3 "subproc"."""
    rng = np.random.default_rng(0)
    if kind == "sync":
        envs = gym.make_vec(env_id, num_envs=n_envs, vectorization_mode="sync")
        _, info = envs.reset(seed=0)

        def step():
            nonlocal info
            masks = info["action_mask"]
            acts = np.array([_random_valid(rng, m) if m.any() else 0 for m in masks])
            _, _, _, _, info = envs.step(acts)
    elif kind == "subproc":
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import SubprocVecEnv

        # "module:id" makes each worker process import edgellm_gym (and so register the ids)
        envs = make_vec_env(f"edgellm_gym:{env_id}", n_envs=n_envs, seed=0, vec_env_cls=SubprocVecEnv)
        envs.reset()

        def step():
            masks = envs.env_method("action_masks")
            envs.step(np.array([_random_valid(rng, m) for m in masks]))
    else:
        raise ValueError(f"kind must be 'sync' or 'subproc', got {kind!r}")
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        steps += n_envs
    rate = steps / (time.perf_counter() - t0)
    envs.close()
    return rate


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="edgellm-gym perf", description=__doc__)
    p.add_argument("--env", default="all", help="an env id, or 'all' (default)")
    p.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure")
    p.add_argument("--no-vec", action="store_true", help="skip the vector-env figures")
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
    return 0
