"""TieredService costs all its deployed (node, variant) pairs in one `costs.request_time_s` call at
reset, with model and device fields as (k, 1) columns (`_ModelColumns`, `_DeviceColumns`). This
pins that such a call equals one call per pair with the catalog's specs, bit for bit: if the cost
model ever branches on a model field, this fails before the golden trajectories do."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgellm_gym import costs
from edgellm_gym.catalog import DEVICES, MODELS
from edgellm_gym.envs.tiered_service import _DeviceColumns, _ModelColumns, node_device


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_model_and_device_columns_cost_every_pair_as_one_call_per_pair(bits):
    devices = list(DEVICES.values()) + [node_device(DEVICES["h100-sxm"], 2)]
    pairs = list(itertools.product(MODELS.values(), devices))
    rng = np.random.default_rng(bits)
    prompts = np.concatenate([[1, 1, 2, 4096], rng.integers(1, 8192, 60)]).astype(float)
    outputs = np.concatenate([[1, 2, 1, 2048], rng.integers(1, 4096, 60)]).astype(float)
    batched = costs.request_time_s(_ModelColumns.of([m for m, _ in pairs]), _DeviceColumns.of([d for _, d in pairs]),
                                   prompts, outputs, bits)
    assert batched.shape == (len(pairs), len(prompts))
    for row, (m, d) in zip(batched, pairs):
        assert np.array_equal(row, costs.request_time_s(m, d, prompts, outputs, bits)), (m.name, d.name)
