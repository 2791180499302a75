"""`edgellm-gym train`: train an SB3 agent on an edgellm-gym env.

    edgellm-gym train --env edgellm_gym/DeviceScheduling-v0 --algo maskable_ppo \\
        --timesteps 300000 --seed 0 [--n-envs 8] [--vec dummy|subproc] [--resume CKPT.zip] [--out runs]

Reads top to bottom (CleanRL style): arguments, envs, model, callbacks, learn,
save. Hyper-parameters come from `training/hyperparams/<algo>.yml`, keyed by env
id. Everything a run writes goes to `<out>/<Env>/<algo>_seed<S>/`:

    best_model.zip        the model with the best mean validation return so far
    final_model.zip       the model at the end of training
    checkpoints/          rl_model_<steps>_steps.zip (+ VecNormalize stats), for --resume
    tb/                   TensorBoard logs (`tensorboard --logdir runs`)
    eval/evaluations.npz  validation returns at every evaluation
    run.json              command, seed, timesteps, wall time, steps/s, hyper-parameters

Seeds: training env i starts from seed S + i and then runs on its own generator;
validation episodes start from seed 10_000 + S, reseeded before every
evaluation so each evaluation sees the same episodes. Benchmarks of shipped
agents use held-out seeds 1000-1019.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass

VALIDATION_SEED = 10_000


@dataclass
class Args:
    env: str = "edgellm_gym/DeviceScheduling-v0"
    algo: str = "maskable_ppo"
    timesteps: int | None = None  # default: the YAML's n_timesteps
    seed: int = 0
    n_envs: int | None = None  # default: the YAML's n_envs
    vec: str | None = None  # dummy | subproc; default: the YAML's vec, else dummy
    resume: str | None = None
    out: str = "runs"
    scenario: str | None = None
    eval_freq: int | None = None  # env steps between evaluations; default: the YAML's, else 20_000
    eval_episodes: int | None = None  # default: the YAML's, else 10
    checkpoint_freq: int = 50_000  # env steps between checkpoints
    threads: int = 1  # torch threads per process (small nets: 1 is fastest)
    progress: bool = True
    verbose: int = 0
    hp: list[str] | None = None  # KEY=VALUE overrides of the YAML entry (values parsed as YAML)


def parse_args(argv: list[str] | None) -> Args:
    p = argparse.ArgumentParser(prog="edgellm-gym train", description=__doc__.split("\n")[0])
    p.add_argument("--env", default=Args.env, help="env id (default: %(default)s)")
    p.add_argument("--algo", default=Args.algo, choices=("maskable_ppo", "ppo", "a2c", "dqn"))
    p.add_argument("--timesteps", type=int, default=None, help="total env steps (default: the YAML's n_timesteps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-envs", type=int, default=None, help="parallel envs (default: the YAML's n_envs)")
    p.add_argument("--vec", choices=("dummy", "subproc"), default=None, help="vectorisation (default: dummy)")
    p.add_argument("--resume", default=None, help="a checkpoint .zip to continue from")
    p.add_argument("--out", default=Args.out, help="output folder (default: %(default)s)")
    p.add_argument("--scenario", default=None, help="scenario preset name or YAML path (default: the env's)")
    p.add_argument("--eval-freq", type=int, default=None, help="env steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=None)
    p.add_argument("--checkpoint-freq", type=int, default=Args.checkpoint_freq, help="env steps between checkpoints")
    p.add_argument("--threads", type=int, default=Args.threads, help="torch threads (default: %(default)s)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--verbose", type=int, default=0)
    p.add_argument("--hp", action="append", metavar="KEY=VALUE",
                   help="override a hyper-parameter of the YAML entry, e.g. --hp gamma=0.999 (repeatable)")
    ns = p.parse_args(argv)
    args = Args(**vars(ns))
    if args.timesteps is not None and args.timesteps < 1:
        p.error("--timesteps must be >= 1")
    if args.n_envs is not None and args.n_envs < 1:
        p.error("--n-envs must be >= 1")
    if args.resume and not os.path.isfile(args.resume):
        p.error(f"--resume: no such file {args.resume!r}")
    for item in args.hp or []:
        if "=" not in item:
            p.error(f"--hp expects KEY=VALUE, got {item!r}")
    return args


def hp_overrides(items: list[str] | None) -> dict:
    """`["gamma=0.999", "net=medium"]` -> `{"gamma": 0.999, "net": "medium"}` (values parsed as YAML)."""
    import yaml

    out = {}
    for item in items or []:
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def run_dir_of(out: str, env_id: str, algo: str, seed: int) -> str:
    """Where a run writes: <out>/<Env>/<algo>_seed<S>."""
    return os.path.join(out, env_id.split("/")[-1], f"{algo}_seed{seed}")


def _has_progress_bar_deps() -> bool:
    try:
        import rich  # noqa: F401
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)

    import numpy as np
    import torch
    from stable_baselines3.common.callbacks import CallbackList, CheckpointCallback
    from stable_baselines3.common.vec_env import VecNormalize

    from agents.factory import algo_class, is_maskable, load_hyperparams, make_agent, make_vec_env

    torch.set_num_threads(args.threads)
    hp = load_hyperparams(args.algo, args.env)
    hp.update(hp_overrides(args.hp))
    env_kwargs = dict(hp.get("env_kwargs") or {})
    if args.scenario:
        env_kwargs["scenario"] = args.scenario
    hp["env_kwargs"] = env_kwargs
    n_envs = args.n_envs or int(hp.get("n_envs", 1))
    vec = args.vec or hp.get("vec", "dummy")
    total = args.timesteps or int(hp["n_timesteps"])
    hp.update(n_envs=n_envs, vec=vec)
    eval_freq = args.eval_freq or int(hp.get("eval_freq", 20_000))
    eval_episodes = args.eval_episodes or int(hp.get("eval_episodes", 10))
    run_dir = run_dir_of(args.out, args.env, args.algo, args.seed)
    os.makedirs(run_dir, exist_ok=True)

    # --- envs: training (vectorised) and validation (one env, same episodes at every evaluation)
    venv = make_vec_env(args.env, n_envs, args.seed, vec, env_kwargs, hp.get("normalize"))
    # (wrapped like the training env, so EvalCallback can sync statistics; returns are raw, from Monitor)
    eval_norm = dict(hp["normalize"], norm_reward=False) if hp.get("normalize") else None
    eval_env = make_vec_env(args.env, 1, VALIDATION_SEED + args.seed, "dummy", env_kwargs, eval_norm,
                            training=False)

    # --- model: fresh from the YAML, or a checkpoint (with its VecNormalize statistics)
    if args.resume:
        stats = _vecnormalize_path(args.resume)
        if isinstance(venv, VecNormalize) and stats:
            venv = VecNormalize.load(stats, venv.venv)
        model = algo_class(args.algo).load(args.resume, env=venv, device="cpu",
                                           tensorboard_log=os.path.join(run_dir, "tb"))
        remaining = max(total - model.num_timesteps, 0)
    else:
        model = make_agent(args.algo, args.env, args.seed, env=venv, tensorboard_log=os.path.join(run_dir, "tb"),
                           verbose=args.verbose, **hp)
        remaining = total
    start_steps = model.num_timesteps

    # --- callbacks: checkpoints + validation keeping the best model (counted in env steps)
    per_call = venv.num_envs
    checkpoint = CheckpointCallback(max(args.checkpoint_freq // per_call, 1), os.path.join(run_dir, "checkpoints"),
                                    save_vecnormalize=True)
    evaluation = _eval_callback(is_maskable(args.algo), eval_env, VALIDATION_SEED + args.seed,
                                n_eval_episodes=eval_episodes, eval_freq=max(eval_freq // per_call, 1),
                                best_model_save_path=run_dir, log_path=os.path.join(run_dir, "eval"),
                                deterministic=True, verbose=args.verbose)
    if args.resume:
        _restore_evaluations(evaluation, os.path.join(run_dir, "eval", "evaluations.npz"))
    progress = args.progress and _has_progress_bar_deps()
    if args.progress and not progress:
        print("note: no progress bar (pip install tqdm rich)", file=sys.stderr)

    # --- learn
    t0 = time.perf_counter()
    model.learn(total_timesteps=remaining, callback=CallbackList([checkpoint, evaluation]),
                progress_bar=progress, tb_log_name=args.algo, reset_num_timesteps=not args.resume)
    wall_s = time.perf_counter() - t0

    # --- save and report
    model.save(os.path.join(run_dir, "final_model.zip"))
    if isinstance(venv, VecNormalize):
        venv.save(os.path.join(run_dir, "vecnormalize.pkl"))
    record = {
        "env": args.env, "algo": args.algo, "seed": args.seed, "timesteps": int(model.num_timesteps),
        "steps_this_run": int(model.num_timesteps - start_steps), "wall_s": round(wall_s, 1),
        "steps_per_s": round((model.num_timesteps - start_steps) / wall_s, 1) if wall_s > 0 else None,
        "n_envs": n_envs, "vec": vec, "threads": args.threads, "resumed_from": args.resume,
        "best_validation_return": float(evaluation.best_mean_reward)
        if np.isfinite(evaluation.best_mean_reward) else None,
        "command": "edgellm-gym train " + shlex.join(argv), "args": asdict(args), "hyperparams": hp,
        "cpu_count": os.cpu_count(), "load_avg_1min_at_end": os.getloadavg()[0],
    }
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump(record, f, indent=2, default=str)
    venv.close()
    eval_env.close()
    print(f"trained {args.algo} on {args.env}: {model.num_timesteps} steps, {wall_s:.0f} s "
          f"({record['steps_per_s']} steps/s), best validation return {record['best_validation_return']}; "
          f"wrote {run_dir}")
    return 0


def _vecnormalize_path(checkpoint: str) -> str | None:
    """The VecNormalize statistics CheckpointCallback saved beside `checkpoint`, if any."""
    folder, name = os.path.split(checkpoint)
    if name.startswith("rl_model_") and name.endswith("_steps.zip"):
        path = os.path.join(folder, name.replace("rl_model_", "rl_model_vecnormalize_").replace(".zip", ".pkl"))
        if os.path.isfile(path):
            return path
    path = os.path.join(folder, "vecnormalize.pkl")
    return path if os.path.isfile(path) else None


def _restore_evaluations(callback, path: str) -> None:
    """On resume: keep the earlier evaluations and the best return, so best_model.zip stays the best."""
    import numpy as np

    if not os.path.isfile(path):
        return
    data = np.load(path)
    callback.evaluations_timesteps = list(data["timesteps"])
    callback.evaluations_results = [list(r) for r in data["results"]]
    callback.evaluations_length = [list(r) for r in data["ep_lengths"]]
    if len(data["results"]):
        callback.best_mean_reward = float(np.max(np.mean(data["results"], axis=1)))


def _eval_callback(maskable: bool, eval_env, seed: int, **kwargs):
    """A (Maskable)EvalCallback that reseeds its env before every evaluation: same episodes each time."""
    if maskable:
        from sb3_contrib.common.maskable.callbacks import MaskableEvalCallback as Base
    else:
        from stable_baselines3.common.callbacks import EvalCallback as Base

    class SeededEval(Base):
        def _on_step(self) -> bool:
            if self.eval_freq > 0 and self.n_calls % self.eval_freq == 0:
                self.eval_env.seed(seed)
            return super()._on_step()

    return SeededEval(eval_env, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
