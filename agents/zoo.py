"""Shipped agents: `agents/shipped/<Env>_<algo>.zip`, each beside a model card `<same name>.md`.

The card opens with YAML front matter (as Hugging Face model cards do) that
says which env and algorithm the zip is for; `shipped_policies(env_id)` reads
it, and the benchmark (`training/benchmark.py`) adds the agents it finds to the
policies of that env as kind "learned".

Ship a trained run (copies its best model, benchmarks it against every
reference and baseline policy on held-out seeds 1000-1019, writes the card):

    python -m agents.zoo ship runs/DeviceScheduling-v0/maskable_ppo_seed0
    python -m agents.zoo list
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from typing import Any

import yaml

__all__ = ["SHIPPED_DIR", "HELD_OUT_SEED", "shipped_cards", "shipped_policies", "read_card", "ship"]

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped")
HELD_OUT_SEED = 1000  # held-out evaluation seeds: 1000 .. 1000 + episodes - 1 (training uses seed + env index)


def read_card(path: str) -> dict[str, Any]:
    """The YAML front matter of a model card (between the first two `---` lines)."""
    with open(path) as f:
        text = f.read()
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: a model card starts with YAML front matter between '---' lines")
    head = text[4:].split("\n---", 1)[0]
    card = yaml.safe_load(head) or {}
    for key in ("name", "env", "algo", "file"):
        if key not in card:
            raise ValueError(f"{path}: front matter lacks {key!r}")
    return card


def shipped_cards(env_id: str | None = None, folder: str = SHIPPED_DIR) -> list[dict[str, Any]]:
    """Front matter of every shipped agent (of `env_id` if given) whose zip exists, with `path` set."""
    if not os.path.isdir(folder):
        return []
    cards = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".md"):
            continue
        card = read_card(os.path.join(folder, name))
        card["path"] = os.path.join(folder, card["file"])
        if os.path.isfile(card["path"]) and (env_id is None or card["env"] == env_id):
            cards.append(card)
    return cards


def shipped_policies(env_id: str, folder: str = SHIPPED_DIR) -> dict[str, tuple[Any, str]]:
    """name -> (factory, "learned") for the shipped agents of `env_id`; the model loads when called."""
    from agents.sb3_policy import SB3Policy

    out = {}
    for card in shipped_cards(env_id, folder):
        vecnorm = card.get("vecnormalize")
        vecnorm = os.path.join(folder, vecnorm) if vecnorm else None
        out[card["name"]] = (functools.partial(SB3Policy.load, card["path"], card["algo"], card["name"], vecnorm),
                             "learned")
    return out


def ship(run_dir: str, name: str | None = None, folder: str = SHIPPED_DIR, episodes: int = 20,
         seed: int = HELD_OUT_SEED, model_file: str = "best_model.zip", progress: bool = True) -> str:
    """Copy a run's model into `folder`, benchmark every policy of its env on held-out seeds, write the card."""
    from edgellm_gym.metrics import mean_ci95
    from training.benchmark import markdown_table, run_benchmark, summarize

    with open(os.path.join(run_dir, "run.json")) as f:
        run = json.load(f)
    env_id, algo = run["env"], run["algo"]
    name = name or algo
    stem = f"{env_id.split('/')[-1]}_{name}"
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(os.path.join(run_dir, model_file), os.path.join(folder, stem + ".zip"))
    front = {"name": name, "env": env_id, "algo": algo, "file": stem + ".zip", "seed": run["seed"],
             "timesteps": run["timesteps"], "wall_s": run["wall_s"], "command": run["command"],
             "eval_seeds": f"{seed}-{seed + episodes - 1}"}
    card_path = os.path.join(folder, stem + ".md")
    _write_card(card_path, front, "(evaluation pending)\n")  # so the benchmark finds the agent

    scenario = (run.get("hyperparams", {}).get("env_kwargs") or {}).get("scenario")
    records = run_benchmark(env_id, episodes, seed, scenario, progress=progress)
    summary = summarize(records)
    mine = next(r for r in summary if r["policy"] == name)
    others = [r for r in summary if r["kind"] in ("reference", "baseline")]  # the bar: not "optimal" bounds
    best = max(others, key=lambda r: r["return"])
    by_seed = {(r["policy"], r["seed"]): r["return"] for r in records}
    seeds = sorted({r["seed"] for r in records})
    diff, diff_ci = mean_ci95([by_seed[(name, s)] - by_seed[(best["policy"], s)] for s in seeds])
    front.update(mean_return=_sig(mine["return"]), mean_return_ci95=_sig(mine["return_ci95"]),
                 best_other=best["policy"], best_other_return=_sig(best["return"]),
                 best_other_return_ci95=_sig(best["return_ci95"]),
                 paired_difference=_sig(diff), paired_difference_ci95=_sig(diff_ci),
                 beats_best_other=bool(mine["return"] >= best["return"]))
    verdict = "at least" if front["beats_best_other"] else "below"
    body = f"""# {algo} on {env_id}

## Training
Command (from the repository root, {run.get('cpu_count')} CPU cores, load average
{run.get('load_avg_1min_at_end', float('nan')):.1f} at the end of training, a machine shared with other jobs):

    {run['command']}

Seed {run['seed']}, {run['timesteps']} env steps, {run['wall_s']:.0f} s wall time
({run.get('steps_per_s')} steps/s, {run['n_envs']} envs, {run['vec']} vectorisation,
{run['threads']} torch thread). The shipped model is `{model_file}`: the best of the
run's evaluations on validation seeds (10000 + seed), not the held-out seeds below.

Hyper-parameters (`training/hyperparams/{algo}.yml`):

```yaml
{yaml.safe_dump(run['hyperparams'], sort_keys=False).strip()}
```

## Evaluation
Every policy of the env on the held-out seeds {front['eval_seeds']} (episode i: env
seed {seed} + i for every policy), default scenario; mean ± 95% CI half-width:

{markdown_table(summary)}

Mean return {mine['return']:.1f} ± {mine['return_ci95']:.1f}: {verdict} the best
non-learned policy, {best['policy']} ({best['return']:.1f} ± {best['return_ci95']:.1f}). Paired over the
same seeds, {name} - {best['policy']} = {diff:+.1f} ± {diff_ci:.1f} (mean ± 95% CI half-width).
Reproduce: `python -m agents.zoo ship {run_dir}` after the training command.
"""
    _write_card(card_path, front, body)
    return card_path


def _sig(x: float, digits: int = 5) -> float:
    """Round to significant digits (returns of some envs are milliseconds: 2 decimals would erase them)."""
    return float(f"{x:.{digits}g}")


def _write_card(path: str, front: dict[str, Any], body: str) -> None:
    with open(path, "w") as f:
        f.write("---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n\n" + body)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m agents.zoo", description="list or ship trained agents")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="the shipped agents")
    s = sub.add_parser("ship", help="copy a run's best model into agents/shipped/ and write its card")
    s.add_argument("run_dir")
    s.add_argument("--name", default=None, help="policy name in the benchmark (default: the algo)")
    s.add_argument("--episodes", type=int, default=20)
    s.add_argument("--seed", type=int, default=HELD_OUT_SEED)
    s.add_argument("--model", default="best_model.zip", help="file in the run dir (default: %(default)s)")
    s.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "list":
        for card in shipped_cards():
            print(f"{card['env']:40s} {card['name']:16s} {card['path']}")
        return 0
    print("wrote " + ship(args.run_dir, args.name, episodes=args.episodes, seed=args.seed, model_file=args.model,
                         progress=not args.no_progress))
    return 0


if __name__ == "__main__":
    sys.exit(main())
