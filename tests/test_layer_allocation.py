"""LayerAllocation-v0: invariants under random valid and invalid actions, task accounting, timing,
payment rules, scenario validation, and what each baseline policy does."""

from __future__ import annotations

import dataclasses
import itertools

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

import edgellm_gym  # noqa: F401
from baselines.allocation import PerformanceDriven, StaticOrder, hexgen_fitness, hexgen_plan, pipeedge_plan
from baselines.base import make_policy, policies_for
from edgellm_gym.envs.layer_allocation import (
    ALLOCATED, REJECTED_BY_POLICY, REJECTED_NO_CAPACITY, LayerAllocationScenario)
from edgellm_gym.scenario import presets
from edgellm_gym.workload import workload_preset

ENV_ID = "edgellm_gym/LayerAllocation-v0"
SMALL = presets("LayerAllocation")["small"]


def make(scenario=SMALL, **kw):
    return gym.make(ENV_ID, scenario=scenario, **kw)


def small(**changes):
    return dataclasses.replace(SMALL, **changes)


def burst(n_tasks=4, **changes):
    """Every task arrives within a few milliseconds: they contend for memory and devices."""
    return small(n_tasks=n_tasks, workload=workload_preset("azure-conv-2023", rate_per_s=1000.0), **changes)


def run(env, policy, seed=0):
    obs, info = env.reset(seed=seed)
    policy.reset(env, seed=seed)
    total = 0.0
    while True:
        obs, r, term, trunc, info = env.step(policy.act(obs, info))
        total += r
        assert env.unwrapped.invariant_violations() == []
        if term or trunc:
            return total, info


# ------------------------------------------------------------------ invariants
@settings(max_examples=25, deadline=None)
@given(seed=hst.integers(0, 10_000), actions=hst.lists(hst.integers(0, 3), max_size=60),
       rule=hst.sampled_from(["fcim", "pay_as_bid"]))
def test_invariants_hold_under_random_valid_and_invalid_actions(seed, actions, rule):
    env = make(small(n_tasks=8, payment_rule=rule))
    u = env.unwrapped
    obs, info = env.reset(seed=seed)
    done = False
    for a in actions + [None] * 100:  # then finish the episode with the first valid device
        if a is None:
            a = int(np.flatnonzero(info["action_mask"])[0])
        valid = bool(info["action_mask"][a])
        before = obs
        obs, r, term, trunc, info = env.step(a)
        assert u.invariant_violations() == []
        assert info["action_mask"][-1]  # rejecting is always possible
        assert env.observation_space.contains(obs)
        assert np.all(u.state.free_bytes >= 0) and np.all(u.state.free_bytes <= u.state.capacity_bytes)
        if not valid:
            assert info["invalid_action"] and np.array_equal(obs, before)
        if term or trunc:
            done = term
            break
    assert done
    outcomes = u._outcome
    assert set(outcomes.tolist()) <= {ALLOCATED, REJECTED_BY_POLICY, REJECTED_NO_CAPACITY}
    m = info["episode_metrics"]
    assert m["tasks_allocated"] + m["tasks_no_feasible_allocation"] == 8
    assert m["tasks_allocated"] == np.sum(outcomes == ALLOCATED)


def test_memory_is_freed_when_a_task_completes():
    env = make(small(n_tasks=5, workload=workload_preset("azure-conv-2023", rate_per_s=1e-4)))
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    policy = StaticOrder()
    policy.reset(env)
    while True:
        if not u.state.chain:  # tasks are hours apart: every earlier task has completed
            assert np.array_equal(u.state.free_bytes, u.state.capacity_bytes)
        obs, r, term, trunc, info = env.step(policy.act(obs, info))
        if term:
            break
    assert info["episode_metrics"]["tasks_allocated"] == 5
    assert info["episode_metrics"]["mean_wait_s"] == 0.0


def test_tasks_that_do_not_fit_the_free_memory_are_rejected_with_that_reason():
    # small: 2 x RTX 4090 (41 layers) + T4 (27): two 48-layer tasks fit at once, a third does not
    _, info = run(make(burst()), StaticOrder())
    assert info["episode_metrics"]["tasks_allocated"] == 2
    assert info["episode_metrics"]["tasks_rejected_no_capacity"] == 2


def test_a_task_waits_for_a_busy_device_and_completes_after_its_compute_and_communication():
    env = make(burst(n_tasks=2))
    u = env.unwrapped
    obs, info = env.reset(seed=0)
    policy = StaticOrder()
    policy.reset(env)
    expected = []
    while True:
        st = u.state
        a = policy.act(obs, info)
        if st.remaining_layers <= st.bid_layers[a]:  # this device completes the task: predict its finish
            chain = st.chain + [a]
            taken = st.taken + [st.remaining_layers]
            compute = sum(st.per_layer_s[d] * k for d, k in zip(chain, taken))
            comm = sum(st.hop_s[i, j] for i, j in zip(chain, chain[1:])) + st.client_s[chain[-1]]
            start = max(st.now_s, max(st.busy_until_s[d] for d in chain))
            expected.append((start - st.now_s, start + compute + comm))
        obs, r, term, trunc, info = env.step(a)
        if term:
            break
    assert expected[0][0] == 0.0 and expected[1][0] > 0  # task 1 shares the second RTX 4090 with task 0
    assert u._wait[:2] == pytest.approx([w for w, _ in expected])
    assert u._completion[:2] == pytest.approx([c for _, c in expected])


def test_reward_of_a_placed_task_combines_latency_payment_and_devices():
    env = make(small(n_tasks=1))
    u = env.unwrapped
    obs, info = env.reset(seed=3)
    rewards = []
    while True:
        obs, r, term, trunc, info = env.step(int(np.flatnonzero(info["action_mask"])[0]))
        rewards.append(r)
        if term:
            break
    sc = u.scenario
    latency = u._completion[0] - u._arrival[0]
    expected = -(sc.w_latency * latency / u._ideal_s[0] + sc.w_payment * u._payment[0] / u._budget[0]
                 + sc.w_devices * u._n_used[0]) - sc.miss_penalty * (u._completion[0] > u._deadline[0])
    assert rewards[:-1] == [0.0] * (len(rewards) - 1)
    assert rewards[-1] == pytest.approx(expected)


def test_rejecting_costs_the_penalty_and_releases_the_memory_placed_so_far():
    env = make(small(n_tasks=1))
    obs, info = env.reset(seed=0)
    env.step(0)
    _, r, term, _, info = env.step(env.unwrapped.n_devices)
    assert term and r == -SMALL.reject_penalty
    assert env.unwrapped._outcome[0] == REJECTED_BY_POLICY
    assert np.array_equal(env.unwrapped.state.free_bytes, env.unwrapped.state.capacity_bytes)


def test_pay_as_bid_pays_each_device_its_price_for_the_layers_it_took():
    _, info = run(make(small(payment_rule="pay_as_bid")), make_policy(ENV_ID, "random"), seed=1)
    assert info["episode_metrics"]["positive_utility_share"] == 1.0
    _, info_fcim = run(make(small(payment_rule="fcim")), make_policy(ENV_ID, "random"), seed=1)
    assert info_fcim["episode_metrics"]["total_payment_usd"] != info["episode_metrics"]["total_payment_usd"]


# ------------------------------------------------------------------ scenarios
def test_default_yaml_file_loads_and_equals_the_default_preset():
    env = gym.make(ENV_ID, scenario="scenarios/layer_allocation/default.yml")
    assert env.unwrapped.scenario == presets("LayerAllocation")["default"]


@pytest.mark.parametrize("preset", ["default", "small", "jetson"])
def test_presets_split_every_task_over_two_devices_or_more(preset):
    _, info = run(make(presets("LayerAllocation")[preset]), make_policy(ENV_ID, "performance"))
    assert info["episode_metrics"]["devices_per_task"] >= 2.0
    assert info["episode_metrics"]["tasks_allocated"] > 0


@pytest.mark.parametrize("changes, field", [
    ({"n_task": 3}, "n_task"),
    ({"n_tasks": 0}, "n_tasks"),
    ({"devices": [], "price_usd_per_h": []}, "devices"),
    ({"devices": ["rtx4090", "gpu-x"], "price_usd_per_h": [1.0, 1.0]}, "gpu-x"),
    ({"price_usd_per_h": [0.4]}, "price_usd_per_h"),
    ({"price_usd_per_h": [0.4, -1.0, 0.3]}, "price_usd_per_h"),
    ({"devices": ["t4", "rtx4090"], "price_usd_per_h": [0.0, 0.4]}, "price_usd_per_h"),  # a zero budget
    ({"model": "gpt-5"}, "gpt-5"),
    ({"devices": ["orin-nano-8gb"], "price_usd_per_h": [0.01]}, "devices"),  # 14B fits nowhere
    ({"payment_rule": "vcg"}, "payment_rule"),
    ({"mem_usable_fraction": 0.0}, "mem_usable_fraction"),
    ({"link_bw_bps": -1.0}, "link_bw_bps"),
    ({"slack_min": 0.5}, "slack_min"),
    ({"budget_max": 0.5}, "budget_max"),
    ({"reject_penalty": -1.0}, "reject_penalty"),
    ({"workload": {"rate_per_s": -2.0}}, "rate_per_s"),
])
def test_bad_scenarios_raise_naming_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        make(changes)


# ------------------------------------------------------------------ policies
def test_all_six_policies_are_registered_with_fcim_as_the_reference():
    found = policies_for(ENV_ID)
    assert set(found) == {"fcim", "static", "performance", "pipeedge", "hexgen", "random"}
    assert found["fcim"][1] == "reference" and list(found)[0] == "fcim"


def test_static_takes_the_first_device_with_room_and_performance_the_fastest_per_layer():
    env = make(small(devices=("t4", "rtx4090", "rtx4090"), price_usd_per_h=(0.35, 0.4, 0.4)))
    obs, info = env.reset(seed=0)
    static, perf = StaticOrder(), PerformanceDriven()
    static.reset(env)
    perf.reset(env)
    assert static.act(obs, info) == 0
    assert perf.act(obs, info) == 1
    obs, _, _, _, info = env.step(1)
    assert static.act(obs, info) == 0 and perf.act(obs, info) == 2


def test_fcim_rejects_tasks_whose_bids_are_all_over_budget():
    _, info = run(make(small(budget_min=0.01, budget_max=0.01)), make_policy(ENV_ID, "fcim"))
    m = info["episode_metrics"]
    assert m["tasks_allocated"] == 0 and m["tasks_rejected_no_capacity"] == 0
    assert m["tasks_no_feasible_allocation"] == SMALL.n_tasks


def _bottleneck(plan, per_layer_s, caps, hop_s, client_s, remaining, prev=-1):
    stages, left, src = [], remaining, prev
    for i, d in enumerate(plan):
        k = min(caps[d], left)
        stages.append(per_layer_s[d] * k + (hop_s[src, d] if src >= 0 else 0.0)
                      + (client_s[d] if i == len(plan) - 1 else 0.0))
        left, src = left - k, d
    assert left == 0
    return max(stages)


@pytest.mark.parametrize("seed", range(20))
def test_pipeedge_plan_minimises_the_slowest_stage_over_device_subsequences(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6))
    per_layer_s = rng.uniform(0.01, 0.1, n)
    caps = rng.integers(0, 12, n)
    hop_s = rng.uniform(0, 0.3, (n, n)) * (1 - np.eye(n))
    client_s = rng.uniform(0, 0.2, n)
    remaining = int(rng.integers(1, max(caps.sum(), 1) + 1))
    prev = int(rng.integers(-1, n))
    order = [int(d) for d in np.lexsort((np.arange(n), per_layer_s)) if caps[d] > 0]
    best = np.inf
    for mask in itertools.product([0, 1], repeat=len(order)):  # brute force: every subsequence
        plan = [d for d, keep in zip(order, mask) if keep]
        # a plan is valid when every device but the last takes all its caps and the last takes >= 1
        if plan and sum(caps[plan[:-1]]) < remaining <= sum(caps[plan]):
            best = min(best, _bottleneck(plan, per_layer_s, caps, hop_s, client_s, remaining, prev))
    plan = pipeedge_plan(per_layer_s, caps, hop_s, client_s, remaining, prev)
    if caps.sum() < remaining:
        assert plan == []
    else:
        assert _bottleneck(plan, per_layer_s, caps, hop_s, client_s, remaining, prev) == pytest.approx(best)


def test_hexgen_finds_the_fastest_ordered_split_on_a_small_instance():
    rng = np.random.default_rng(7)
    n = 4
    per_layer_s = np.array([0.02, 0.05, 0.03, 0.08])
    caps = np.array([10, 20, 8, 30])
    hop_s = rng.uniform(0.05, 0.4, (n, n)) * (1 - np.eye(n))
    client_s = np.array([0.1, 0.3, 0.2, 0.05])
    wait = np.array([0.5, 0.0, 0.0, 0.2])
    remaining = 24
    # brute force over every order of the devices (the decoder uses the shortest covering prefix)
    keys = np.array([np.argsort(p) for p in itertools.permutations(range(n))], dtype=float)
    best = hexgen_fitness(keys, per_layer_s, caps, hop_s, client_s, wait, remaining).min()
    plan = hexgen_plan(np.random.default_rng(0), per_layer_s, caps, hop_s, client_s, wait, remaining)
    got = hexgen_fitness(np.argsort(plan + [d for d in range(n) if d not in plan])[None, :].astype(float),
                         per_layer_s, caps, hop_s, client_s, wait, remaining)[0]
    assert got == pytest.approx(best)
    assert sum(min(caps[d], remaining - sum(caps[plan[:i]])) for i, d in enumerate(plan)) == remaining


def test_hexgen_is_reproducible_from_the_policy_seed():
    a = run(make(), make_policy(ENV_ID, "hexgen"), seed=4)[1]["episode_metrics"]
    b = run(make(), make_policy(ENV_ID, "hexgen"), seed=4)[1]["episode_metrics"]
    assert a == b


def test_planners_place_every_task_they_can_and_beat_random_on_completion_time():
    results = {}
    for name in ("pipeedge", "hexgen", "random"):
        results[name] = [run(make(), make_policy(ENV_ID, name), seed=s)[1]["episode_metrics"] for s in range(3)]
    for name in ("pipeedge", "hexgen"):
        assert all(m["tasks_no_feasible_allocation"] == m["tasks_rejected_no_capacity"] for m in results[name])
        assert np.mean([m["mean_completion_time_s"] for m in results[name]]) < \
            np.mean([m["mean_completion_time_s"] for m in results["random"]])
