"""The sensitivity tables: the measured SmolLM2 table, the modelled profile, RTN quantization."""

import numpy as np
import pytest

from edgellm_gym.quantization import (MEASURED_BITS, error_source, error_table, measured_table, modelled_table,
                                      position_weights, quantization_ratio, relative_error, rtn_quantize)


def test_measured_table_loads_with_30_layers_by_4_widths():
    t = measured_table("smollm2-135m")
    assert t.shape == (30, 4) and MEASURED_BITS == (8, 4, 3, 2)
    assert np.all(np.isfinite(t)) and np.all(t > 0)


def test_measured_error_decreases_with_bits_in_every_layer():
    t = measured_table("smollm2-135m")  # columns 8, 4, 3, 2 bits
    assert np.all(np.diff(t, axis=1) > 0)


def test_measured_errors_are_in_the_range_of_round_to_nearest():
    # uniform quantization of a bell-shaped group of 64 weights: about 1.3 / (2^b - 1) relative error
    mean = measured_table("smollm2-135m").mean(axis=0)
    assert 0.002 < mean[0] < 0.01 and 0.04 < mean[1] < 0.15 and 0.3 < mean[3] < 0.7


def test_error_table_puts_zero_at_fp16_and_follows_the_requested_order():
    e = error_table("smollm2-135m", 30, (16, 8, 4, 3, 2))
    assert np.all(e[:, 0] == 0) and np.allclose(e[:, 1:], measured_table("smollm2-135m"))
    assert error_source("smollm2-135m") == "measured" and error_source("opt-350m") == "model"


def test_modelled_profile_makes_first_and_last_layers_most_sensitive():
    e = modelled_table(24, (16, 8, 4, 2))
    assert e.shape == (24, 4) and np.all(e[:, 0] == 0)
    col = e[:, 2]
    assert col[0] == col.max() and col[-1] == col.max() and col[12] < col[0]
    assert np.isclose(position_weights(24).mean(), 1.0)


def test_wrong_layer_count_or_unknown_bits_raise():
    with pytest.raises(ValueError, match="layers"):
        error_table("smollm2-135m", 24, (8, 4))
    with pytest.raises(ValueError, match="bits"):
        error_table("opt-350m", 24, (5,))


def test_rtn_is_exact_on_representable_groups_and_error_shrinks_with_bits():
    w = np.tile(np.arange(16.0), 8).reshape(2, 64)  # 16 evenly spaced levels per group: exact at 4 bits
    assert np.allclose(rtn_quantize(w, 4, 64), w)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 128))
    errs = [relative_error([x], [rtn_quantize(x, b, 64)]) for b in (8, 4, 3, 2)]
    assert errs == sorted(errs) and errs[0] < 0.01


def test_rtn_rejects_a_group_size_that_does_not_divide_the_row():
    with pytest.raises(ValueError, match="group_size"):
        rtn_quantize(np.zeros((2, 100)), 4, 64)


def test_quantization_ratio_is_bits_over_fp16_weighted_by_parameters():
    assert quantization_ratio([16, 16]) == 1.0
    assert quantization_ratio([4, 2]) == pytest.approx(3 / 16)
    assert quantization_ratio([8, 2], [3.0, 1.0]) == pytest.approx((24 + 2) / 64)
