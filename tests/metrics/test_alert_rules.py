"""The Prometheus alert rules and example configuration in docker/prometheus.

promtool (from Debian's ``prometheus`` package; ``scripts/ensure-prometheus.sh``, which
``make test`` runs, installs it) checks the rules and runs their unit tests.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests.support import ROOT
from tests.support.metrics import exported_samples, metric_names_in

PROMETHEUS_DIR = ROOT / "docker" / "prometheus"
ALERTS = {
    "ReplicatorReplicationLagHigh",
    "ReplicatorDeadLetters",
    "ReplicatorDestinationStalled",
    "ReplicatorCheckpointsStalled",
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is not on PATH: run scripts/ensure-prometheus.sh (make test does)"
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False
    )


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.mark.prometheus
def test_promtool_accepts_the_rules_and_the_example_config() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
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
        assert used, rule["alert"]
        assert used <= exported, f"{rule['alert']} uses unknown metrics {used - exported}"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]
        assert "What to do:" in rule["annotations"]["description"]
    lag = next(rule for rule in found if rule["alert"] == "ReplicatorReplicationLagHigh")
    assert lag["for"] == "5m"
