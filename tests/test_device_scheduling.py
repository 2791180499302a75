"""DeviceScheduling-v0: invariants under random and invalid actions, reward accounting, scenarios."""

import os

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import edgellm_gym  # noqa: F401
from baselines import make_policy
from edgellm_gym.envs.device_scheduling import SchedulingScenario
from edgellm_gym.scenario import presets
from training.benchmark import run_episode

ENV_ID = "edgellm_gym/DeviceScheduling-v0"
ROOT = os.path.dirname(os.path.dirname(__file__))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), actions=st.lists(st.integers(0, 7), min_size=1, max_size=400),
       preset=st.sampled_from(["small", "strict"]), drop_expired=st.booleans())
def test_invariants_hold_under_random_and_invalid_actions(seed, actions, preset, drop_expired):
    base = presets("DeviceScheduling")[preset]
    sc = SchedulingScenario(**{**base.__dict__, "n_tasks": 40, "queue_slots": 8, "drop_expired": drop_expired})
    env = gym.make(ENV_ID, scenario=sc)
    obs, info = env.reset(seed=seed)
    now = info["now_s"]
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        assert env.unwrapped.invariant_violations() == []
        assert env.observation_space.contains(obs) and np.isfinite(r)
        assert info["now_s"] >= now
        now = info["now_s"]
        if info["invalid_action"]:
            assert r == -1.0
        if term or trunc:
            c = env.unwrapped.counts()
            if term:
                assert c["arrived"] == 40 == c["finished"] + c["dropped"]
            obs, info = env.reset()
            now = info["now_s"]


def test_fcfs_return_is_minus_queueing_time_and_miss_penalties():
    env = gym.make(ENV_ID)
    rec = run_episode(env, make_policy(ENV_ID, "fcfs"), seed=4)
    sc = env.unwrapped.scenario
    waiting = rec["mean_queueing_delay_s"] * rec["tasks_finished"]  # non-preemptive: waiting = start - arrival
    misses = rec["tasks_finished"] - rec["deadline_satisfaction"] * 200 + rec["tasks_dropped"]
    assert rec["return"] == pytest.approx(-waiting / sc.reward_time_scale_s - sc.miss_penalty * misses, rel=1e-9)


def test_every_task_is_finished_or_dropped_at_the_end():
    env = gym.make(ENV_ID, scenario="strict")
    rec = run_episode(env, make_policy(ENV_ID, "random"), seed=2)
    assert rec["tasks_finished"] + rec["tasks_dropped"] == 200


def test_srtf_completes_sooner_than_fcfs_on_the_default_preset():
    done = {p: np.mean([run_episode(gym.make(ENV_ID), make_policy(ENV_ID, p), s)["mean_completion_time_s"]
                        for s in range(3)]) for p in ("srtf", "fcfs")}
    assert done["srtf"] < done["fcfs"]


def test_yaml_file_equals_the_default_preset():
    path = os.path.join(ROOT, "scenarios", "device_scheduling", "default.yml")
    env = gym.make(ENV_ID, scenario=path)
    assert env.unwrapped.scenario == presets("DeviceScheduling")["default"]


@pytest.mark.parametrize("scenario,field", [
    ({"n_task": 5}, "n_task"),
    ({"n_tasks": -3}, "n_tasks"),
    ({"queue_slots": 0}, "queue_slots"),
    ({"slack_min": 0.5}, "slack_min"),  # a deadline before the task could finish, even alone
    ({"device": "abacus"}, "device"),
    ({"workload": {"rate_per_s": -1.0}}, "workload.rate_per_s"),
    ({"workload": {"speed": 1}}, "workload.speed"),
    ({"bits": "sixteen"}, "bits"),
    ("no-such-preset", "no-such-preset"),
    ("missing.yml", "missing.yml"),
])
def test_bad_scenarios_raise_naming_the_field(scenario, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        gym.make(ENV_ID, scenario=scenario)


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="invalid_action"):
        gym.make(ENV_ID, invalid_action="ignore")
    from edgellm_gym.envs.device_scheduling import DeviceSchedulingEnv

    with pytest.raises(ValueError, match="render_mode"):
        DeviceSchedulingEnv(render_mode="video")
