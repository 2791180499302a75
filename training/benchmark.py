"""Benchmark: every policy of an env on the same seeds; mean and 95% CI of the
return and of each episode metric; a terminal table, CSV/JSON/Markdown and a PNG.

Episode i of every policy uses env seed `seed + i` (and the same policy seed),
so policies meet exactly the same requests.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import gymnasium as gym
import numpy as np

import edgellm_gym  # noqa: F401  (registers the env ids)
from baselines.base import policies_for
from edgellm_gym.metrics import mean_ci95

__all__ = ["run_episode", "run_benchmark", "summarize", "write_results", "all_policies"]


def run_episode(env: gym.Env, policy, seed: int, max_steps: int = 1_000_000) -> dict[str, float]:
    """One episode of `policy` on `env` from `reset(seed)`: return, steps, wall time, episode metrics."""
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed=seed)
    total, steps, t0 = 0.0, 0, time.perf_counter()
    for steps in range(1, max_steps + 1):
        action = policy.act(obs, info)
        next_obs, reward, terminated, truncated, info = env.step(action)
        policy.update(obs, action, reward, next_obs, info)
        obs, total = next_obs, total + reward
        if terminated or truncated:
            break
    else:
        raise RuntimeError(f"episode did not end within {max_steps} steps")
    metrics = info.get("episode_metrics")
    if metrics is None:
        raise RuntimeError("the env ended an episode without info['episode_metrics']")
    return {"return": float(total), "steps": float(steps), "wall_s": time.perf_counter() - t0,
            **{k: float(v) for k, v in metrics.items()}}


def all_policies(env_id: str) -> dict[str, tuple[Callable[..., Any], str]]:
    """Registered reference/baseline policies plus any shipped learned agents."""
    found = policies_for(env_id)
    try:
        from agents.zoo import shipped_policies
    except ImportError:
        return found
    return {**found, **shipped_policies(env_id)}


def run_benchmark(env_id: str, episodes: int = 20, seed: int = 0, scenario: Any = None,
                  policies: Iterable[str] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run each policy for `episodes` episodes; one record per (policy, episode)."""
    available = all_policies(env_id)
    names = list(policies) if policies else list(available)
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ValueError(f"unknown policies {unknown} for {env_id}; known: {sorted(available)}")
    kwargs = {} if scenario is None else {"scenario": scenario}
    records = []
    bar = _progress(progress)
    with bar:
        task = bar.add_task(env_id.split("/")[-1], total=len(names) * episodes)
        for name in names:
            factory, kind = available[name]
            policy = factory()
            env = gym.make(env_id, **kwargs)
            if not _fits(policy, env):
                if policies:
                    raise ValueError(f"policy {name!r} was trained on other observation/action spaces than "
                                     f"{env_id} with scenario {scenario!r} has")
                bar.update(task, advance=episodes)  # a shipped agent of another scenario's shape: skip it
                continue
            for i in range(episodes):
                rec = run_episode(env, policy, seed + i)
                records.append({"env": env_id, "policy": name, "kind": kind, "seed": seed + i, **rec})
                bar.update(task, advance=1, description=f"{env_id.split('/')[-1]} {name}")
            env.close()
    return records


def _fits(policy, env: gym.Env) -> bool:
    """A learned policy fits an env whose spaces are the ones its model was trained on."""
    model = getattr(policy, "model", None)
    if model is None:
        return True
    return (model.observation_space.shape == env.observation_space.shape
            and model.action_space == env.action_space)


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=True)


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per policy: kind, episodes, and mean / 95% CI half-width of every numeric column."""
    out = []
    for name in dict.fromkeys(r["policy"] for r in records):
        rows = [r for r in records if r["policy"] == name]
        row: dict[str, Any] = {"policy": name, "kind": rows[0]["kind"], "episodes": len(rows)}
        for key in rows[0]:
            if key in ("env", "policy", "kind", "seed"):
                continue
            mean, half = mean_ci95([r[key] for r in rows])
            row[key], row[key + "_ci95"] = mean, half
        out.append(row)
    return out


def metric_names(summary: list[dict[str, Any]]) -> list[str]:
    """The metric columns of a summary, return first, wall time and steps last."""
    keys = [k for k in summary[0] if k not in ("policy", "kind", "episodes") and not k.endswith("_ci95")]
    tail = [k for k in ("steps", "wall_s") if k in keys]
    return [k for k in keys if k not in tail] + tail


def markdown_table(summary: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table: one row per policy, `mean ± ci95` per metric."""
    keys = metric_names(summary)
    lines = ["| policy | kind | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for row in summary:
        cells = [f"{row[k]:.4g} ± {row[k + '_ci95']:.2g}" for k in keys]
        lines.append(f"| {row['policy']} | {row['kind']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(out_dir: str, env_id: str, records: list[dict[str, Any]],
                  summary: list[dict[str, Any]]) -> dict[str, str]:
    """Write episodes.csv, summary.json, summary.md and summary.png under out_dir/<env>/."""
    folder = os.path.join(out_dir, env_id.split("/")[-1])
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f) for k, f in
             [("csv", "episodes.csv"), ("json", "summary.json"), ("md", "summary.md"), ("png", "summary.png")]}
    with open(paths["csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    with open(paths["json"], "w") as f:
        json.dump({"env": env_id, "summary": summary}, f, indent=2)
    with open(paths["md"], "w") as f:
        f.write(f"# {env_id}\n\n{markdown_table(summary)}\n")
    plot_summary(summary, env_id, paths["png"])
    return paths


def plot_summary(summary: list[dict[str, Any]], env_id: str, path: str) -> None:
    """One bar chart per metric (policies side by side, 95% CI as error bars)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    keys = [k for k in metric_names(summary) if k not in ("steps", "wall_s")]
    cols = min(3, len(keys))
    rows = int(np.ceil(len(keys) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False)
    names = [r["policy"] for r in summary]
    colors = ["tab:red" if r["kind"] == "reference" else "tab:green" if r["kind"] == "learned"
              else "tab:purple" if r["kind"] == "optimal" else "tab:blue" for r in summary]
    for ax, key in zip(axes.flat, keys):
        ax.bar(names, [r[key] for r in summary], yerr=[r[key + "_ci95"] for r in summary], color=colors,
               capsize=3)
        ax.set_title(key, fontsize=9)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    fig.suptitle(f"{env_id} (red: reference, blue: baseline, purple: optimal, green: learned)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def print_table(env_id: str, summary: list[dict[str, Any]]) -> None:
    """Print the summary as a rich table (mean ± 95% CI)."""
    from rich.console import Console
    from rich.table import Table

    keys = metric_names(summary)
    table = Table(title=env_id, show_lines=False)
    table.add_column("policy")
    table.add_column("kind")
    for k in keys:
        table.add_column(k, justify="right")
    for row in summary:
        table.add_row(row["policy"], row["kind"], *[f"{row[k]:.4g} ± {row[k + '_ci95']:.2g}" for k in keys])
    Console(width=max(120, 24 * len(keys))).print(table)


def main(argv: list[str] | None = None) -> int:
    """`edgellm-gym bench`: run, print, write."""
    import argparse

    p = argparse.ArgumentParser(prog="edgellm-gym bench", description=__doc__)
    p.add_argument("--env", default="all", help="an env id, or 'all' (default)")
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", default=None, help="preset name or YAML path (default: the env's default)")
    p.add_argument("--policies", default=None, help="comma-separated policy names (default: all)")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.episodes < 1:
        p.error("--episodes must be >= 1")
    env_ids = list(edgellm_gym.ENV_IDS) if args.env == "all" else [args.env]
    for env_id in env_ids:
        if env_id not in edgellm_gym.ENV_IDS:
            p.error(f"unknown env {env_id!r}; known: {', '.join(edgellm_gym.ENV_IDS)}")
    for env_id in env_ids:
        names = args.policies.split(",") if args.policies else None
        records = run_benchmark(env_id, args.episodes, args.seed, args.scenario, names,
                                progress=not args.no_progress)
        summary = summarize(records)
        print_table(env_id, summary)
        paths = write_results(args.out, env_id, records, summary)
        print("wrote " + ", ".join(paths.values()))
    return 0
