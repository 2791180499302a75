"""CS-UCB (DESIGN 4.3): the selection rule on hand cases, sublinear regret on a stationary bandit,
and the policy's hard constraints on EdgeCloudOffload-v0."""

import math

import gymnasium as gym
import numpy as np
import pytest

import edgellm_gym  # noqa: F401
from baselines import make_policy
from baselines.cs_ucb import constraint_slack, cs_ucb_reward, ucb_index, ucb_select
from training.benchmark import run_episode

ENV_ID = "edgellm_gym/EdgeCloudOffload-v0"


def test_ucb_index_is_mean_plus_c_sqrt_log_t_over_n():
    idx = ucb_index([0.5, 0.4], [10, 2], t=20, c=1.0)
    assert idx[0] == pytest.approx(0.5 + math.sqrt(math.log(20) / 10))  # 1.0473
    assert idx[1] == pytest.approx(0.4 + math.sqrt(math.log(20) / 2))  # 1.6238
    assert ucb_index([0.3], [0], t=5, c=1.0)[0] == np.inf


def test_ucb_select_picks_the_largest_index_not_the_largest_mean():
    assert ucb_select([0.5, 0.4], [10, 2], 20, [True, True], c=1.0) == 1
    # with no exploration bonus the larger mean wins
    assert ucb_select([0.5, 0.4], [10, 2], 20, [True, True], c=0.0) == 0


def test_ucb_select_plays_unplayed_feasible_arms_first_lowest_index():
    means, counts = [0.9, 0.0, 0.0, 0.8], [50, 0, 0, 3]
    assert ucb_select(means, counts, 60, [True, True, True, True]) == 1
    assert ucb_select(means, counts, 60, [True, False, True, True]) == 2


def test_ucb_select_never_plays_an_infeasible_arm():
    # arm 1 is unplayed and would come first, arm 0 has the best index: both dropped
    assert ucb_select([0.9, 0.0, 0.1], [5, 0, 5], 11, [False, False, True]) == 2


def test_ucb_select_returns_minus_one_when_no_arm_is_feasible():
    assert ucb_select([0.1, 0.2], [1, 1], 3, [False, False]) == -1


def test_ucb_select_breaks_ties_to_the_lowest_arm():
    assert ucb_select([0.2, 0.2, 0.2], [4, 4, 4], 12, [True, True, True]) == 0


def test_constraint_slack_is_relative_and_clipped():
    assert constraint_slack(2.0, 4.0) == 0.5
    assert constraint_slack(6.0, 4.0) == -0.5
    assert constraint_slack(100.0, 4.0) == -1.0
    assert constraint_slack(0.0, 4.0) == 1.0


def test_cs_ucb_reward_is_minus_energy_plus_lambda_slack():
    assert cs_ucb_reward(0.25, 0.5, lam=2.0) == pytest.approx(0.75)
    assert cs_ucb_reward(1.0, -1.0) == -2.0


def _pseudo_regret(means, horizon, seed, c=1.0, sigma=0.3):
    """Cumulative pseudo-regret (sum of gaps of the played arms) of ucb_select on a Gaussian bandit."""
    rng = np.random.default_rng(seed)
    means = np.asarray(means)
    k = len(means)
    est, counts = np.zeros(k), np.zeros(k, dtype=np.int64)
    feasible = np.ones(k, dtype=bool)
    gaps = means.max() - means
    regret = np.empty(horizon)
    total = 0.0
    for t in range(1, horizon + 1):
        a = ucb_select(est, counts, t, feasible, c)
        r = means[a] + sigma * rng.standard_normal()
        counts[a] += 1
        est[a] += (r - est[a]) / counts[a]
        total += gaps[a]
        regret[t - 1] = total
    return regret


def test_regret_against_the_best_fixed_arm_grows_sublinearly():
    means = [0.2, 0.5, 0.4, 0.1, 0.3]  # a stationary instance; best fixed arm: 1
    horizon = 16000
    regret = np.mean([_pseudo_regret(means, horizon, seed) for seed in range(3)], axis=0)
    r1, r4, r16 = regret[999], regret[3999], regret[15999]
    assert r1 / 1000 > r4 / 4000 > r16 / 16000  # average regret falls
    assert r4 < 0.5 * 4 * r1 and r16 < 0.5 * 4 * r4  # far below linear growth (x4 per x4 rounds)
    assert r16 / 16000 < 0.02  # the best arm is played almost always by the end


def test_cs_ucb_plays_only_feasible_arms_when_one_exists():
    env = gym.make(ENV_ID)
    policy = make_policy(ENV_ID, "cs-ucb")
    obs, info = env.reset(seed=3)
    policy.reset(env, seed=3)
    st = env.unwrapped.state
    fallbacks = 0
    for _ in range(300):
        feasible = policy.feasible()
        a = policy.act(obs, info)
        assert info["action_mask"][a]
        if feasible.any():
            assert feasible[a]
        else:
            fallbacks += 1
            idle = np.where(st.valid, st.upload_s + st.compute_s + st.download_s, np.inf)
            assert a == int(np.argmin(idle))
        next_obs, r, term, trunc, info = env.step(a)
        policy.update(obs, a, r, next_obs, info)
        obs = next_obs
    assert policy.counts.sum() == 300 and policy.t == 300


def test_cs_ucb_drops_edge_arms_that_cannot_meet_a_tight_requirement():
    # "chat" (slack 6 x the cloud's ideal latency) cannot be met by a CPU edge server even when idle
    env = gym.make(ENV_ID)
    rec_policy = make_policy(ENV_ID, "cs-ucb")
    run_episode(env, rec_policy, seed=0)
    chat = [s.name for s in env.unwrapped.scenario.services].index("chat")
    m = env.unwrapped.scenario.n_edge
    assert rec_policy.counts[chat, :m].sum() == 0 and rec_policy.counts[chat, m] > 0


def test_cs_ucb_episode_is_deterministic_for_a_seed():
    env = gym.make(ENV_ID)
    a = run_episode(env, make_policy(ENV_ID, "cs-ucb"), seed=5)
    b = run_episode(env, make_policy(ENV_ID, "cs-ucb"), seed=5)
    assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}
