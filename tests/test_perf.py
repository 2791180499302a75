"""`edgellm-gym perf`: the measuring functions run, and `--detail`'s split accounts for a step."""

import pytest

from training.perf import step_split, steps_per_second


@pytest.mark.parametrize("env_id", ["CartPole-v1", "edgellm_gym/DeviceScheduling-v0"])
def test_step_split_reports_positive_times_per_step(env_id):
    d = step_split(env_id, steps=300, repeats=1)
    assert set(d) == {"env_us", "draw_us", "reset_us", "steps_per_episode"}
    assert all(v > 0 for v in d.values())


def test_steps_per_second_measures_a_masked_env():
    assert steps_per_second("edgellm_gym/EdgeCloudOffload-v0", seconds=0.05) > 0
