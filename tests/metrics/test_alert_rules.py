"""The Prometheus alert rules and example configuration in docker/prometheus, and the
dashboard's counts over its time range.

promtool (from Debian's ``prometheus`` package; ``scripts/ensure-prometheus.sh``, which
``make test`` runs, installs it) checks the rules and runs their unit tests, and
evaluates the dashboard's queries on input series as its PromQL unit tests do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import ROOT
from tests.support.metrics import exported_samples, metric_names_in

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
ALERTS = {
    "ReplicatorReplicationLagHigh",
    "ReplicatorDeadLetters",
    "ReplicatorDestinationTableLost",
    "ReplicatorDestinationStalled",
    "ReplicatorCheckpointsStalled",
    "ReplicatorUnhealthy",
    "ReplicatorDown",
    "ReplicatorWatermarkNotPublished",
}


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is not on PATH: run scripts/ensure-prometheus.sh (make test does)"
    return subprocess.run(
        [tool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.mark.prometheus
def test_promtool_accepts_the_rules_and_the_example_config() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@pytest.mark.prometheus
def test_the_alert_unit_tests_pass() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_each_alert_has_unit_tests_for_firing_and_for_staying_quiet() -> None:
    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in document["tests"]:
        for case in test["alert_rule_test"]:
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == ALERTS
    assert quiet == ALERTS


def test_the_rules_use_exported_metrics_and_tell_the_operator_what_to_do() -> None:
    exported = set(exported_samples())
    found = rules()
    assert {rule["alert"] for rule in found} == ALERTS
    for rule in found:
        used = set(metric_names_in(rule["expr"]))
        if rule["alert"] == "ReplicatorDown":  # Prometheus's own series for the target
            assert rule["expr"].startswith('up{job="dynamodb-replicator"}')
            job = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
            assert job["scrape_configs"][0]["job_name"] == "dynamodb-replicator"
        else:
            assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} uses unknown metrics {used - exported}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert "What to do:" in rule["annotations"]["description"]
    lag = next(rule for rule in found if rule["alert"] == "ReplicatorReplicationLagHigh")
    assert lag["for"] == "5m"


@pytest.mark.prometheus
@pytest.mark.parametrize(
    ("title", "metric"),
    [
        ("Dead letters in the time range", "replicator_dead_letters_total"),
        ("Dead letters in the time range", "replicator_dead_letters_already_stored_total"),
        ("Unrecorded conflicts in the time range", "replicator_conflict_log_dropped_total"),
    ],
)
def test_the_dashboards_counts_in_the_time_range_include_a_new_series_first_count(
    tmp_path: Path, title: str, metric: str
) -> None:
    """A (destination, reason) series appears with its first count already in it, which
    increase() cannot see: a single dead letter of a new kind showed as 0."""
    dashboard = json.loads((ROOT / "docker" / "grafana" / "replicator-dashboard.json").read_text())
    panel = next(panel for panel in dashboard["panels"] if panel.get("title") == title)
    (target,) = [target for target in panel["targets"] if metric in target["expr"]]
    expression = target["expr"].replace("$__range", "10m").replace('"$instance"', '".*"')
    assert "$destination" in expression  # the dashboard's destination selection applies
    one_destination = expression.replace("$destination", "eu")
    expression = expression.replace("$destination", ".*")
    series = {
        # Counted before the time range [10m, 20m] and once in it.
        "eu": ("3x12 4x8", 1),
        # New in the range: born with one, nothing since.
        "ap": ("_x14 1x5", 1),
        # New in the range: born with two, one more at 18m; increase() extrapolates the
        # one it sees to 1.125 (4 minutes of samples, half a scrape interval before them).
        "us": ("_x16 2 2 3x2", 3.125),
        # New at the range's last scrape: one sample, which increase() needs two of.
        "br": ("_x20 1", 1),
        # Counted long before the range, nothing in it.
        "sa": ("5x20", 0),
    }
    tests = {
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'{metric}{{instance="r1",destination="{name}",reason="r"}}',
                        "values": values,
                    }
                    for name, (values, _) in series.items()
                ],
                "promql_expr_test": [
                    {
                        "expr": expression,
                        "eval_time": "20m",
                        "exp_samples": [  # 0: no sample (the panel shows series above 0)
                            {"labels": f'{{destination="{name}",reason="r"}}', "value": count}
                            for name, (_, count) in series.items()
                            if count
                        ],
                    },
                    {
                        "expr": one_destination,
                        "eval_time": "20m",
                        "exp_samples": [{"labels": '{destination="eu",reason="r"}', "value": 1}],
                    },
                ],
            }
        ]
    }
    (tmp_path / "dashboard.test.yml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", "dashboard.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
