"""SB3 agents: factory, SBPolicy adapter, train command (checkpoints, resume), determinism, shipped zoo.

Smoke-sized: a few thousand steps on the "small" DeviceScheduling preset, one
torch thread. The learning bar itself is measured by the model cards, not here.
"""

from __future__ import annotations

import json
import os

import gymnasium as gym
import numpy as np
import pytest
import torch

import edgellm_gym  # noqa: F401
from agents.factory import ALGOS, SlotNet, load_hyperparams, make_agent
from agents.sb3_policy import SB3Policy
from agents.zoo import read_card, shipped_cards, shipped_policies

ENV_ID = "edgellm_gym/DeviceScheduling-v0"
SMALL = {"env_kwargs": {"scenario": "small"}}
TINY_PPO = dict(n_steps=64, batch_size=64, n_epochs=2, **SMALL)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _episode_observations(n: int = 60, seed: int = 3):
    env = gym.make(ENV_ID, scenario="small")
    obs, info = env.reset(seed=seed)
    out, rng = [], np.random.default_rng(seed)
    while len(out) < n:
        out.append((obs, info))
        obs, _, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if term or trunc:
            obs, info = env.reset()
    return out


def test_maskable_ppo_trains_a_few_thousand_steps_and_acts_within_the_mask():
    model = make_agent("maskable_ppo", ENV_ID, seed=0, n_envs=2, **TINY_PPO)
    model.learn(3000)
    assert model.num_timesteps >= 3000
    policy = SB3Policy(model, "agent")
    for obs, info in _episode_observations():
        assert info["action_mask"][policy.act(obs, info)]


@pytest.mark.parametrize("algo", [a for a in ALGOS if a != "maskable_ppo"])
def test_unmasked_algorithms_build_and_train_on_the_penalized_env(algo):
    extra = dict(TINY_PPO) if algo == "ppo" else dict(SMALL)
    if algo == "dqn":
        extra.update(learning_starts=100, buffer_size=1000)
    model = make_agent(algo, ENV_ID, seed=0, n_envs=2 if algo != "dqn" else 1, **extra)
    model.learn(300)
    obs, info = _episode_observations(1)[0]
    assert 0 <= SB3Policy(model, algo).act(obs, info) < 8


def test_saved_agent_reloads_and_gives_identical_actions(tmp_path):
    model = make_agent("maskable_ppo", ENV_ID, seed=1, n_envs=2, **TINY_PPO)
    model.learn(512)
    path = tmp_path / "agent.zip"
    model.save(path)
    before, after = SB3Policy(model, "a"), SB3Policy.load(str(path), "maskable_ppo", "a")
    data = _episode_observations()
    assert [before.act(o, i) for o, i in data] == [after.act(o, i) for o, i in data]
    obs = torch.as_tensor(np.stack([o for o, _ in data]))
    with torch.no_grad():
        p0 = model.policy.get_distribution(obs).distribution.probs
        p1 = after.model.policy.get_distribution(obs).distribution.probs
    assert torch.equal(p0, p1)


def test_same_seed_gives_the_same_trained_weights_and_another_seed_does_not():
    def weights(seed):
        model = make_agent("maskable_ppo", ENV_ID, seed=seed, n_envs=2, **TINY_PPO)
        model.learn(512)
        return model.policy.state_dict()

    a, b, c = weights(5), weights(5), weights(6)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_subproc_vec_env_runs_maskable_ppo():
    model = make_agent("maskable_ppo", ENV_ID, seed=0, n_envs=2, vec="subproc", **TINY_PPO)
    try:
        model.learn(300)
        assert model.num_timesteps >= 300
    finally:
        model.get_env().close()


def test_train_command_writes_checkpoints_and_resumes_from_one(tmp_path):
    from training.train import main, run_dir_of

    common = ["--env", ENV_ID, "--algo", "maskable_ppo", "--seed", "0", "--out", str(tmp_path), "--scenario",
              "small", "--n-envs", "2", "--eval-freq", "512", "--eval-episodes", "1", "--checkpoint-freq", "512",
              "--no-progress", "--hp", "n_steps=64", "--hp", "batch_size=64", "--hp", "n_epochs=1"]
    assert main(common + ["--timesteps", "1024"]) == 0
    run = run_dir_of(str(tmp_path), ENV_ID, "maskable_ppo", 0)
    for name in ("best_model.zip", "final_model.zip", "run.json", "checkpoints/rl_model_1024_steps.zip"):
        assert os.path.isfile(os.path.join(run, name)), name
    assert os.listdir(os.path.join(run, "tb"))
    first = json.load(open(os.path.join(run, "run.json")))
    assert first["timesteps"] == 1024 and first["hyperparams"]["n_steps"] == 64

    ckpt = os.path.join(run, "checkpoints", "rl_model_512_steps.zip")
    assert main(common + ["--timesteps", "2048", "--resume", ckpt]) == 0
    resumed = json.load(open(os.path.join(run, "run.json")))
    assert resumed["resumed_from"] == ckpt
    assert resumed["timesteps"] >= 2048 and resumed["steps_this_run"] == resumed["timesteps"] - 512
    evals = np.load(os.path.join(run, "eval", "evaluations.npz"))
    assert evals["timesteps"][0] == 512  # the first run's evaluations are kept


def test_slot_net_scores_permute_with_the_slots():
    torch.manual_seed(0)
    net = SlotNet(6 + 4 * 7 + 3, n_actions=5, slot_features=7, net_arch=dict(pi=[16], vf=[16]),
                  activation_fn=torch.nn.Tanh, n_slots=4, slot_start=6)
    x = torch.randn(2, 6 + 4 * 7 + 3)
    order = [2, 0, 3, 1]
    cols = list(range(6)) + [6 + 7 * j + i for j in order for i in range(7)] + list(range(34, 37))
    logits, permuted = net.forward_actor(x), net.forward_actor(x[:, cols])
    assert torch.allclose(permuted[:, :4], logits[:, order], atol=1e-6)
    assert torch.allclose(permuted[:, 4], logits[:, 4], atol=1e-6)  # the extra (non-slot) action


def test_unknown_algo_or_env_entry_is_a_value_error():
    with pytest.raises(ValueError, match="algo"):
        load_hyperparams("sac", ENV_ID)
    with pytest.raises(ValueError, match="no hyper-parameters"):
        load_hyperparams("ppo", "edgellm_gym/NoSuchEnv-v0")


def test_every_algo_has_an_entry_for_every_env_id():
    for algo in ALGOS:
        for env_id in edgellm_gym.ENV_IDS:
            assert "n_timesteps" in load_hyperparams(algo, env_id)


def test_model_card_without_front_matter_is_rejected(tmp_path):
    card = tmp_path / "x.md"
    card.write_text("# no front matter\n")
    with pytest.raises(ValueError, match="front matter"):
        read_card(str(card))


def test_zoo_serves_a_card_and_zip_from_a_folder_as_a_learned_policy(tmp_path):
    model = make_agent("maskable_ppo", ENV_ID, seed=0, n_envs=1, **TINY_PPO)
    model.save(tmp_path / "Sched_m.zip")
    (tmp_path / "Sched_m.md").write_text(f"---\nname: m\nenv: {ENV_ID}\nalgo: maskable_ppo\nfile: Sched_m.zip\n---\n")
    found = shipped_policies(ENV_ID, str(tmp_path))
    assert list(found) == ["m"] and found["m"][1] == "learned"
    policy = found["m"][0]()
    obs, info = _episode_observations(1)[0]
    assert policy.kind == "learned" and info["action_mask"][policy.act(obs, info)]
    assert shipped_policies("edgellm_gym/TieredService-v0", str(tmp_path)) == {}


@pytest.mark.parametrize("card", shipped_cards(), ids=lambda c: c["name"] + "@" + c["env"].split("/")[-1])
def test_shipped_agent_still_meets_its_card_on_the_held_out_seeds(card):
    """The card's numbers hold for today's env: the agent's mean return over the card's seeds is the
    card's, and at least the best non-learned policy's when the card claims so. Fails when the env
    changed: re-ship the agent."""
    from training.benchmark import run_benchmark

    first, last = (int(x) for x in card["eval_seeds"].split("-"))
    records = run_benchmark(card["env"], last - first + 1, first, policies=[card["name"], card["best_other"]],
                            progress=False)
    mean = {n: np.mean([r["return"] for r in records if r["policy"] == n]) for n in (card["name"], card["best_other"])}
    assert mean[card["name"]] == pytest.approx(card["mean_return"], rel=1e-3), "env changed? re-ship the agent"
    assert mean[card["best_other"]] == pytest.approx(card["best_other_return"], rel=1e-3)
    assert (mean[card["name"]] >= mean[card["best_other"]]) == card["beats_best_other"]


def test_shipped_scheduling_agent_is_in_the_benchmark_and_finishes_an_episode():
    if not shipped_cards(ENV_ID):
        pytest.skip("no shipped DeviceScheduling agent")
    from training.benchmark import all_policies, run_episode

    learned = {n: f for n, (f, kind) in all_policies(ENV_ID).items() if kind == "learned"}
    assert learned
    env = gym.make(ENV_ID)
    rec = run_episode(env, next(iter(learned.values()))(), seed=1000)
    assert rec["tasks_finished"] + rec["tasks_dropped"] == 200
