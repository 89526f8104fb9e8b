"""The benchmark's report: which figures make each target, and whether it is met. Runs on
fabricated scenario results, without running a benchmark."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.e2e import hold_summary
from bench.host import shards_per_core
from bench.report import REQUIRED_KEYS, TARGETS, summarize, table, verdicts


def _e2e(policy: str, latency: float, **figures: Any) -> dict[str, Any]:
    run = {
        "policy": policy,
        "latency_ms": latency,
        "changes_per_s": 2500.0,
        "writes_per_s": 2400.0,
        "cpu_us_per_change": 100.0,
        "p50_delay_s": 0.2,
        "p99_delay_s": 0.4,
        "rss_peak_mb": 90.0,
        "requests": 1000,
        "endpoint_cpu_s": 0.03,
    }
    run.update(figures)
    return run


def fabricated_runs(json_loads: bool = True) -> dict[str, Any]:
    core = {
        "policy": "last_writer_wins",
        "shape": "order",
        "records_per_s": 10_000.0,
        "cpu_us_per_record": 100.0,
    }
    if json_loads:
        core.update(
            core_cpu_us_per_record=40.0, json_loads_us_per_record=50.0, core_ratio_vs_json_loads=0.8
        )
    return {
        "ceiling": [
            {
                "requests_per_s": 40_000.0,
                "endpoint_cpu_share": 0.8,
                "latency_100ms_requests_per_s": 2_500.0,
            }
        ],
        "core": [core],
        "e2e": [
            _e2e("last_writer_wins", 0.0, cpu_us_per_change=90.0),
            _e2e("overwrite", 0.0, cpu_us_per_change=150.0, requests=3000, endpoint_cpu_s=0.07),
            _e2e("last_writer_wins", 100.0, changes_per_s=2_000.0),
            _e2e("overwrite", 100.0),
        ],
        "paced": [
            _e2e("last_writer_wins", 100.0, p99_delay_s=1.0, changes_per_s=950.0),
            _e2e("overwrite", 100.0, p99_delay_s=1.2),
        ],
        "memory": [
            _e2e(
                "last_writer_wins",
                100.0,
                rss_peak_mb=150.0,
                max_buffered_changes=2000,
                **hold_summary(
                    [
                        {"at_s": 0.0, "sent": 5000, "unapplied": 1900, "rss_mb": 140.0},
                        {"at_s": 1.0, "sent": 6000, "unapplied": 1950, "rss_mb": 142.0},
                        {"at_s": 2.0, "sent": 7000, "unapplied": 1980, "rss_mb": 141.0},
                        {"at_s": 3.0, "sent": 8000, "unapplied": 1990, "rss_mb": 143.0},
                    ],
                    limit=2000,
                ),
            )
        ],
        "naive": [{"latency_ms": 100.0, "changes_per_s": 100.0}],
        "host": [
            {
                "shards": 4,
                "changes_per_s": 3_000.0,
                "cpu_us_per_change": 500.0,
                "cpu_share": 1.5,
                "endpoint_cpu_share": 0.1,
                "bench_cpu_share": 0.05,
                "shards_per_core": 2.0,
            }
        ],
    }


def _rows(summary: dict[str, float]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in verdicts(summary)}


def test_every_required_key_is_in_the_summary_and_every_target_has_a_row() -> None:
    summary = summarize(fabricated_runs())
    assert set(summary) >= set(REQUIRED_KEYS)
    rows = verdicts(summary)
    assert [row["name"] for row in rows] == [target.name for target in TARGETS]
    assert all({"name", "value", "bound", "met"} <= set(row) for row in rows)
    assert all(row["measured"] for row in rows)


def test_the_endpoint_cost_is_pooled_over_the_saturated_runs_and_divides_each_ones_cpu() -> None:
    summary = summarize(fabricated_runs())
    # 0.03 + 0.07 + 0.03 + 0.03 s of endpoint CPU over 1000 + 3000 + 1000 + 1000 requests.
    assert summary["endpoint_cpu_us_per_request"] == pytest.approx(0.16 / 6000 * 1e6)
    assert summary["endpoint_cpu_us_per_request_0ms"] == pytest.approx(0.10 / 4000 * 1e6)
    assert summary["endpoint_cpu_us_per_request_100ms"] == pytest.approx(30.0)
    per_request = summary["endpoint_cpu_us_per_request"]
    assert summary["cpu_ratio_vs_endpoint_0ms"] == pytest.approx(90.0 / per_request)
    assert summary["cpu_ratio_vs_endpoint_0ms_overwrite"] == pytest.approx(150.0 / per_request)
    assert summary["cpu_ratio_vs_endpoint_100ms"] == pytest.approx(100.0 / per_request)
    assert summary["endpoint_ceiling_cpu_us_per_request"] == pytest.approx(20.0)
    # The paced run's p99 is the target's; the saturated one is kept apart.
    assert summary["e2e_100ms_lww_p99_delay_s"] == 1.0
    assert summary["e2e_100ms_lww_saturated_p99_delay_s"] == 0.4


def test_met_and_not_met_follow_the_bounds_inclusive() -> None:
    rows = _rows(summarize(fabricated_runs()))
    # 90 us against 26.7 us: 3.4x, met; overwrite 150 us: 5.6x, not met.
    assert rows["cpu_vs_endpoint_0ms_lww"]["met"]
    assert not rows["cpu_vs_endpoint_0ms_overwrite"]["met"]
    assert rows["cpu_vs_endpoint_100ms_lww"]["met"]
    assert rows["core_vs_json_loads"]["met"]
    assert rows["core_vs_json_loads"]["value"] == 0.8
    assert rows["e2e_100ms_changes_per_s"]["met"]  # exactly 2,000
    assert rows["e2e_100ms_p99_delay"]["met"]  # exactly 1.0 s
    assert rows["e2e_100ms_peak_rss"]["met"]  # exactly 150 MB
    assert rows["full_buffer_held_without_growth"]["met"]  # 140 -> 143 MB: 2.1 %
    assert rows["ratio_vs_naive_100ms"]["met"]  # 2,000 / 100 = 20x
    summary = summarize(fabricated_runs())
    summary["e2e_100ms_lww_changes_per_s"] = 1999.0
    summary["e2e_100ms_lww_p99_delay_s"] = 1.01
    summary["ratio_vs_naive_100ms"] = 19.9
    rows = _rows(summary)
    assert not rows["e2e_100ms_changes_per_s"]["met"]
    assert not rows["e2e_100ms_p99_delay"]["met"]
    assert not rows["ratio_vs_naive_100ms"]["met"]


def test_a_buffer_that_grows_or_was_not_held_full_does_not_meet_the_memory_target() -> None:
    growing = hold_summary(
        [
            {"at_s": 0.0, "sent": 0, "unapplied": 1900, "rss_mb": 100.0},
            {"at_s": 1.0, "sent": 1000, "unapplied": 1900, "rss_mb": 100.0},
            {"at_s": 2.0, "sent": 2000, "unapplied": 1900, "rss_mb": 106.0},
        ],
        limit=2000,
    )
    assert growing["rss_growth_pct"] == pytest.approx(6.0)
    assert growing["held_full"]
    runs = fabricated_runs()
    runs["memory"][0].update(growing)
    assert not _rows(summarize(runs))["full_buffer_held_without_growth"]["met"]
    drained = hold_summary(
        [
            {"at_s": 0.0, "sent": 0, "unapplied": 1900, "rss_mb": 100.0},
            {"at_s": 1.0, "sent": 1000, "unapplied": 300, "rss_mb": 100.0},
        ],
        limit=2000,
    )
    assert not drained["held_full"]
    runs["memory"][0].update(drained)
    row = _rows(summarize(runs))["full_buffer_held_without_growth"]
    assert row["measured"] and not row["met"]
    assert row["note"] == "the buffer was not held full"


def test_without_the_json_loads_figure_the_core_target_is_not_measured() -> None:
    summary = summarize(fabricated_runs(json_loads=False))
    assert "core_ratio_vs_json_loads" not in summary
    assert summary["core_cpu_us_per_record"] == 100.0  # the core scenario's own figure
    row = _rows(summary)["core_vs_json_loads"]
    assert row["value"] is None and not row["measured"] and not row["met"]
    printed = table(summary, verdicts(summary), runs=1)
    assert "not measured  core (no I/O)" in printed


def test_the_core_ratio_is_the_quotient_of_the_parts_reported_beside_it() -> None:
    """Medians taken apart (core 34.4, json.loads 11.3) would come from different runs
    and not divide into the median ratio (3.06): the median run's own pair is reported."""
    runs = fabricated_runs()
    template = runs["core"][0]
    runs["core"] = [
        {**template, "core_cpu_us_per_record": cpu, "json_loads_us_per_record": loads}
        for cpu, loads in ((40.38, 13.18), (33.68, 11.34), (34.44, 10.80))
    ]
    summary = summarize(runs)
    assert (summary["core_cpu_us_per_record"], summary["json_loads_us_per_record"]) == (
        40.38,
        13.18,
    )
    assert summary["core_ratio_vs_json_loads"] == 40.38 / 13.18
    runs["core"] = runs["core"][:2]  # an even count: the lower of the two middle runs
    assert summarize(runs)["core_ratio_vs_json_loads"] == 33.68 / 11.34


def test_the_table_prints_a_verdict_value_and_bound_for_every_target() -> None:
    summary = summarize(fabricated_runs())
    printed = table(summary, verdicts(summary), runs=1)
    target_lines = printed.split("targets:\n", 1)[1].splitlines()
    assert len(target_lines) == len(TARGETS)
    assert target_lines[1].startswith("  NOT MET       end to end, saturated, 0 ms, overwrite")
    assert "(bound <= 4.00; 150 us/change, 26.7 us/request)" in target_lines[1]
    assert "host, 4 shards at 0 ms, saturated: 3,000 changes/s" in printed


def test_shards_per_core_is_a_core_over_a_saturated_shards_cpu() -> None:
    assert shards_per_core(500.0) == 2.0
    assert shards_per_core(1437.0) == pytest.approx(0.696, abs=1e-3)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--only", "nosuch"], "--only 'nosuch': 'nosuch' is not one of ceiling, core"),
        (["--only", ""], "--only '': '' is not one of"),
        (["--runs", "0"], "argument --runs: give a count of 1 or more, not '0'"),
        (["--latencies", "-5"], "--latencies '-5': give milliseconds from 0"),
        (["--latencies", "abc"], "--latencies 'abc': give milliseconds from 0"),
        (["--policies", "nosuch"], "--policies 'nosuch': 'nosuch' is not one of last_writer_wins"),
        (["--max-in-flight", "-3"], "argument --max-in-flight: give a count of 1 or more"),
        (["--output", "/nonexistent/dir/r.json"], "its directory /nonexistent/dir does not exist"),
    ],
)
def test_a_bad_option_is_refused_before_anything_runs(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each ran for minutes first and ended in a traceback, or measured nothing, exited 0
    and replaced bench/results.json with empty figures."""
    from bench.__main__ import parse

    with pytest.raises(SystemExit) as refused:
        parse(argv)
    assert refused.value.code == 2
    assert said in capsys.readouterr().err


def test_an_output_that_is_a_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.__main__ import parse

    with pytest.raises(SystemExit):
        parse(["--output", str(tmp_path)])
    assert "is a directory; give the results file's path" in capsys.readouterr().err
    monkeypatch.setenv("BENCH_QUICK", "maybe")
    with pytest.raises(SystemExit):
        parse([])
    assert "BENCH_QUICK='maybe': give 1 (or 0)" in capsys.readouterr().err
    monkeypatch.setenv("BENCH_QUICK", "1")
    plan, output = parse(["--output", str(tmp_path / "r.json"), "--only", "core,host"])
    assert (plan.runs, plan.scenarios, output) == (1, ("core", "host"), tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []  # the probe of the place left nothing


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--records", "0"], "argument --records: give a count of 1 or more, not '0'"),
        (["--policy", "nosuch"], "argument --policy: invalid choice: 'nosuch'"),
        (["--cpu", "4096"], "--cpu 4096: this process may run on CPUs"),
    ],
)
def test_the_core_scenarios_bad_options_are_usage_errors(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """They ran 1,000 records instead, or ended in a traceback (exit 1)."""
    from bench.core import main

    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert said in capsys.readouterr().err
