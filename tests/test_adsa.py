"""ADSA's decision rule on hand-computed queues (DESIGN 4.1), and the classic schedulers."""

import gymnasium as gym
import numpy as np
import pytest

import edgellm_gym  # noqa: F401
from baselines import make_policy, policies_for
from baselines.adsa import adsa_order, adsa_pick

FAR = 1e6


def test_adsa_sorts_by_arrival_when_transmission_times_are_alike():
    arrival, trans = np.array([2.0, 0.0, 1.0]), np.array([0.01, 0.05, 0.02])  # spread 0.04 < 0.1 s
    assert adsa_order(arrival, trans).tolist() == [1, 2, 0]
    assert adsa_pick(3.0, arrival, [1, 1, 1], trans, [FAR] * 3) == 1


def test_adsa_reorders_by_transmission_longest_first_when_spread_is_large():
    arrival, trans = np.array([0.0, 1.0, 2.0]), np.array([0.05, 0.5, 0.2])  # spread 0.45 s
    assert adsa_order(arrival, trans).tolist() == [1, 2, 0]
    assert adsa_pick(3.0, arrival, [1, 1, 1], trans, [FAR] * 3) == 1


def test_adsa_transmission_sort_is_stable_on_ties():
    assert adsa_order(np.array([0.0, 1, 2]), np.array([0.3, 0.0, 0.3])).tolist() == [0, 2, 1]


def test_adsa_runs_the_negative_slack_task_first():
    # arrival order; C = [5.01, 10.01, 11.01]; slack = [94.99, 89.99, 6 - 11.01 = -5.01]
    pick = adsa_pick(0.0, [0, 1, 2], [5, 5, 1], [0.01, 0.01, 0.01], [100, 100, 6])
    assert pick == 2


def test_adsa_runs_the_most_negative_slack_when_several_are_late():
    # C = [2.0, 4.0, 6.0]; slack = [1 - 2 = -1, 10 - 4 = 6, 3 - 6 = -3] -> task 2
    assert adsa_pick(0.0, [0, 1, 2], [2, 2, 2], [0.0, 0.0, 0.0], [1, 10, 3]) == 2


def test_adsa_preempts_the_running_head_for_an_urgent_arrival():
    # task 0 runs (head, 8 s left, loose deadline); task 1 just arrived, 1 s of work, due in 4 s:
    # C_1 = 8 + 1 + 0.01 > 4 so slack_1 < 0 -> ADSA switches to task 1 (a preemption)
    assert adsa_pick(10.0, [0.0, 10.0], [8.0, 1.0], [0.01, 0.01], [100.0, 14.0]) == 1


def test_adsa_slack_counts_time_already_elapsed():
    # same queue later: deadlines 5 s away; C_0 = 4.0 + 0 <= 5, C_1 = 8 > 5.5 -> slack_1 < 0
    assert adsa_pick(95.0, [0, 1], [4, 4], [0, 0], [100, 100.5]) == 1
    assert adsa_pick(0.0, [0, 1], [4, 4], [0, 0], [100, 100.5]) == 0


def _decision_with(env, seed, queue_len):
    obs, info = env.reset(seed=seed)
    st = env.unwrapped.state
    for _ in range(1000):
        if len(st.queue) == queue_len:
            return info
        obs, r, term, trunc, info = env.step(0)
        if term:
            obs, info = env.reset()
    raise AssertionError("no decision with that queue length")


def test_picking_another_task_preempts_and_charges_the_reload():
    env = gym.make("edgellm_gym/DeviceScheduling-v0")
    _decision_with(env, 0, 2)
    st = env.unwrapped.state
    running = st.running if st.running >= 0 else st.queue[0]
    env.step(st.queue.index(running))  # keep it running until the next event
    while len(st.queue) < 2 or st.running < 0:
        env.step(0)
    before = st.remaining_s[st.running]
    other = next(i for i, t in enumerate(st.queue) if t != st.running)
    preempted = st.running
    env.step(other)
    assert env.unwrapped._preemptions == 1
    assert st.remaining_s[preempted] == pytest.approx(before + st.reload_s[preempted])


def test_fcfs_keeps_the_running_task_and_srtf_picks_the_shortest():
    env = gym.make("edgellm_gym/DeviceScheduling-v0")
    info = _decision_with(env, 1, 3)
    st = env.unwrapped.state
    srtf = make_policy("edgellm_gym/DeviceScheduling-v0", "srtf")
    srtf.reset(env)
    assert st.queue[srtf.act(None, info)] == st.queue[int(np.argmin(st.remaining_s[st.queue]))]
    fcfs = make_policy("edgellm_gym/DeviceScheduling-v0", "fcfs")
    fcfs.reset(env)
    assert st.queue[fcfs.act(None, info)] == (st.running if st.running >= 0 else st.queue[0])


def test_every_scheduler_is_registered_with_adsa_as_reference():
    found = policies_for("edgellm_gym/DeviceScheduling-v0")
    assert set(found) == {"adsa", "fcfs", "srtf", "edf", "llf", "random"}
    assert found["adsa"][1] == "reference" and next(iter(found)) == "adsa"
