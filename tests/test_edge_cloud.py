"""EdgeCloudOffload-v0: invariants under random and invalid actions, latency and energy accounting,
bandwidth chain and trace, scenario validation, and behaviour pins of the baselines."""

import dataclasses
import os

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgellm_gym  # noqa: F401
from baselines import make_policy, policies_for
from edgellm_gym.envs.edge_cloud import EdgeCloudScenario, markov_level_cdfs
from edgellm_gym.scenario import presets
from training.benchmark import run_episode

ENV_ID = "edgellm_gym/EdgeCloudOffload-v0"
ROOT = os.path.dirname(os.path.dirname(__file__))
TRACE = os.path.join(ROOT, "scenarios", "edge_cloud", "bandwidth_example.csv")
PRESETS = presets("EdgeCloudOffload")


def small(**changes) -> EdgeCloudScenario:
    return dataclasses.replace(PRESETS["small"], **changes)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), actions=st.lists(st.integers(0, 2), min_size=1, max_size=150),
       trace=st.booleans(), mem_gib=st.sampled_from([0.0, 16.0]), rate=st.sampled_from([0.2, 1.5, 6.0]))
def test_invariants_hold_under_random_and_invalid_actions(seed, actions, trace, mem_gib, rate):
    sc = small(bw_trace_path=TRACE if trace else "", edge_mem_bytes=mem_gib * 2**30,
               workload=dataclasses.replace(PRESETS["small"].workload, rate_per_s=rate))
    env = gym.make(ENV_ID, scenario=sc)
    obs, info = env.reset(seed=seed)
    u = env.unwrapped
    now = info["now_s"]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        assert u.invariant_violations() == []
        assert env.observation_space.contains(obs) and np.isfinite(r)
        assert info["now_s"] >= now
        now = info["now_s"]
        if info["invalid_action"]:
            assert r == -1.0
        else:
            assert info["dispatched"]["energy_j"] >= 0 and info["dispatched"]["latency_s"] > 0
        if term or trunc:
            c = u.counts()
            if term:  # every request dispatched and, by the last step, completed
                assert c["dispatched"] == c["completed"] == 40 and c["in_servers"] == 0
            obs, info = env.reset()
            now = info["now_s"]


def test_return_is_minus_the_weighted_energy_and_the_miss_penalties():
    env = gym.make(ENV_ID)
    for name in ("always-cloud", "greedy-latency"):
        rec = run_episode(env, make_policy(ENV_ID, name), seed=4)
        sc, n = env.unwrapped.scenario, 600  # default weights are all 1: weighted = unweighted energy
        misses = n - rec["deadline_satisfaction"] * n
        expected = -rec["energy_per_request_j"] * n / sc.energy_scale_j - sc.miss_penalty * misses
        assert rec["return"] == pytest.approx(expected, rel=1e-9)


def test_latency_is_upload_wait_compute_download_and_matches_the_outcome():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=1)
    s = env.unwrapped.state
    for step in range(200):
        assert np.allclose(s.latency_s, s.upload_s + s.wait_s + s.compute_s + s.download_s)
        assert np.all(s.compute_s[s.n_edge] < s.compute_s[: s.n_edge])  # the A100 outruns a Xeon CPU
        a = int(np.flatnonzero(info["action_mask"])[step % int(info["action_mask"].sum())])
        predicted, energy = float(s.latency_s[a]), float(s.energy_j[a])
        obs, r, term, trunc, info = env.step(a)
        assert info["dispatched"]["latency_s"] == predicted and info["dispatched"]["energy_j"] == energy


def test_a_busy_server_makes_the_next_request_wait_for_it():
    env = gym.make(ENV_ID, scenario=small(bw_levels=(1.0,), workload=dataclasses.replace(
        PRESETS["small"].workload, rate_per_s=50.0)))  # arrivals 20 ms apart: the cloud is still busy
    obs, info = env.reset(seed=0)
    s = env.unwrapped.state
    now0, up0, wait0, comp0 = s.now_s, s.upload_s[2], s.wait_s[2], s.compute_s[2]
    assert wait0 == 0.0
    env.step(2)
    end0 = now0 + up0 + comp0
    assert end0 > s.now_s
    assert s.backlog_s[2] == pytest.approx(end0 - s.now_s)
    assert s.wait_s[2] == pytest.approx(max(end0 - s.now_s - s.upload_s[2], 0.0))
    assert s.wait_s[0] == 0.0 and s.wait_s[1] == 0.0  # edge servers still idle


def test_mask_follows_the_hosted_services_and_the_cloud_is_always_valid():
    env = gym.make(ENV_ID, scenario="small")  # edge 0 hosts chat, edge 1 hosts code
    obs, info = env.reset(seed=2)
    s = env.unwrapped.state
    for _ in range(40):
        expected = [s.service == 0, s.service == 1, True]
        assert info["action_mask"].tolist() == expected
        obs, r, term, trunc, info = env.step(2)
        if term:
            break


def test_an_edge_server_whose_kv_memory_is_full_is_masked():
    # the chat model's int8 weights (6.74e9 B) plus 1 GB: room for the KV caches of about ten requests
    env = gym.make(ENV_ID, scenario=small(edge_mem_bytes=7.74e9, edge_hosts=(("chat",), ("chat",)),
                                          workload=dataclasses.replace(PRESETS["small"].workload,
                                                                       rate_per_s=20.0)))
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    s = u.state
    masked_by_memory = 0
    for _ in range(40):
        if s.service == 0 and not info["action_mask"][0]:
            masked_by_memory += 1
            assert s.free_mem_bytes[0] < u._kv[s.request]
        a = 0 if info["action_mask"][0] else 2
        obs, r, term, trunc, info = env.step(a)
        assert u.invariant_violations() == []
        if term:
            break
    assert masked_by_memory > 0


def test_requirement_is_slack_times_the_ideal_latency_on_the_fastest_server():
    env = gym.make(ENV_ID, scenario=small(bw_levels=(1.0,)))
    obs, info = env.reset(seed=3)
    s, sc = env.unwrapped.state, env.unwrapped.scenario
    ideal = s.upload_s + s.compute_s + s.download_s  # empty servers, nominal bandwidth at the first request
    hosted = np.r_[info["action_mask"][:-1], True]
    assert s.requirement_s == pytest.approx(sc.services[s.service].slack * ideal[hosted].min())


def test_markov_level_chain_rows_are_the_stated_transition_probabilities():
    cdf = markov_level_cdfs(3, 0.9, max_steps=4)
    p1 = np.diff(np.concatenate([np.zeros((3, 1)), cdf[1]], axis=1), axis=1)
    assert np.allclose(p1, [[0.9, 0.1, 0.0], [0.05, 0.9, 0.05], [0.0, 0.1, 0.9]])
    assert np.array_equal(cdf[0], np.triu(np.ones((3, 3))))  # P^0 = I
    assert np.all(cdf[..., -1] == 1.0)


def test_bandwidth_moves_between_its_levels_over_an_episode():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=0)
    u = env.unwrapped
    seen = set()
    for _ in range(300):
        seen.add(round(float(u.state.bw_bps[-1] / u._nominal_bps[-1]), 9))
        obs, r, term, trunc, info = env.step(u.state.n_edge)
    assert seen == {0.2, 0.5, 1.0}


def test_trace_bandwidth_takes_only_trace_values():
    from edgellm_gym.envs.edge_cloud import load_bandwidth_trace

    t, e, c = load_bandwidth_trace(TRACE)
    env = gym.make(ENV_ID, scenario=small(bw_trace_path=TRACE))
    obs, info = env.reset(seed=0)
    s = env.unwrapped.state
    for _ in range(40):
        assert set(s.bw_bps[:-1]) <= set(e) and s.bw_bps[-1] in set(c)
        obs, r, term, trunc, info = env.step(2)
        if term:
            break


def test_yaml_file_equals_the_default_preset():
    env = gym.make(ENV_ID, scenario=os.path.join(ROOT, "scenarios", "edge_cloud", "default.yml"))
    assert env.unwrapped.scenario == PRESETS["default"]


def test_default_uses_xeon_edge_servers_an_a100_cloud_and_6b_to_33b_models():
    from edgellm_gym.catalog import get_model
    from edgellm_gym.costs import total_params

    sc = PRESETS["default"]
    assert sc.edge_device == "xeon-gold-6248" and sc.cloud_device == "a100-80gb"
    assert all(6e9 <= total_params(get_model(s.model)) <= 33e9 for s in sc.services)


@pytest.mark.parametrize("scenario,field", [
    ({"n_edges": 3}, "n_edges"),
    ({"n_edge": 0}, "n_edge"),
    ({"n_edge": 3}, "edge_hosts"),  # six host lists for three servers
    ({"edge_hosts": [["chat"], ["chat"], ["chat"], ["chat"], ["chat"], ["translate"]]}, r"edge_hosts\[5\]"),
    ({"edge_mem_bytes": 8.0e9}, r"edge_hosts\[0\]"),  # llama-2-7b int8 + qwen2.5-14b int8 do not fit in 8 GB
    ({"edge_mem_bytes": -1.0}, "edge_mem_bytes"),
    ({"cloud_gpus": 0}, "cloud_gpus"),
    ({"bw_levels": [0.5, -1.0]}, "bw_levels"),
    ({"bw_levels": [1.0, 0.5]}, "bw_levels"),
    ({"bw_stay_prob": 1.5}, "bw_stay_prob"),
    ({"bw_trace_path": "no/such.csv"}, "bw_trace_path"),
    ({"services": []}, "services"),
    ({"services": [{"name": "a", "slack": 0.5}]}, r"services\[0\]\.slack"),
    ({"services": [{"name": "a", "model": "gpt-5"}]}, "gpt-5"),
    ({"services": [{"name": "a", "share": 0.0}]}, "share"),
    ({"energy_scale_j": 0.0}, "energy_scale_j"),
    ({"w_idle": -1.0}, "w_idle"),
    ({"edge_device": "abacus"}, "abacus"),
    ({"workload": {"rate_per_s": -1.0}}, r"workload\.rate_per_s"),
    ("no-such-preset", "no-such-preset"),
])
def test_bad_scenarios_raise_naming_the_field(scenario, field):
    with pytest.raises(ValueError, match=field):
        gym.make(ENV_ID, scenario=scenario)


def test_bandwidth_trace_with_wrong_columns_raises(tmp_path):
    bad = tmp_path / "bw.csv"
    bad.write_text("time,bps\n0,1e6\n")
    with pytest.raises(ValueError, match="time_s, edge_bps, cloud_bps"):
        gym.make(ENV_ID, scenario={"bw_trace_path": str(bad)})


# --------------------------------------------------------------- baselines
def _episode(name, seed=0, scenario=None):
    env = gym.make(ENV_ID, **({"scenario": scenario} if scenario else {}))
    return run_episode(env, make_policy(ENV_ID, name), seed)


def test_every_policy_is_registered_with_its_kind():
    found = {name: kind for name, (_, kind) in policies_for(ENV_ID).items()}
    assert found == {"cs-ucb": "reference", "random": "baseline", "round-robin": "baseline",
                     "always-cloud": "baseline", "always-edge": "baseline", "greedy-latency": "baseline",
                     "greedy-energy": "baseline"}


def test_always_cloud_sends_everything_to_the_cloud_and_always_edge_nothing_when_all_are_hosted():
    assert _episode("always-cloud")["cloud_share"] == 1.0
    assert _episode("always-edge")["cloud_share"] == 0.0  # every default service has an edge host


def test_always_edge_picks_the_least_loaded_valid_edge_server():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=1)
    policy = make_policy(ENV_ID, "always-edge")
    policy.reset(env, 1)
    s = env.unwrapped.state
    for _ in range(50):
        a = policy.act(obs, info)
        valid_edge = np.flatnonzero(info["action_mask"][:-1])
        assert a in valid_edge and s.backlog_s[a] == s.backlog_s[valid_edge].min()
        obs, r, term, trunc, info = env.step(a)


def test_round_robin_cycles_through_the_valid_servers():
    env = gym.make(ENV_ID, scenario="small")
    obs, info = env.reset(seed=0)
    policy = make_policy(ENV_ID, "round-robin")
    policy.reset(env, 0)
    prev = -1
    for _ in range(30):
        a = policy.act(obs, info)
        # the first valid action after the previous one, cyclically
        order = [(prev + 1 + j) % 3 for j in range(3)]
        assert a == next(x for x in order if info["action_mask"][x])
        prev = a
        obs, r, term, trunc, info = env.step(a)


def test_greedy_policies_take_the_argmin_of_their_criterion():
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=2)
    lat, en = make_policy(ENV_ID, "greedy-latency"), make_policy(ENV_ID, "greedy-energy")
    lat.reset(env, 2), en.reset(env, 2)
    s = env.unwrapped.state
    for _ in range(100):
        valid = info["action_mask"]
        assert s.latency_s[lat.act(obs, info)] == s.latency_s[valid].min()
        assert s.energy_j[en.act(obs, info)] == s.energy_j[valid].min()
        obs, r, term, trunc, info = env.step(lat.act(obs, info))


def test_greedy_energy_is_always_cloud_on_the_default_preset():
    # an A100 spends far less energy per request than a Xeon CPU: the energy-greedy rule never offloads
    assert _episode("greedy-energy", seed=1)["cloud_share"] == 1.0


def test_offloading_to_the_edge_raises_throughput_over_always_cloud_on_the_default_preset():
    mean = {p: np.mean([_episode(p, s)["throughput_rps"] for s in range(2)])
            for p in ("cs-ucb", "greedy-latency", "always-cloud", "random")}
    assert mean["greedy-latency"] > mean["always-cloud"]
    assert mean["cs-ucb"] > mean["always-cloud"] > mean["random"]
