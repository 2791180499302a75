"""The short form of `edgellm-gym stress` (10^4 steps per env, every preset, 10% masked actions)."""

import pytest

import edgellm_gym
from training.stress import fuzz_presets, stress_env


@pytest.mark.parametrize("env_id", edgellm_gym.ENV_IDS)
def test_ten_thousand_fuzzed_steps_break_nothing(env_id):
    report = stress_env(env_id, steps=10_000, invalid_share=0.1, seed=0)
    assert report.ok, report.first_problems
    assert report.steps == 10_000 and report.invalid_actions > 0
    assert report.episodes >= 1 and len(fuzz_presets(env_id)) >= 2


def test_stress_reports_a_broken_invariant(monkeypatch):
    from edgellm_gym.envs.device_scheduling import DeviceSchedulingEnv

    monkeypatch.setattr(DeviceSchedulingEnv, "invariant_violations", lambda self: ["planted"])
    report = stress_env("edgellm_gym/DeviceScheduling-v0", steps=50, scenarios=["small"])
    assert not report.ok and report.invariant_breaks == 50 and "planted" in report.first_problems[0]
