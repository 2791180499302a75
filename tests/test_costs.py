"""The catalog and the pure cost model."""

import numpy as np
import pytest

from edgellm_gym import costs
from edgellm_gym.catalog import DEVICES, MODELS, DeviceSpec, LinkSpec, get_device, get_link, get_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_summed_params_match_published_totals_within_3_percent(name):
    m = MODELS[name]
    assert costs.total_params(m) == pytest.approx(m.published_params, rel=0.03)


def test_llama2_7b_layer_params_by_hand():
    m = get_model("llama-2-7b")
    assert costs.layer_params(m) == 4 * 4096**2 + 3 * 4096 * 11008


def test_gqa_kv_bytes_use_kv_heads():
    m = get_model("mistral-7b")  # 8 kv heads x 128 dims, K and V, fp16
    assert costs.kv_bytes_per_token_layer(m) == 2 * 8 * 128 * 2


def test_weight_bytes_scale_with_bits():
    m = get_model("opt-350m")
    assert costs.layer_weight_bytes(m, 4) == costs.layer_weight_bytes(m, 16) / 4


@pytest.mark.parametrize("device", ["rpi5", "a100-80gb", "orin-nano-8gb"])
@pytest.mark.parametrize("prompt,output", [(10, 4000), (1000, 1), (3000, 400), (1, 2)])
def test_decode_time_equals_the_step_by_step_roofline_sum(device, prompt, output):
    m, d = get_model("tinyllama-1.1b"), get_device(device)
    brute = sum(
        float(costs.roofline_time_s(m.n_layers * costs.layer_flop_decode(m, prompt + k),
                                    m.n_layers * (costs.layer_weight_bytes(m)
                                                  + costs.kv_bytes_per_token_layer(m) * (prompt + k)), d))
        for k in range(1, output)
    )
    assert float(costs.decode_time_s(m, d, m.n_layers, prompt, output)) == pytest.approx(brute, rel=1e-9, abs=1e-12)


def test_decode_is_memory_bound_and_prefill_compute_bound_on_a_gpu():
    m, d = get_model("llama-2-7b"), get_device("a100-80gb")
    flop = costs.layer_flop_decode(m, 100)
    assert flop / (d.peak_flops * d.compute_efficiency) < costs.layer_weight_bytes(m) / d.mem_bw_Bps
    s = 2048
    assert costs.layer_flop_prefill(m, s) / (d.peak_flops * d.compute_efficiency) > \
        (costs.layer_weight_bytes(m) + costs.kv_bytes_per_token_layer(m) * s) / d.mem_bw_Bps


def test_cost_functions_broadcast_over_token_arrays():
    m, d = get_model("qwen2-0.5b"), get_device("t4")
    prompts, outputs = np.array([10, 500, 3000]), np.array([5, 50, 500])
    vec = costs.request_time_s(m, d, prompts, outputs)
    one = [float(costs.request_time_s(m, d, p, o)) for p, o in zip(prompts, outputs)]
    assert np.allclose(vec, one) and np.all(np.diff(vec) > 0)


def test_transfer_time_is_latency_plus_bits_over_bandwidth():
    assert costs.transfer_time_s(1e6, 8e6, 0.01) == pytest.approx(1.01)
    link = get_link("lan-1g")
    assert costs.link_transfer_time_s(0, link) == link.latency_s


def test_energy_sums_busy_idle_and_transmit_power():
    d = get_device("orin-nano-8gb")
    assert costs.energy_j(d, busy_s=2, idle_s=3, tx_s=4) == 2 * 15 + 3 * 5 + 4 * 1.5


def test_catalog_rejects_bad_specs_naming_the_field():
    with pytest.raises(ValueError, match="mem_bytes"):
        DeviceSpec("x", 1e12, -1, 1e9, 1, 2)
    with pytest.raises(ValueError, match="bw_bps"):
        LinkSpec("x", 0, 0.1)
    with pytest.raises(ValueError, match="unknown device 'nope'"):
        get_device("nope")
    assert all(d.power_idle_w < d.power_busy_w for d in DEVICES.values())


def test_device_fields_as_columns_broadcast_bit_for_bit():
    from types import SimpleNamespace

    m = get_model("qwen2.5-1.5b")
    devs = [get_device(n) for n in ("rpi5", "t4", "h100-sxm", "xeon-gold-6248")]
    cols = SimpleNamespace(**{f: np.array([[getattr(d, f)] for d in devs])
                              for f in ("peak_flops", "compute_efficiency", "mem_bw_Bps")})
    prompts, outputs = np.array([1, 700, 4000]), np.array([1, 90, 800])
    batched = costs.request_time_s(m, cols, prompts, outputs)
    for i, d in enumerate(devs):
        assert np.array_equal(batched[i], costs.request_time_s(m, d, prompts, outputs))
