"""Golden trajectories: speed work on the step path must not change behaviour, bit for bit.

For each env, preset and seed, 300 steps of masked random actions (from
`np.random.default_rng(seed)`, resetting at episode ends) are hashed: the
observations (float32 bytes), rewards (float64 bytes), terminated/truncated
flags, action masks and every `episode_metrics` dict (sorted keys, float64
bytes). A longer run per env on the default preset (whole episodes, 10% of the
actions masked out) pins the episode metrics there and the masked-action path;
a few scenario variants pin paths the presets do not take (drop_expired, a
bandwidth trace, tight edge memory, several cloud GPUs, high load, LayerAllocation's
pay-as-bid rule and FCIM's other reward branches). LayerAllocation's reference
policies read `env.unwrapped.state`: runs driven by them pin that state too.
The hashes were recorded before the step paths were optimized. TieredService's
were regenerated twice, on 2026-11-23, for deliberate changes: users are now
presented tightest deadline first (`user_order`; with `user_order="arrival"`
the hashes before that reproduce); then its observation gained the per-pair
compute time and "earns +1 now" flags, the per-variant accuracy margin and a
"some pair earns +1" flag (rewards, masks, flags and metrics checked unchanged,
only the observations differ).

To print the current hashes (only after a deliberate, justified behaviour
change): `python tests/test_trajectory_golden.py`.
"""

from __future__ import annotations

import hashlib
import os

import gymnasium as gym
import numpy as np
import pytest

import edgellm_gym  # noqa: F401  (registers the env ids)

STEPS = 300
SEEDS = (0, 1, 2)
PRESETS = ("default", "small")
ENVS = ("edgellm_gym/DeviceScheduling-v0", "edgellm_gym/EdgeCloudOffload-v0", "edgellm_gym/TieredService-v0")

GOLDEN = {
    # (env id, preset, seed): sha256 of the trajectory
    ('edgellm_gym/DeviceScheduling-v0', 'default', 0): 'fbdfe2e93e236202747628082e12f47b0c968ab4d07ce4dd540b144118b85759',
    ('edgellm_gym/DeviceScheduling-v0', 'default', 1): '2d24672c66acd4279782bc300088901cbcee2af2c285835522fde3c06bcdfd50',
    ('edgellm_gym/DeviceScheduling-v0', 'default', 2): 'd8a109169edab1ec76a7bc0ba976825fd677bb81cb1be15839c33784d9be419d',
    ('edgellm_gym/DeviceScheduling-v0', 'small', 0): 'a5a335e3d67b1a424786fe0cb7294b72e82f828aa951f0fd6da8dd93b0988b5a',
    ('edgellm_gym/DeviceScheduling-v0', 'small', 1): 'c63df2540fb6118586a8cf4ce8483e27496206719925bfc66f6793c1054529cf',
    ('edgellm_gym/DeviceScheduling-v0', 'small', 2): '584e0bbcdfb8408c0af33b23ad0725ef09e9aee272d4c7999af33dc3218102b4',
    ('edgellm_gym/EdgeCloudOffload-v0', 'default', 0): 'b159eb868fa5bdbf47d05dafe0e70ff04621c0c9d2682055dc1471df0268d17d',
    ('edgellm_gym/EdgeCloudOffload-v0', 'default', 1): '3b7c830a8e4da3fd632cf0b6c207f39188c15e8ce54560b9db2dcb6cdbab91d2',
    ('edgellm_gym/EdgeCloudOffload-v0', 'default', 2): '7edad281775106713665ac8898ca8f212ccbc9239ff68babb664ae33cd8c2ad2',
    ('edgellm_gym/EdgeCloudOffload-v0', 'small', 0): '960e980099639a3fc4be66a10d19adf4c2ae17dacb016657294eaa3eb390e279',
    ('edgellm_gym/EdgeCloudOffload-v0', 'small', 1): '7a7822c0f87aa977b7a09030d1f46ea7076738afdd57edae08db24b6220118ce',
    ('edgellm_gym/EdgeCloudOffload-v0', 'small', 2): '8cd2c117c8802ed9708a120db63b663b291ba3f4245fd663adf4b2f323ce91b9',
    ('edgellm_gym/TieredService-v0', 'default', 0): '80cb6929d72a07a3a49890da84e9a246cf8b7da3f9ba74edae3ecaa2eb464836',
    ('edgellm_gym/TieredService-v0', 'default', 1): '126b1d0fed0cfdafb1183aab85ba89eecf576a896f9700748d4f2a52ce2355d2',
    ('edgellm_gym/TieredService-v0', 'default', 2): 'dd9ad2c4c2c35527721c0138b42363a3421aa1c4df9b110dec518067ec6ce0f1',
    ('edgellm_gym/TieredService-v0', 'small', 0): 'f5ea8c89fb1faf03979ef61214b2473d62883e2935bd8cb1c0a4bd8ff9d59cef',
    ('edgellm_gym/TieredService-v0', 'small', 1): '3721b0871c6029cde692f566723d410ffc300ce7c28de8006f559afcff2e4204',
    ('edgellm_gym/TieredService-v0', 'small', 2): '7fbba5ffc59416412c15e4492b232df41dabfe42ff4516d0f6a9224274464109',
}


LA = "edgellm_gym/LayerAllocation-v0"
LA_PRESETS = ("default", "small", "jetson")
LA_CASES = [(LA, p, s) for p in LA_PRESETS for s in SEEDS]
GOLDEN.update({
    (LA, 'default', 0): '4707c4a2f822c12c450c15db6198c059824ee7053e48b2fc5492a830362a2907',
    (LA, 'default', 1): '9e319a4b191ac5f484d58ba0fc1ff1df09b5d04abd35151c6736e535813faf38',
    (LA, 'default', 2): '344da990bbaf899936d825610a8fe0f7018234d7aeead2e21133ecaf352327e1',
    (LA, 'small', 0): 'e289a760faca326506d81c1a39b2b27748196140b42c870bcd877209176dee75',
    (LA, 'small', 1): 'd4a51cf799b8fbd69e12fb9a371906ed7ab6b134b96067fc4cbe44d74194148d',
    (LA, 'small', 2): 'c7f8efd69f78975c467421820db0a8c8672394c36affe871ca18adcd6463fdce',
    (LA, 'jetson', 0): '4ba66d05471e72a65d2cfb16767fee7ccaba38847528d39635f0d8af2128241e',
    (LA, 'jetson', 1): '07bc976d22f3e1325470f86a40a2b61963fb78a87e857f6ddfbd9713a41d4d2a',
    (LA, 'jetson', 2): '75300c835aa8a641b0849da5a3a20aa3a16cbe21d7025c6e7f28bd69eba87d61',
})


def _hash_metrics(h, info: dict) -> None:
    """Add an episode's metrics (sorted keys, float64 values) to the hash when the step has them."""
    if "episode_metrics" in info:
        metrics = info["episode_metrics"]
        h.update(repr(sorted(metrics)).encode())
        h.update(np.array([metrics[k] for k in sorted(metrics)], dtype=np.float64).tobytes())


def trajectory_sha256(env_id: str, preset: str, seed: int, steps: int = STEPS, invalid_share: float = 0.0) -> str:
    """sha256 over a rollout of masked random actions (see the module docstring). `preset`: a
    preset name or a scenario dict; with `invalid_share`, that share of the steps takes a
    masked-out action instead (when there is one)."""
    env = gym.make(env_id, scenario=preset).unwrapped
    rng = np.random.default_rng(seed)
    h = hashlib.sha256()

    def add_obs(obs, info):
        h.update(np.asarray(obs).dtype.str.encode())
        h.update(np.ascontiguousarray(obs).tobytes())
        h.update(np.asarray(info["action_mask"], dtype=bool).tobytes())

    obs, info = env.reset(seed=seed)
    add_obs(obs, info)
    for _ in range(steps):
        valid = np.flatnonzero(info["action_mask"])
        if invalid_share and rng.random() < invalid_share and valid.size < len(info["action_mask"]):
            valid = np.flatnonzero(~np.asarray(info["action_mask"]))
        obs, reward, terminated, truncated, info = env.step(int(valid[rng.integers(valid.size)]))
        add_obs(obs, info)
        h.update(np.float64(reward).tobytes())
        h.update(bytes([bool(terminated), bool(truncated)]))
        _hash_metrics(h, info)
        if terminated or truncated:
            obs, info = env.reset()
            add_obs(obs, info)
    env.close()
    return h.hexdigest()


# whole default episodes (their episode_metrics) and the masked-action path: 1500 steps, 10% masked-out
GOLDEN_LONG = {
    'edgellm_gym/DeviceScheduling-v0': 'e880c531a4cc9f2f5868d0517577bdeafec6e811c5e7f50b7627107e5490619f',
    'edgellm_gym/EdgeCloudOffload-v0': '7e099a546255fb55ed59f598d131de666427db9c8efcdb7c976f6ba0daaa27c6',
    'edgellm_gym/TieredService-v0': '920a281885e2e83d59a459ff31df4bd895081e82b6aefddeec91e073587dae43',
    LA: '2eebbe24c46af2781af2d580afeb6c6a98eb271abd604163bd92320b8842e84e',
}

CASES = [(e, p, s) for e in ENVS for p in PRESETS for s in SEEDS] + LA_CASES


@pytest.mark.parametrize("env_id,preset,seed", CASES, ids=[f"{e.split('/')[1]}-{p}-{s}" for e, p, s in CASES])
def test_trajectory_matches_golden_hash(env_id, preset, seed):
    assert trajectory_sha256(env_id, preset, seed) == GOLDEN[(env_id, preset, seed)]



@pytest.mark.parametrize("env_id", ENVS + (LA,), ids=[e.split("/")[1] for e in ENVS + (LA,)])
def test_long_trajectory_with_masked_actions_matches_golden_hash(env_id):
    assert trajectory_sha256(env_id, "default", 0, steps=1500, invalid_share=0.1) == GOLDEN_LONG[env_id]


TRACE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scenarios", "edge_cloud",
                     "bandwidth_example.csv")
# scenario variants whose paths the presets above do not take (1500 steps, 10% masked-out, seed 0)
VARIANTS = {
    "DeviceScheduling-v0-drop-expired": ("edgellm_gym/DeviceScheduling-v0",
                                         {"drop_expired": True, "slack_min": 1.1, "slack_max": 2.0},
                                         "6914c0d3d575098147a807950ac1048807c8072cc3da74a9057cb69658b85ee8"),
    "EdgeCloudOffload-v0-trace-tight-memory": ("edgellm_gym/EdgeCloudOffload-v0",
                                               {"bw_trace_path": TRACE, "edge_mem_bytes": 32e9},
                                               "c7beb71a6e427b473f5b6ccc4abb82d6efd3c958d727da1ce828c56a2c29b061"),
    "EdgeCloudOffload-v0-two-cloud-gpus": ("edgellm_gym/EdgeCloudOffload-v0",
                                           {"edge_mem_bytes": 32e9, "cloud_gpus": 2},
                                           "a86a2cd8e743d75e713bdea471c7d6e80a262238111b8c3243a9891aa501608f"),
    "TieredService-v0-high-load": ("edgellm_gym/TieredService-v0", "high-load",
                                   "8a31aebe76ecc5140e7a1913aaa1ed9f365a3ce479bb1fb1d5e7c53e5842b777"),
    "LayerAllocation-v0-pay-as-bid": (LA, {"payment_rule": "pay_as_bid"}, "eb7dee9c57d6b41c73e5e256a6ce3af7e50700527ea0ec9bcca0f65b73d30ad4"),
    "LayerAllocation-v0-fcim-gamma-low": (LA, {"gamma": 0.2}, "6698f6438a8fe84ca109aa2db3ad78c0f8940384e713526c21d71caa4a353193"),
}


@pytest.mark.parametrize("name", VARIANTS)
def test_scenario_variant_matches_golden_hash(name):
    env_id, scenario, golden = VARIANTS[name]
    assert trajectory_sha256(env_id, scenario, 0, steps=1500, invalid_share=0.1) == golden


def policy_trajectory_sha256(env_id: str, preset, seed: int, policy: str, steps: int) -> str:
    """sha256 over a rollout driven by a registered policy (actions, observations, rewards, flags,
    episode metrics): pins what the policy reads from `env.unwrapped.state`."""
    from baselines.base import make_policy

    env = gym.make(env_id, scenario=preset).unwrapped
    pol = make_policy(env_id, policy)
    h = hashlib.sha256()
    obs, info = env.reset(seed=seed)
    pol.reset(env, seed=seed)
    h.update(obs.tobytes())
    for _ in range(steps):
        a = pol.act(obs, info)
        obs, reward, terminated, truncated, info = env.step(a)
        h.update(np.int64(a).tobytes() + obs.tobytes() + np.float64(reward).tobytes())
        h.update(bytes([bool(terminated), bool(truncated)]))
        _hash_metrics(h, info)
        if terminated or truncated:
            obs, info = env.reset()
            h.update(obs.tobytes())
    env.close()
    return h.hexdigest()


# LayerAllocation's state-reading reference policies (seed 0): one default episode and more
POLICY_RUNS = {
    (LA, "default", "fcim"): "f13e4c01227b89072d58c66ec1ac089eef753633c295fc85b3f8b0f890b67879",
    (LA, "default", "performance"): "4d6e85ce2e6c1646426c2b83f5df93681717f5d82f9bf93bfaa90a02e5ad9ffb",
    (LA, "jetson", "pipeedge"): "3f7f83033f7754cf9e9bc4715231d1f208dc5c8a575c8250402b1b15c78bea74",
    (LA, "default", "hexgen"): "3e0c3f8b2e96b9e171d69d86dc4dc53dc39715adf15ceca9d1f2dbe6d9efe982",
}


@pytest.mark.parametrize("key", POLICY_RUNS, ids=[f"{e.split('/')[1]}-{p}-{q}" for e, p, q in POLICY_RUNS])
def test_policy_driven_trajectory_matches_golden_hash(key):
    env_id, preset, policy = key
    assert policy_trajectory_sha256(env_id, preset, 0, policy, 800) == POLICY_RUNS[key]


if __name__ == "__main__":
    for case in CASES:
        print(f"    {case!r}: {trajectory_sha256(*case)!r},")
    for env_id in ENVS + (LA,):
        print(f"    {env_id!r}: {trajectory_sha256(env_id, 'default', 0, steps=1500, invalid_share=0.1)!r},")
    for name, (env_id, scenario, _) in VARIANTS.items():
        print(f"    {name!r}: {trajectory_sha256(env_id, scenario, 0, steps=1500, invalid_share=0.1)!r},")
    for key in POLICY_RUNS:
        print(f"    {key!r}: {policy_trajectory_sha256(key[0], key[1], 0, key[2], 800)!r},")
