"""Arrival processes, token lengths, trace replay and the Azure-fitted presets."""

import os

import numpy as np
import pytest

from edgellm_gym.workload import WorkloadSpec, load_trace, sample_requests, workload_preset

TRACE_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "azure-llm-inference-2023")
CONV = os.path.join(TRACE_DIR, "AzureLLMInferenceTrace_conv.csv")


def test_poisson_rate_and_cv():
    r = sample_requests(WorkloadSpec("poisson", rate_per_s=4.0), np.random.default_rng(0), 50_000)
    gaps = np.diff(r.arrival_s)
    assert 1 / gaps.mean() == pytest.approx(4.0, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.05)


def test_hyperexp_matches_rate_and_cv_of_the_bursty_code_preset():
    spec = workload_preset("azure-code-2023")
    gaps = np.diff(sample_requests(spec, np.random.default_rng(1), 400_000).arrival_s)
    assert 1 / gaps.mean() == pytest.approx(2.57, rel=0.1)
    assert gaps.std() / gaps.mean() > 8  # heavy tail: the sample CV converges slowly to 13.2


def test_mmpp_alternates_busy_and_quiet_rates():
    spec = WorkloadSpec("mmpp", mmpp_rates_per_s=(10.0, 0.0), mmpp_sojourn_s=(5.0, 5.0))
    r = sample_requests(spec, np.random.default_rng(2), 20_000)
    assert 1 / np.diff(r.arrival_s).mean() == pytest.approx(5.0, rel=0.15)
    assert np.all(np.diff(r.arrival_s) >= 0)


def test_token_lengths_fit_the_conv_preset_median_and_p99():
    r = sample_requests(workload_preset("azure-conv-2023"), np.random.default_rng(3), 100_000)
    assert np.median(r.prompt_tokens) == pytest.approx(1020, rel=0.03)
    assert np.percentile(r.prompt_tokens, 99) == pytest.approx(4142, rel=0.05)
    assert np.median(r.output_tokens) == pytest.approx(129, rel=0.03)
    assert r.prompt_tokens.min() >= 1 and r.output_tokens.max() <= 2048


def test_same_generator_seed_same_requests():
    spec = workload_preset("azure-conv-2023")
    a = sample_requests(spec, np.random.default_rng(7), 100)
    b = sample_requests(spec, np.random.default_rng(7), 100)
    assert np.array_equal(a.arrival_s, b.arrival_s) and np.array_equal(a.output_tokens, b.output_tokens)


@pytest.mark.skipif(not os.path.isfile(CONV), reason="shared/ trace data not beside the repo")
def test_trace_replay_reads_the_azure_conv_trace():
    seconds, prompt, output = load_trace(CONV)
    assert len(seconds) == 19366 and seconds[0] == 0.0 and np.all(np.diff(seconds) >= 0)
    assert len(seconds) / seconds[-1] == pytest.approx(5.53, rel=0.02)
    r = sample_requests(WorkloadSpec("trace", trace_path=CONV), np.random.default_rng(0), 500)
    assert len(r) == 500 and np.all(np.diff(r.arrival_s) >= 0)


def test_trace_without_the_columns_is_an_error(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("time,tokens\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        load_trace(str(bad))


@pytest.mark.parametrize("kwargs,field", [
    ({"arrival": "uniform"}, "arrival"), ({"rate_per_s": -1.0}, "rate_per_s"),
    ({"arrival": "hyperexp", "cv": 0.5}, "cv"), ({"prompt_p99": 10.0}, "prompt_p99"),
    ({"arrival": "trace", "trace_path": "/no/such.csv"}, "trace_path"),
])
def test_bad_workload_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        WorkloadSpec(**kwargs)
