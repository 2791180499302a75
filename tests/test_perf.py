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


def test_draws_are_uniform_over_the_valid_actions():
    import numpy as np

    from training.perf import _Draws

    d = _Draws(0)
    mask = np.zeros(10, dtype=bool)
    mask[[1, 4, 9]] = True
    counts = np.bincount([d.valid(mask) for _ in range(30_000)], minlength=10)
    assert counts[~mask].sum() == 0
    assert np.all(np.abs(counts[mask] - 10_000) < 400)  # ~4.5 sigma of a binomial(30000, 1/3)
    rare = np.zeros(64, dtype=bool)
    rare[37] = True  # mostly reached through the fallback after 4 misses
    assert {d.valid(rare) for _ in range(200)} == {37}
    assert set(d.any(2) for _ in range(200)) == {0, 1}
