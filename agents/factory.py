"""Build SB3 agents for any edgellm-gym env id from `training/hyperparams/<algo>.yml`.

`make_agent(algo, env_id, seed)` reads the env's entry in the algorithm's YAML
file (rl-zoo3 layout: keyed by env id), builds the vectorised training envs and
returns an untrained model. Network sizes live here, in `NETS`, and the YAML
names one of them (`net: small`), so every algorithm and env draws from one
table.

Algorithms: `maskable_ppo` (sb3-contrib MaskablePPO; masks from the env's
`action_masks()`, or a wrapper serving `info["action_mask"]` for an env without
it), and `ppo`,
`a2c`, `dqn` (no masks: the env runs with `invalid_action="penalize"`, so a
masked-out action costs `invalid_action_penalty` and changes nothing).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

import edgellm_gym  # noqa: F401  (registers the env ids)

__all__ = ["ALGOS", "NETS", "HYPERPARAMS_DIR", "NON_ALGO_KEYS", "load_hyperparams", "make_env", "make_vec_env",
           "make_agent", "algo_class", "policy_class", "is_maskable", "net_arch", "SlotNet", "MaskableSlotPolicy",
           "SlotActorCriticPolicy"]

ALGOS = ("maskable_ppo", "ppo", "a2c", "dqn")
HYPERPARAMS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "training", "hyperparams")

# Hidden layer sizes, the one place to change them. Actor-critic algorithms get
# separate policy and value networks of this shape; DQN a Q-network of it.
NETS: dict[str, list[int]] = {
    "tiny": [32, 32],
    "small": [64, 64],
    "medium": [128, 128],
    "large": [256, 256],
}

# YAML keys that configure the run rather than the algorithm's constructor.
NON_ALGO_KEYS = ("n_envs", "n_timesteps", "policy", "net", "activation", "normalize", "env_kwargs",
                 "eval_freq", "eval_episodes", "vec")


class SlotNet(nn.Module):
    """Per-action scoring for observations that describe each action's object in a slot.

    Layout: `obs = [prefix (slot_start features), n_slots x slot_features, suffix]`;
    slot i describes action i (a queued task, a device, a server). Many
    edgellm-gym observations look like this. The actor scores every slot with
    the same small network (its slot, the prefix and suffix features, and a
    mean/max summary of all slots), so a rule such as "shortest remaining time
    first" is one monotone function of one feature, not an argmin an MLP must
    learn over K positions. Actions past the slots (e.g. a "reject" action) are
    scored by a linear head on the summary. The critic is a plain MLP over the
    whole observation. Sizes: `net_arch["pi"]` for the slot encoder,
    `net_arch["vf"]` for the critic.

    Strided layout (`slot_blocks`, for actions indexed by a pair, e.g.
    TieredService's (node, variant)): slots form a grid `slot_grid = [A, B]`,
    slot `a * B + b` is action `a * B + b`, and its feature j is
    `obs[offset_j + a * stride_a_j + b * stride_b_j]` for
    `slot_blocks[j] = [offset_j, stride_a_j, stride_b_j]`, so a per-node
    feature (stride_b 0), a per-variant one (stride_a 0) and a per-pair one all
    reach the slot. The global features are then every observation feature no
    block reads. `slot_features`, `n_slots` and `slot_start` are unused there.
    """

    def __init__(self, obs_dim: int, n_actions: int, slot_features: int, net_arch: dict, activation_fn,
                 n_slots: int | None = None, slot_start: int = 0, slot_blocks: list | None = None,
                 slot_grid: list | None = None) -> None:
        super().__init__()
        self.register_buffer("index", None, persistent=False)  # the strided layout's (slot, feature) indices
        if slot_blocks is not None:
            if slot_grid is None or len(slot_grid) != 2:
                raise ValueError("slot_blocks needs slot_grid = [A, B] (A * B slots)")
            a, b = np.meshgrid(np.arange(int(slot_grid[0])), np.arange(int(slot_grid[1])), indexing="ij")
            index = np.stack([off + a.ravel() * sa + b.ravel() * sb for off, sa, sb in slot_blocks], axis=1)
            if index.min() < 0 or index.max() >= obs_dim:
                raise ValueError(f"slot_blocks read outside the observation (size {obs_dim})")
            k, slot_features = index.shape
            self.register_buffer("index", th.as_tensor(index, dtype=th.long), persistent=False)
            rest = np.setdiff1d(np.arange(obs_dim), index.ravel())
            self.register_buffer("glob_index", th.as_tensor(rest, dtype=th.long), persistent=False)
            slot_start = 0
        else:
            k = n_actions if n_slots is None else int(n_slots)
        if not 1 <= k <= n_actions:
            raise ValueError(f"n_slots={k} must be in [1, n_actions={n_actions}]")
        if self.index is None and (slot_start < 0 or slot_start + k * slot_features > obs_dim):
            raise ValueError(f"slot_start={slot_start} + {k} slots x slot_features={slot_features} "
                             f"exceeds the observation size {obs_dim}")
        self.k, self.f, self.start = k, slot_features, slot_start
        self.g = obs_dim - k * slot_features if self.index is None else int(self.glob_index.numel())
        self.extra = n_actions - k
        pi, vf = list(net_arch["pi"]), list(net_arch["vf"])
        self.encoder = _mlp(self.f + self.g, pi, activation_fn)
        self.scorer = nn.Sequential(nn.Linear(3 * pi[-1], pi[-1]), activation_fn(), nn.Linear(pi[-1], 1))
        self.extra_head = nn.Linear(2 * pi[-1] + self.g, self.extra) if self.extra else None
        self.critic = _mlp(obs_dim, vf, activation_fn)
        self.latent_dim_pi, self.latent_dim_vf = n_actions, vf[-1]

    def forward(self, x: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        return self.forward_actor(x), self.forward_critic(x)

    def forward_actor(self, x: th.Tensor) -> th.Tensor:
        b, end = x.shape[0], self.start + self.k * self.f
        if self.index is None:
            slots = x[:, self.start:end].reshape(b, self.k, self.f)
            glob = th.cat([x[:, : self.start], x[:, end:]], dim=-1)
        else:
            slots, glob = x[:, self.index], x[:, self.glob_index]
        h = self.encoder(th.cat([slots, glob.unsqueeze(1).expand(b, self.k, self.g)], dim=-1))  # (b, k, d)
        summary = th.cat([h.mean(dim=1), h.max(dim=1).values], dim=-1)
        logits = self.scorer(th.cat([h, summary.unsqueeze(1).expand(b, self.k, -1)], dim=-1)).squeeze(-1)
        if self.extra_head is not None:
            logits = th.cat([logits, self.extra_head(th.cat([summary, glob], dim=-1))], dim=-1)
        return logits  # (b, n_actions)

    def forward_critic(self, x: th.Tensor) -> th.Tensor:
        return self.critic(x)

    def output_layers(self) -> list[nn.Linear]:
        """The layers that emit logits (initialised small, for a near-uniform first policy)."""
        return [self.scorer[-1]] + ([self.extra_head] if self.extra_head is not None else [])


def _mlp(n_in: int, sizes: list[int], activation_fn) -> nn.Sequential:
    layers, last = [], n_in
    for size in sizes:
        layers += [nn.Linear(last, size), activation_fn()]
        last = size
    return nn.Sequential(*layers)


class _SlotMixin:
    """Swap the MLP extractor for `SlotNet`; its slot scores are the logits (no action_net layer)."""

    def __init__(self, *args, slot_features: int = 0, n_slots: int | None = None, slot_start: int = 0,
                 slot_blocks: list | None = None, slot_grid: list | None = None, **kwargs) -> None:
        self.slot_features, self.n_slots, self.slot_start = int(slot_features), n_slots, int(slot_start)
        self.slot_blocks, self.slot_grid = slot_blocks, slot_grid
        super().__init__(*args, **kwargs)

    def _get_constructor_parameters(self) -> dict:
        extra = {} if self.slot_blocks is None else dict(slot_blocks=self.slot_blocks, slot_grid=self.slot_grid)
        return dict(super()._get_constructor_parameters(), slot_features=self.slot_features, n_slots=self.n_slots,
                    slot_start=self.slot_start, **extra)

    def _build_mlp_extractor(self) -> None:
        arch = self.net_arch if isinstance(self.net_arch, dict) else dict(pi=self.net_arch, vf=self.net_arch)
        self.mlp_extractor = SlotNet(self.features_dim, int(self.action_space.n), self.slot_features, arch,
                                     self.activation_fn, self.n_slots, self.slot_start, self.slot_blocks,
                                     self.slot_grid)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()
        for layer in self.mlp_extractor.output_layers():
            nn.init.orthogonal_(layer.weight, gain=0.01)  # near-uniform initial policy, as SB3's action_net
            nn.init.zeros_(layer.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)


class MaskableSlotPolicy(_SlotMixin, MaskableActorCriticPolicy):
    """MaskablePPO policy with per-slot action scores (`policy: SlotPolicy` in the YAML)."""


class SlotActorCriticPolicy(_SlotMixin, ActorCriticPolicy):
    """PPO / A2C policy with per-slot action scores (`policy: SlotPolicy` in the YAML)."""


def policy_class(algo: str, name: str):
    """The policy for a YAML `policy:` name: SB3's strings pass through, "SlotPolicy" maps to ours."""
    if name != "SlotPolicy":
        return name
    if algo == "maskable_ppo":
        return MaskableSlotPolicy
    if algo in ("ppo", "a2c"):
        return SlotActorCriticPolicy
    raise ValueError(f"SlotPolicy needs an actor-critic algorithm, not {algo!r}")


def algo_class(algo: str):
    """The SB3 class of `algo`."""
    if algo == "maskable_ppo":
        from sb3_contrib import MaskablePPO
        return MaskablePPO
    if algo in ("ppo", "a2c", "dqn"):
        import stable_baselines3 as sb3
        return getattr(sb3, algo.upper())
    raise ValueError(f"unknown algo {algo!r}; known: {', '.join(ALGOS)}")


def is_maskable(algo: str) -> bool:
    """True when the algorithm reads action masks (its predict takes `action_masks=`)."""
    return algo == "maskable_ppo"


def load_hyperparams(algo: str, env_id: str, path: str | None = None) -> dict[str, Any]:
    """The entry of `env_id` in `training/hyperparams/<algo>.yml` (a fresh copy)."""
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; known: {', '.join(ALGOS)}")
    path = path or os.path.join(HYPERPARAMS_DIR, f"{algo}.yml")
    with open(path) as f:
        table = yaml.safe_load(f) or {}
    if env_id not in table:
        raise ValueError(f"no hyper-parameters for {env_id!r} in {path}; known: {sorted(table)}")
    return copy.deepcopy(table[env_id])


def net_arch(algo: str, net: str | list[int]):
    """The `policy_kwargs["net_arch"]` for `algo` from a `NETS` name (or an explicit list)."""
    if isinstance(net, str) and net not in NETS:
        raise ValueError(f"unknown net {net!r}; known: {sorted(NETS)}")
    sizes = NETS[net] if isinstance(net, str) else list(net)
    return sizes if algo == "dqn" else dict(pi=list(sizes), vf=list(sizes))


def _schedule(value):
    """rl-zoo3's "lin_<x>": linear decay from x to 0 over training; numbers pass through."""
    if isinstance(value, str) and value.startswith("lin_"):
        start = float(value[4:])
        return lambda progress_remaining: progress_remaining * start
    return value


class _InfoMask(gym.Wrapper):
    """For an env without `action_masks()`: serve the last `info["action_mask"]` (all valid if none)."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._last_mask = info.get("action_mask")
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        self._last_mask = out[-1].get("action_mask")
        return out

    def action_masks(self) -> np.ndarray:
        n = self.action_space.n
        return np.ones(n, dtype=bool) if self._last_mask is None else np.asarray(self._last_mask, dtype=bool)


def make_env(env_id: str, seed: int, rank: int = 0, env_kwargs: dict | None = None,
             monitor: bool = True) -> Callable[[], gym.Env]:
    """A thunk building one env (Monitor-wrapped, masks reachable) for a vectorised env.

    The env gets seed `seed + rank` on its first reset (through the VecEnv's
    `seed`); later episodes continue its own generator, so runs are reproducible.
    """

    def thunk() -> gym.Env:
        from stable_baselines3.common.monitor import Monitor

        env = gym.make(env_id, **(env_kwargs or {}))
        if not hasattr(env.unwrapped, "action_masks"):
            env = _InfoMask(env)
        if monitor:
            env = Monitor(env)
        env.action_space.seed(seed + rank)
        return env

    return thunk


def make_vec_env(env_id: str, n_envs: int, seed: int, vec: str = "dummy", env_kwargs: dict | None = None,
                 normalize: dict | None = None, training: bool = True):
    """`n_envs` copies of the env in a DummyVecEnv or SubprocVecEnv, seeded `seed .. seed + n_envs - 1`.

    `normalize` (e.g. `{norm_obs: false, norm_reward: true}`) wraps the result
    in VecNormalize; reward-only normalisation changes training, not inference.
    """
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecNormalize

    if vec not in ("dummy", "subproc"):
        raise ValueError(f"vec must be 'dummy' or 'subproc', got {vec!r}")
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    thunks = [make_env(env_id, seed, i, env_kwargs) for i in range(n_envs)]
    venv = SubprocVecEnv(thunks, start_method="fork") if vec == "subproc" else DummyVecEnv(thunks)
    venv.seed(seed)
    if normalize:
        venv = VecNormalize(venv, training=training, **normalize)
    return venv


def make_agent(algo: str, env_id: str, seed: int, *, n_envs: int | None = None, vec: str | None = None,
               env=None, tensorboard_log: str | None = None, verbose: int = 0, hyperparams_path: str | None = None,
               **overrides):
    """An untrained SB3 model for `env_id` with the YAML hyper-parameters, `overrides` on top.

    `overrides` may set any YAML key (`net="medium"`, `gamma=0.999`,
    `n_envs=4`, ...). `env` replaces the training VecEnv built from the YAML.
    The returned model has `model.hyperparams` (the merged entry) attached.
    """
    hp = load_hyperparams(algo, env_id, hyperparams_path)
    hp.update(overrides)
    if n_envs is not None:
        hp["n_envs"] = n_envs
    if vec is not None:
        hp["vec"] = vec
    if env is None:
        env = make_vec_env(env_id, int(hp.get("n_envs", 1)), seed, hp.get("vec", "dummy"),
                           hp.get("env_kwargs"), hp.get("normalize"))
    kwargs = {k: _schedule(v) for k, v in hp.items() if k not in NON_ALGO_KEYS}
    policy_kwargs = dict(kwargs.pop("policy_kwargs", None) or {})
    policy_kwargs.setdefault("net_arch", net_arch(algo, hp.get("net", "small")))
    if hp.get("activation"):
        policy_kwargs["activation_fn"] = getattr(nn, hp["activation"])
    policy = policy_class(algo, hp.get("policy", "MlpPolicy"))
    model = algo_class(algo)(policy, env, seed=seed, policy_kwargs=policy_kwargs, tensorboard_log=tensorboard_log,
                             verbose=verbose, device="cpu", **kwargs)
    model.hyperparams = hp
    return model
