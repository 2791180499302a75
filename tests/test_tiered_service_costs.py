"""TieredService costs all its deployed (node, variant) pairs at reset in one call of
`kernels.request_times`, a compiled copy of `costs.request_time_s`, on the model and device fields
as columns (`_ModelColumns`, `_DeviceColumns`). This pins, bit for bit, that one `costs.request_time_s`
call on such columns equals one call per pair with the catalog's specs (if the cost model ever
branches on a model field, this fails before the golden trajectories do), and that the kernel equals
`costs.request_time_s` (it copies that function's operations, and must change when they do)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgellm_gym import costs
from edgellm_gym.catalog import DEVICES, MODELS
from edgellm_gym.envs import tiered_service_kernels as kernels
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


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_compiled_request_times_is_the_cost_model_bit_for_bit(bits):
    devices = list(DEVICES.values()) + [node_device(DEVICES["h100-sxm"], 2)]
    pairs = list(itertools.product(MODELS.values(), devices))
    # the least, prompt or output alone, the Azure medians and p99s, powers of two and odd counts up to
    # long contexts, then some drawn at random
    rng = np.random.default_rng(20261123 + bits)
    prompts = np.concatenate([[1, 1, 2, 1, 7, 128, 1000, 1020, 4142, 8191, 32768, 3, 513],
                              rng.integers(1, 16384, 48)]).astype(np.int64)
    outputs = np.concatenate([[1, 2, 1, 3, 1, 129, 1, 601, 2048, 4095, 1, 17, 9999],
                              rng.integers(1, 4096, 48)]).astype(np.int64)
    model_cols, device_cols = _ModelColumns.of([m for m, _ in pairs]), _DeviceColumns.of([d for _, d in pairs])
    want = costs.request_time_s(model_cols, device_cols, prompts, outputs, bits)
    k = len(pairs)
    got = np.zeros((prompts.size, k, 1))
    kernels.request_times(np.hstack(model_cols), np.hstack(device_cols), prompts, outputs, bits, np.arange(k),
                          np.zeros(k, dtype=np.int64), got)
    bad = [(m.name, d.name) for (m, d), g, w in zip(pairs, got[:, :, 0].T, want) if not np.array_equal(g, w)]
    assert not bad, bad
