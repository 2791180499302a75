"""The contract every registered env keeps: Gymnasium and SB3 checkers, seeding,
invalid actions, episode metrics, rendering, pickling and vectorisation."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

import edgellm_gym

ENV_IDS = list(edgellm_gym.ENV_IDS)
SMALL = "small"  # every env registers a "small" preset for fast tests


def make(env_id, **kw):
    return gym.make(env_id, scenario=SMALL, **kw)


def rollout(env, seed, steps=200, action_seed=0):
    """Masked random actions from a fixed generator; returns the trajectory."""
    rng = np.random.default_rng(action_seed)
    obs, info = env.reset(seed=seed)
    traj = [obs.copy()]
    for _ in range(steps):
        a = int(rng.choice(np.flatnonzero(info["action_mask"])))
        obs, r, term, trunc, info = env.step(a)
        traj.append((obs.copy(), r, term, trunc))
        if term or trunc:
            obs, info = env.reset()
            traj.append(obs.copy())
    return traj


def same(a, b):
    return len(a) == len(b) and all(
        (np.array_equal(x, y) if isinstance(x, np.ndarray) else
         all(np.array_equal(p, q) for p, q in zip(x, y)))
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_env_checker_passes(env_id):
    from gymnasium.utils.env_checker import check_env

    env = make(env_id, render_mode="ansi")
    check_env(env.unwrapped, skip_render_check=False)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_env_checker_passes(env_id):
    from stable_baselines3.common.env_checker import check_env

    check_env(make(env_id).unwrapped, warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory_other_seed_differs(env_id):
    a = rollout(make(env_id), seed=3)
    b = rollout(make(env_id), seed=3)
    c = rollout(make(env_id), seed=4)
    assert same(a, b)
    assert not same(a, c)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory_in_a_fresh_process(env_id):
    code = (
        "import hashlib, gymnasium as gym, numpy as np, edgellm_gym\n"
        f"env = gym.make({env_id!r}, scenario={SMALL!r})\n"
        "rng = np.random.default_rng(0); obs, info = env.reset(seed=11); h = hashlib.sha256(obs.tobytes())\n"
        "for _ in range(150):\n"
        "    obs, r, te, tr, info = env.step(int(rng.choice(np.flatnonzero(info['action_mask']))))\n"
        "    h.update(obs.tobytes()); h.update(np.float64(r).tobytes())\n"
        "    if te or tr: obs, info = env.reset()\n"
        "print(h.hexdigest())\n"
    )
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
               for _ in range(2)}
    assert len(digests) == 1


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_action_outside_the_space_raises(env_id):
    env = make(env_id)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(env.action_space.n)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(-1)


def _state_with_a_masked_action(env, seed=0, tries=300):
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    for _ in range(tries):
        if not info["action_mask"].all():
            return obs, info
        obs, _, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        if term or trunc:
            obs, info = env.reset()
    raise AssertionError("no state with a masked action reached: the mask never masks anything")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_masked_action_is_penalized_and_changes_nothing(env_id):
    env = make(env_id, invalid_action_penalty=2.5)
    obs, info = _state_with_a_masked_action(env)
    bad = int(np.flatnonzero(~info["action_mask"])[0])
    obs2, r, term, trunc, info2 = env.step(bad)
    assert info2["invalid_action"] is True and r == -2.5 and not term
    assert np.array_equal(obs, obs2)
    assert np.array_equal(info["action_mask"], info2["action_mask"])
    # the next valid action behaves as if the invalid one never happened
    good = int(np.flatnonzero(info["action_mask"])[0])
    twin = make(env_id, invalid_action_penalty=2.5)
    _state_with_a_masked_action(twin)
    assert np.array_equal(env.step(good)[0], twin.step(good)[0])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_masked_action_raises_when_asked(env_id):
    env = make(env_id, invalid_action="raise")
    _, info = _state_with_a_masked_action(env)
    bad = int(np.flatnonzero(~info["action_mask"])[0])
    with pytest.raises(ValueError, match="masked"):
        env.step(bad)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_only_invalid_actions_truncate_the_episode(env_id):
    env = make(env_id, max_invalid_streak=20)
    _, info = _state_with_a_masked_action(env)
    bad = int(np.flatnonzero(~info["action_mask"])[0])
    for i in range(20):
        _, _, term, trunc, info = env.step(bad)
        assert not term
    assert trunc and "episode_metrics" in info


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_episode_ends_with_finite_float_metrics_and_mask_agrees(env_id):
    env = make(env_id)
    rng = np.random.default_rng(1)
    obs, info = env.reset(seed=1)
    for _ in range(100_000):
        assert env.observation_space.contains(obs)
        assert np.array_equal(info["action_mask"], env.unwrapped.action_masks())
        obs, r, term, trunc, info = env.step(int(rng.choice(np.flatnonzero(info["action_mask"]))))
        assert np.isfinite(r)
        if term or trunc:
            break
    assert term or trunc
    metrics = info["episode_metrics"]
    assert metrics and all(isinstance(v, float) and np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_renders_ansi_text_and_rgb_frames(env_id):
    env = make(env_id, render_mode="ansi")
    env.reset(seed=0)
    assert isinstance(env.render(), str) and env.render()
    env = make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_env_pickles_and_deep_copies_mid_episode(env_id):
    env = make(env_id)
    rollout(env, seed=5, steps=10)
    clones = [pickle.loads(pickle.dumps(env)), copy.deepcopy(env)]
    rng = np.random.default_rng(0)
    for _ in range(30):  # the clones follow the original step for step
        mask = env.unwrapped.action_masks()
        a = int(rng.choice(np.flatnonzero(mask)))
        want = env.step(a)
        for clone in clones:
            assert np.array_equal(clone.unwrapped.action_masks(), mask)
            got = clone.step(a)
            assert np.array_equal(got[0], want[0]) and got[1:4] == want[1:4]
        if want[2] or want[3]:
            break


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec_runs(env_id, mode):
    envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, scenario=SMALL)
    obs, info = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    done = np.zeros(2, dtype=bool)
    for _ in range(150):
        actions = []
        for i, m in enumerate(info["action_mask"]):
            # an all-masked state is allowed only at an episode's end (the autoreset step ignores the action)
            assert m.any() or done[i]
            actions.append(rng.choice(np.flatnonzero(m)) if m.any() else 0)
        obs, r, term, trunc, info = envs.step(np.array(actions))
        done = term | trunc
        assert envs.observation_space.contains(obs)
    envs.close()
