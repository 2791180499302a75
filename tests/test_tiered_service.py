"""TieredService-v0: invariants under random and invalid actions, reward accounting,
observation semantics, pure helpers, scenarios, and baseline behaviour."""

import dataclasses
import os

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgellm_gym  # noqa: F401
from baselines import make_policy
from edgellm_gym.catalog import LinkSpec, get_device
from edgellm_gym.envs.tiered_service import (
    TieredServiceScenario,
    deploy_variants,
    evaluate_window,
    parse_node,
    path_time_s,
)
from edgellm_gym.scenario import presets
from training.benchmark import run_episode

ENV_ID = "edgellm_gym/TieredService-v0"
ROOT = os.path.dirname(os.path.dirname(__file__))
MEDIUM = dataclasses.replace(presets("TieredService")["default"], users_per_window=10, n_windows=3)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), actions=st.lists(st.integers(0, 56), min_size=1, max_size=150),
       scenario=st.sampled_from(["small", "medium"]))
def test_invariants_hold_under_random_and_invalid_actions(seed, actions, scenario):
    env = gym.make(ENV_ID, scenario=MEDIUM if scenario == "medium" else scenario)
    u = env.unwrapped
    obs, info = env.reset(seed=seed)
    for a in actions:
        a = a % u.action_space.n
        obs, r, term, trunc, info = env.step(a)
        assert u.invariant_violations() == []
        assert env.observation_space.contains(obs) and np.isfinite(r)
        assert np.all(u.state.used_s <= u.state.capacity_s)  # capacity never exceeded
        if info["invalid_action"]:
            assert r == -1.0
        if term:
            # each user assigned exactly once or rejected
            assert np.all(u.state.assignment >= -1) and len(u.state.assignment) == u.n_users
        if term or trunc:
            obs, info = env.reset()


def test_return_equals_satisfied_users_and_the_batch_rule():
    """The incremental reward telescopes to the satisfied count, which the pure window rule confirms."""
    env = gym.make(ENV_ID)
    rec = run_episode(env, make_policy(ENV_ID, "random"), seed=5)
    st = env.unwrapped.state
    assert rec["return"] == rec["satisfied_users"]
    total = 0
    for w in range(env.unwrapped.scenario.n_windows):
        s = slice(w * st.users_per_window, (w + 1) * st.users_per_window)
        sat, _ = evaluate_window(st.assignment[s], st.min_accuracy[s], st.deadline_s[s], st.net_s[s],
                                 st.compute_s[s], st.accuracy)
        total += int(sat.sum())
    assert total == rec["satisfied_users"]


def test_an_assignment_can_push_earlier_users_late_and_costs_reward():
    # one node, one variant; user 0 deadline loose, user 1 tight: EDF puts user 1 first
    sc = TieredServiceScenario(end_devices=(), edge_servers=("rtx4090",), cloud_servers=(), variants=("qwen2.5-0.5b",),
                               users_per_window=2, n_windows=1, min_accuracy_low=0.0, min_accuracy_high=0.0)
    env = gym.make(ENV_ID, scenario=sc)
    env.reset(seed=0)
    st = env.unwrapped.state
    p = st.compute_s[:, 0, 0]
    # deadlines set by hand (EDF deadline = deadline - network): user 0 fits alone, user 1 goes first
    # (its EDF deadline p1 < 1.01 max(p0, p1)) and then user 0 finishes at p0 + p1, too late
    edf = np.array([1.01 * max(p), p[1]])
    assert p.sum() > edf[0]
    st.deadline_s[:] = edf + st.net_s[:, 0]
    env.unwrapped._edf_deadline[:] = st.deadline_s[:, None] - st.net_s
    assert env.step(0)[1] == 1.0  # user 0 alone: in time
    obs, r, term, _, info = env.step(0)  # user 1 goes first and pushes user 0 past its deadline
    assert r == 0.0 and term  # +1 (user 1) - 1 (user 0)
    assert info["episode_metrics"]["satisfied_users"] == 1.0
    assert info["episode_metrics"]["deadline_miss_share"] == 0.5


def test_reward_one_iff_the_observation_says_accuracy_met_in_time_and_nobody_pushed():
    """... which the per-pair 'earns +1 now' flags say directly, and their 'some pair' flag sums up."""
    env = gym.make(ENV_ID, scenario=MEDIUM)
    u = env.unwrapped
    n, m = u.n_nodes, u.n_variants
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=1)
    pair0 = len(obs) - 4 * n * m  # pair slacks, keep flags, compute, earns +1 now
    acc0 = 4 + 2 * m + 1  # the per-variant accuracy flags follow the user, rest-of-window and window index
    checked = 0
    for _ in range(60):
        valid = np.flatnonzero(info["action_mask"][:-1])
        a = int(rng.choice(valid)) if valid.size and rng.random() < 0.9 else u.reject_action
        earns = ((obs[acc0: acc0 + m] == 1)[None, :] & (obs[pair0: pair0 + n * m].reshape(n, m) >= 0)
                 & (obs[pair0 + n * m: pair0 + 2 * n * m].reshape(n, m) == 1)
                 & info["action_mask"][:-1].reshape(n, m))
        assert np.array_equal(obs[pair0 + 3 * n * m:] == 1, earns.ravel())
        assert (obs[4 + 4 * m + 2] == 1) == earns.any()  # after the per-variant blocks and the position
        if a != u.reject_action:
            acc_ok = obs[acc0 + a % m]
            in_time = obs[pair0 + a] >= 0
            keeps = obs[pair0 + n * m + a] == 1
            expect = 1.0 if (acc_ok == 1 and in_time and keeps) else None
        obs, r, term, trunc, info = env.step(a)
        if a != u.reject_action:
            checked += 1
            if expect is not None:
                assert r == 1.0
            else:
                assert r <= 0.0
        if term:
            break
    assert checked > 20


def test_observation_ranks_pairs_by_compute_and_variants_by_accuracy_margin():
    """The per-pair compute feature orders the deployed pairs as their compute times do (GUS's key),
    and the per-variant margin is the variant's accuracy minus the user's minimum."""
    env = gym.make(ENV_ID)
    u = env.unwrapped
    n, m = u.n_nodes, u.n_variants
    obs, info = env.reset(seed=4)
    rng = np.random.default_rng(4)
    for _ in range(30):
        st = u.state
        compute = st.compute_s[st.user].ravel()
        feat = obs[len(obs) - 2 * n * m: len(obs) - n * m]
        dep = st.deployed.ravel()
        np.testing.assert_allclose(feat[dep], compute[dep] / (compute[dep] + 20.0), rtol=1e-6)
        assert np.all(feat[~dep] == 1.0)
        order = np.argsort(compute[dep], kind="stable")
        assert np.all(np.diff(feat[dep][order]) >= 0)
        margin = obs[4 + 3 * m + 1: 4 + 4 * m + 1]
        np.testing.assert_allclose(margin, st.accuracy - st.min_accuracy[st.user], atol=1e-6)
        assert np.array_equal(obs[4 + 2 * m + 1: 4 + 3 * m + 1] == 1, margin >= 0)
        obs, _, term, _, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if term:
            break


def test_mask_hides_undeployed_variants_and_full_nodes_but_never_reject():
    env = gym.make(ENV_ID, scenario="small")
    u = env.unwrapped
    _, info = env.reset(seed=0)
    assert np.array_equal(info["action_mask"][:-1], u.state.deployed.ravel()
                          & (u.state.compute_s[0] <= u.state.capacity_s[:, None]).ravel())
    u.state.used_s[:] = u.state.capacity_s  # as if every node were full
    u._update_mask()
    assert u.action_masks().tolist() == [False] * (u.action_space.n - 1) + [True]


# ------------------------------------------------------------ pure helpers
def test_deploy_packs_largest_variants_first():
    assert deploy_variants(10.0, [6.0, 5.0, 3.0, 1.0]).tolist() == [True, False, True, True]
    assert deploy_variants(0.5, [1.0]).tolist() == [False]


def test_default_deployment():
    sc = presets("TieredService")["default"]
    d = dict(zip(sc.node_names(), sc.deployment()))
    v = {name: i for i, name in enumerate(sc.variants)}
    assert d["2xh100-sxm"][v["qwen2.5-72b"]] and not d["a100-80gb"][v["qwen2.5-72b"]]
    assert d["a100-80gb"][v["qwen2.5-32b"]]
    assert d["t4"].tolist() == [name == "qwen2.5-7b" for name in sc.variants]  # 14.2 GiB of 14.4 usable
    assert not d["rpi5"][v["qwen2.5-7b"]]


def test_path_time_counts_latency_both_ways_and_bytes_per_hop():
    links = [LinkSpec("a", 8e6, 0.01), LinkSpec("b", 16e6, 0.002)]
    # 250 tokens x 4 bytes = 1000 bytes: 2 x 0.01 + 1 ms, then 2 x 0.002 + 0.5 ms
    assert path_time_s(links, 200, 50, 4.0) == pytest.approx(0.021 + 0.0045)


def test_multi_gpu_node_scales_memory_and_rates():
    one, two = get_device("h100-sxm"), parse_node("2xh100-sxm")
    assert two.mem_bytes == 2 * one.mem_bytes and two.mem_bw_Bps == 2 * one.mem_bw_Bps
    assert two.peak_flops == 2 * one.peak_flops and parse_node("h100-sxm") == one


# --------------------------------------------------------------- scenarios
def test_yaml_file_equals_the_default_preset():
    path = os.path.join(ROOT, "scenarios", "tiered_service", "default.yml")
    env = gym.make(ENV_ID, scenario=path)
    assert env.unwrapped.scenario == presets("TieredService")["default"]


@pytest.mark.parametrize("scenario,field", [
    ({"n_window": 5}, "n_window"),
    ({"users_per_window": -3}, "users_per_window"),
    ({"n_windows": 0}, "n_windows"),
    ({"end_devices": ["abacus"]}, r"end_devices\[0\]"),
    ({"cloud_servers": ["0xh100-sxm"]}, r"cloud_servers\[0\]"),
    ({"variants": ["opt-125m"]}, r"variants\[0\]"),  # no accuracy score
    ({"variants": ["qwen2.5-72b"], "cloud_servers": ["h100-sxm"]}, r"variants\[0\]"),  # fits nowhere
    ({"variants": []}, "variants"),
    ({"edge_path": ["carrier-pigeon"]}, r"edge_path\[0\]"),
    ({"tpot_max_s": 0.001}, "tpot_max_s"),
    ({"min_accuracy_high": 0.95}, "min_accuracy_high"),
    ({"window_s": 0.0}, "window_s"),
    ({"mem_reserve_share": 1.0}, "mem_reserve_share"),
    ({"workload": {"prompt_median": -1.0}}, r"workload\.prompt_median"),
    ({"bits": 3}, "bits"),
    ({"end_devices": [], "edge_servers": [], "cloud_servers": []}, "end_devices"),
])
def test_bad_scenarios_raise_naming_the_field(scenario, field):
    with pytest.raises(ValueError, match=field):
        gym.make(ENV_ID, scenario=scenario)


# --------------------------------------------------------- baseline pins
@pytest.fixture(scope="module")
def default_runs():
    out = {}
    for name in ("gus", "random", "always-cloud", "nearest-tier", "highest-accuracy", "fastest-variant"):
        env = gym.make(ENV_ID)
        out[name] = [run_episode(env, make_policy(ENV_ID, name), seed) for seed in range(2)]
    return out


def mean(runs, key):
    return float(np.mean([r[key] for r in runs]))


def test_always_cloud_serves_only_the_cloud(default_runs):
    assert mean(default_runs["always-cloud"], "share_cloud") + mean(default_runs["always-cloud"], "rejected_share") \
        == pytest.approx(1.0)


def test_nearest_tier_meets_accuracy_and_starts_at_the_end_tier(default_runs):
    runs = default_runs["nearest-tier"]
    assert mean(runs, "accuracy_miss_share") == 0.0 and mean(runs, "share_end") > 0.1
    assert mean(runs, "deadline_miss_share") > 0.2  # it never looks at the deadline


def test_highest_accuracy_serves_the_most_accurate_models(default_runs):
    best = mean(default_runs["highest-accuracy"], "mean_accuracy_served")
    assert all(best > mean(runs, "mean_accuracy_served") for name, runs in default_runs.items()
               if name != "highest-accuracy")


def test_fastest_variant_is_fastest_and_ignores_accuracy(default_runs):
    fast = mean(default_runs["fastest-variant"], "mean_latency_s")
    assert all(fast < mean(runs, "mean_latency_s") for name, runs in default_runs.items() if name != "fastest-variant")
    assert mean(default_runs["fastest-variant"], "accuracy_miss_share") > 0.5


def test_gus_satisfies_everyone_it_serves_and_beats_every_baseline(default_runs):
    gus = default_runs["gus"]
    assert mean(gus, "deadline_miss_share") == 0.0 and mean(gus, "accuracy_miss_share") == 0.0
    for name, runs in default_runs.items():
        if name != "gus":
            assert mean(gus, "satisfied_share") > mean(runs, "satisfied_share"), name


def test_baselines_pick_by_their_rule_on_the_first_user():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    st, m = u.state, u.n_variants
    for name in ("always-cloud", "highest-accuracy", "fastest-variant", "nearest-tier"):
        policy = make_policy(ENV_ID, name)
        policy.reset(env, seed=0)
        a = policy.act(obs, info)
        assert info["action_mask"][a]
        if a == u.reject_action:
            continue
        n, v = divmod(a, m)
        if name == "always-cloud":
            assert st.node_tier[n] == 2
        elif name == "highest-accuracy":
            assert st.accuracy[v] == st.accuracy[st.deployed.any(axis=0)].max()
        elif name == "fastest-variant":
            est = np.where(info["action_mask"][:-1], (st.net_s[0][:, None] + st.compute_s[0]).ravel(), np.inf)
            assert a == int(np.argmin(est))
        else:
            assert st.accuracy[v] >= st.min_accuracy[0]
            assert st.node_tier[n] == min(st.node_tier[(st.deployed & (st.accuracy >= st.min_accuracy[0])).any(1)])


def test_window_users_are_presented_tightest_deadline_first_unless_asked_otherwise():
    env = gym.make("edgellm_gym/TieredService-v0")
    env.reset(seed=3)
    st = env.unwrapped.state
    k = st.users_per_window
    by_window = st.deadline_s.reshape(-1, k)
    assert np.all(np.diff(by_window, axis=1) >= 0)
    env = gym.make("edgellm_gym/TieredService-v0", scenario={"user_order": "arrival"})
    env.reset(seed=3)
    assert not np.all(np.diff(env.unwrapped.state.deadline_s.reshape(-1, k), axis=1) >= 0)


def test_earning_pairs_are_the_observation_flags_and_smallest_earning_follows_its_rule():
    """env.earning_pairs() is the observation's 'earns +1 now' block; the smallest-earning baseline
    serves only such pairs (so every serve earns +1), the least accurate one, else it rejects."""
    env = gym.make(ENV_ID, scenario=MEDIUM)
    u = env.unwrapped
    n, m = u.n_nodes, u.n_variants
    policy = make_policy(ENV_ID, "smallest-earning")
    obs, info = env.reset(seed=2)
    policy.reset(env, seed=2)
    served = 0
    while True:
        earns = u.earning_pairs()
        assert np.array_equal(obs[len(obs) - n * m:] == 1, earns.ravel())
        a = policy.act(obs, info)
        if earns.any():
            nodes, variants = np.nonzero(earns)
            assert a != u.reject_action and earns.ravel()[a]
            assert u.state.accuracy[a % m] == u.state.accuracy[variants].min()
        else:
            assert a == u.reject_action
        obs, r, term, trunc, info = env.step(a)
        if a != u.reject_action:
            served += 1
            assert r == 1.0
        if term or trunc:
            break
    assert served > 20 and not u.earning_pairs().any()
    with pytest.raises(RuntimeError, match="reset"):
        gym.make(ENV_ID).unwrapped.earning_pairs()
