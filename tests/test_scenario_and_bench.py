"""Scenario loading/validation and the benchmark CLI."""

import json
import os
from dataclasses import dataclass, field

import pytest

from edgellm_gym.metrics import jain_index, mean_ci95
from edgellm_gym.scenario import from_dict, resolve_scenario
from edgellm_gym.workload import WorkloadSpec
from training import cli
from training.benchmark import markdown_table, run_benchmark, summarize


@dataclass(frozen=True)
class Toy:
    devices: tuple[str, ...] = ("t4",)
    n: int = 1
    x: float = 0.5
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)

    def __post_init__(self):
        if not self.devices:
            raise ValueError(f"devices must be non-empty, got {self.devices!r}")


def test_from_dict_builds_nested_dataclasses_and_converts_lists():
    t = from_dict(Toy, {"devices": ["t4", "rpi5"], "x": 2, "workload": {"rate_per_s": 3}})
    assert t.devices == ("t4", "rpi5") and t.x == 2.0 and t.workload.rate_per_s == 3.0


@pytest.mark.parametrize("data,message", [
    ({"devicez": []}, "unknown field devicez"),
    ({"devices": []}, "devices must be non-empty"),
    ({"n": 1.5}, "n must be an integer"),
    ({"x": "big"}, "x must be a number"),
    ({"workload": {"rate_per_s": 0}}, r"workload\.rate_per_s must be > 0"),
    ({"workload": 3}, "workload must be a mapping"),
])
def test_from_dict_errors_name_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        from_dict(Toy, data)


def test_resolve_scenario_reads_yaml_and_rejects_unknown_presets(tmp_path):
    path = tmp_path / "toy.yml"
    path.write_text("env: Toy\ndevices: [a100-80gb]\nn: 3\n")
    assert resolve_scenario(Toy, "Toy", str(path)) == Toy(devices=("a100-80gb",), n=3)
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        resolve_scenario(Toy, "Toy", "nope")


def test_jain_index_and_confidence_interval():
    assert jain_index([1, 1, 1, 1]) == 1.0
    assert jain_index([1, 0, 0, 0]) == 0.25
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.302653 * 1 / 3**0.5, rel=1e-5)


def test_benchmark_runs_every_policy_on_the_same_seeds():
    records = run_benchmark("edgellm_gym/DeviceScheduling-v0", episodes=2, seed=5, scenario="small",
                            progress=False)
    assert {r["policy"] for r in records} == {"adsa", "fcfs", "srtf", "edf", "llf", "random"}
    assert sorted({r["seed"] for r in records}) == [5, 6]
    summary = summarize(records)
    assert summary[0]["policy"] == "adsa" and "return_ci95" in summary[0]
    assert markdown_table(summary).count("\n") == len(summary) + 1


def test_bench_cli_writes_csv_json_markdown_and_png(tmp_path, capsys):
    code = cli.main(["bench", "--env", "edgellm_gym/DeviceScheduling-v0", "--episodes", "2",
                     "--scenario", "small", "--policies", "adsa,fcfs", "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    folder = tmp_path / "DeviceScheduling-v0"
    assert sorted(os.listdir(folder)) == ["episodes.csv", "summary.json", "summary.md", "summary.png"]
    assert [r["policy"] for r in json.loads((folder / "summary.json").read_text())["summary"]] == ["adsa", "fcfs"]
    assert "adsa" in capsys.readouterr().out


def test_bench_cli_rejects_unknown_env_and_policy(tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--env", "edgellm_gym/Nope-v0"])
    with pytest.raises(ValueError, match="unknown policies"):
        cli.main(["bench", "--env", "edgellm_gym/DeviceScheduling-v0", "--policies", "magic",
                  "--out", str(tmp_path), "--no-progress"])
    assert cli.main(["frobnicate"]) == 2
