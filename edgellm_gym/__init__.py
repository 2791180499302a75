"""edgellm-gym: Gymnasium environments that simulate LLM inference at the network edge.

Importing the package registers every environment id with Gymnasium:

>>> import gymnasium as gym, edgellm_gym
>>> env = gym.make("edgellm_gym/DeviceScheduling-v0")
"""

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

# env id -> "module:Class"; one row per environment, registered in a loop.
ENV_ENTRY_POINTS: dict[str, str] = {
    "edgellm_gym/DeviceScheduling-v0": "edgellm_gym.envs.device_scheduling:DeviceSchedulingEnv",
    "edgellm_gym/LayerAllocation-v0": "edgellm_gym.envs.layer_allocation:LayerAllocationEnv",
    "edgellm_gym/EdgeCloudOffload-v0": "edgellm_gym.envs.edge_cloud:EdgeCloudOffloadEnv",
    "edgellm_gym/PlacementQuantization-v0": "edgellm_gym.envs.placement_quant:PlacementQuantizationEnv",
    "edgellm_gym/TieredService-v0": "edgellm_gym.envs.tiered_service:TieredServiceEnv",
}
ENV_IDS = tuple(ENV_ENTRY_POINTS)

for _env_id, _entry_point in ENV_ENTRY_POINTS.items():
    if _env_id not in registry:
        register(id=_env_id, entry_point=_entry_point)



def env_presets(env_id: str) -> dict:
    """The named scenario presets of an env id (imports its module, which registers them)."""
    import importlib

    from .scenario import presets

    if env_id not in ENV_ENTRY_POINTS:
        raise ValueError(f"unknown env id {env_id!r}; known: {list(ENV_IDS)}")
    module = importlib.import_module(ENV_ENTRY_POINTS[env_id].split(":")[0])
    return presets(module.ENV_KEY)


__all__ = ["ENV_IDS", "ENV_ENTRY_POINTS", "env_presets", "__version__"]
