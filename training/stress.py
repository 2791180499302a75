"""`edgellm-gym stress`: drive envs with random valid and (10%) masked actions across
seeds and presets, checking every invariant after every step.

Checked after each step: `env.invariant_violations()` is empty (time monotone,
nothing lost, memory/capacity within limits, energy >= 0, as each env has
them), the observation is inside its space, the reward is finite, a masked
action left the observation unchanged. Exceptions are counted (the first is
printed with its traceback) and the episode is restarted. Memory is read from
/proc (current RSS) and getrusage (peak RSS).
"""

from __future__ import annotations

import importlib
import resource
import time
import traceback
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

import edgellm_gym

__all__ = ["StressReport", "stress_env", "main"]


@dataclass
class StressReport:
    env_id: str
    steps: int = 0
    episodes: int = 0
    invalid_actions: int = 0
    invariant_breaks: int = 0
    exceptions: int = 0
    seconds: float = 0.0
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    peak_rss_mb: float = 0.0
    first_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.invariant_breaks == 0 and self.exceptions == 0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def fuzz_presets(env_id: str) -> list[str]:
    """The presets to fuzz: the env module's FUZZ_PRESETS if it declares them, else every preset.

    (PlacementQuantization leaves out the presets whose reset also solves an ILP: they add a
    solver call of seconds per episode, not env behaviour.)
    """
    module = importlib.import_module(edgellm_gym.ENV_ENTRY_POINTS[env_id].split(":")[0])
    return list(getattr(module, "FUZZ_PRESETS", None) or sorted(edgellm_gym.env_presets(env_id)))


def stress_env(env_id: str, steps: int, invalid_share: float = 0.1, seed: int = 0,
               scenarios: list[str] | None = None, episode_cap: int = 20_000) -> StressReport:
    """Run `steps` steps over episodes cycling through `scenarios` (default: every preset)."""
    names = scenarios or fuzz_presets(env_id)
    envs = {name: gym.make(env_id, scenario=name).unwrapped for name in names}
    rng = np.random.default_rng(seed)
    rep = StressReport(env_id)

    def problem(text: str) -> None:
        if len(rep.first_problems) < 5:
            rep.first_problems.append(text)

    t0 = time.perf_counter()
    warm = min(steps // 10, 2000)
    while rep.steps < steps:
        name = names[rep.episodes % len(names)]
        env = envs[name]
        ep_seed = int(rng.integers(2**31))
        try:
            obs, info = env.reset(seed=ep_seed)
            for _ in range(episode_cap):
                mask = info["action_mask"]
                bad = np.flatnonzero(~mask)
                invalid = bad.size > 0 and rng.random() < invalid_share
                action = int(rng.choice(bad if invalid else np.flatnonzero(mask)))
                new_obs, reward, term, trunc, info = env.step(action)
                rep.steps += 1
                rep.invalid_actions += invalid
                broken = env.invariant_violations()
                if not env.observation_space.contains(new_obs):
                    broken.append("observation outside its space")
                if not np.isfinite(reward):
                    broken.append(f"reward not finite: {reward}")
                if invalid and not np.array_equal(obs, new_obs):
                    broken.append("a masked action changed the observation")
                if broken:
                    rep.invariant_breaks += 1
                    problem(f"{name} seed {ep_seed} step {rep.steps}: {broken}")
                obs = new_obs
                if rep.steps == warm:
                    rep.rss_start_mb = _rss_mb()
                if term or trunc or rep.steps >= steps:
                    break
        except Exception:  # noqa: BLE001 - counted and reported, then the run goes on
            rep.exceptions += 1
            problem(f"{name} seed {ep_seed}: {traceback.format_exc()}")
        rep.episodes += 1
    rep.seconds = time.perf_counter() - t0
    rep.rss_end_mb = _rss_mb()
    rep.rss_start_mb = rep.rss_start_mb or rep.rss_end_mb
    rep.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return rep


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="edgellm-gym stress", description=__doc__)
    p.add_argument("--env", default="all", help="an env id, or 'all' (default)")
    p.add_argument("--steps", type=int, default=10_000, help="steps per env")
    p.add_argument("--invalid-share", type=float, default=0.1, help="share of masked actions (penalized)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or not 0 <= args.invalid_share <= 1:
        p.error("--steps must be >= 1 and --invalid-share in [0, 1]")
    env_ids = list(edgellm_gym.ENV_IDS) if args.env == "all" else [args.env]
    from rich.progress import track

    failed = False
    print(f"{'env':<40} {'steps':>9} {'episodes':>8} {'invalid':>8} {'breaks':>6} {'exc':>4} "
          f"{'steps/s':>8} {'RSS start->end MB':>18} {'peak MB':>8}")
    for env_id in track(env_ids, description="stress", transient=True):
        r = stress_env(env_id, args.steps, args.invalid_share, args.seed)
        print(f"{env_id:<40} {r.steps:>9} {r.episodes:>8} {r.invalid_actions:>8} {r.invariant_breaks:>6} "
              f"{r.exceptions:>4} {r.steps / r.seconds:>8.0f} {r.rss_start_mb:>8.1f} -> {r.rss_end_mb:>6.1f} "
              f"{r.peak_rss_mb:>8.1f}")
        for text in r.first_problems:
            print("  " + text)
        failed |= not r.ok
    return 1 if failed else 0
