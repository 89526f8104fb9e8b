"""Medians, the targets and whether each is met, the printed table, results.json."""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.analysis import median

SHORT = {"last_writer_wins": "lww", "overwrite": "overwrite"}


@dataclass(frozen=True)
class Target:
    key: str
    description: str
    limit: float
    at_least: bool  # True: value >= limit; False: value <= limit

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.limit if self.at_least else value <= self.limit


TARGETS = (
    Target("core_records_per_s", "core, one core: records/s", 50_000, True),
    Target(
        "e2e_100ms_lww_changes_per_s",
        "end to end, 100 ms, last_writer_wins: changes/s sustained",
        1_000,
        True,
    ),
    Target(
        "e2e_100ms_lww_p99_delay_s",
        "end to end, 100 ms, last_writer_wins, 1,000/s offered: p99 record-to-applied s",
        1.5,
        False,
    ),
    Target("e2e_100ms_rss_mb", "end to end, 100 ms: peak RSS of the processor, MB", 150, False),
    Target("ratio_vs_naive_100ms", "end to end vs naive baseline at 100 ms: ratio", 20, True),
)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory_mb = 0.0
    try:
        with open("/proc/meminfo") as meminfo:
            memory_mb = int(meminfo.readline().split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    import boto3
    import botocore

    return {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "memory_mb": round(memory_mb),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "boto3": boto3.__version__,
        "botocore": botocore.__version__,
        "load_average": list(os.getloadavg()),
    }


def _median_of(runs: Iterable[dict[str, Any]], key: str) -> float:
    return median(float(run[key]) for run in runs if key in run)


def _select(runs: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [run for run in runs if all(run.get(k) == v for k, v in match.items())]


def summarize(runs: dict[str, Any]) -> dict[str, float]:
    """The flat numeric keys of results.json (medians over runs unless said otherwise)."""
    out: dict[str, float] = {}
    if runs.get("ceiling"):
        out["endpoint_ceiling_requests_per_s"] = _median_of(runs["ceiling"], "requests_per_s")
        out["endpoint_ceiling_cpu_share"] = _median_of(runs["ceiling"], "endpoint_cpu_share")
        # Requests answered per second of the endpoint's own CPU: its ceiling on one core,
        # whether or not the load generator managed to saturate it.
        out["endpoint_requests_per_cpu_s"] = median(
            run["requests_per_s"] / run["endpoint_cpu_share"]
            for run in runs["ceiling"]
            if run["endpoint_cpu_share"] > 0
        )
        out["endpoint_100ms_requests_per_s_256_connections"] = _median_of(
            runs["ceiling"], "latency_100ms_requests_per_s"
        )
    for run_policy, short in SHORT.items():
        core = _select(runs.get("core", []), policy=run_policy, shape="order")
        if core:
            out[f"core_{short}_records_per_s"] = _median_of(core, "records_per_s")
            out[f"core_{short}_cpu_us_per_record"] = _median_of(core, "cpu_us_per_record")
    small = _select(runs.get("core", []), policy="last_writer_wins", shape="small")
    if small:
        out["core_small_items_lww_records_per_s"] = _median_of(small, "records_per_s")
        out["core_small_items_lww_cpu_us_per_record"] = _median_of(small, "cpu_us_per_record")
    for run in runs.get("core", []):
        for step, micros in run.get("breakdown_us", {}).items():
            out[f"core_step_{step}_us"] = float(micros)
    if "core_lww_records_per_s" in out:
        out["core_records_per_s"] = out["core_lww_records_per_s"]
        out["core_cpu_us_per_record"] = out["core_lww_cpu_us_per_record"]
    for mode in ("e2e", "paced"):
        for run in runs.get(mode, []):
            prefix = f"e2e_{run['latency_ms']:g}ms_{SHORT[run['policy']]}"
            group = _select(runs[mode], latency_ms=run["latency_ms"], policy=run["policy"])
            if mode == "e2e":
                for key in ("changes_per_s", "writes_per_s", "cpu_us_per_change"):
                    out[f"{prefix}_{key}"] = _median_of(group, key)
                out[f"{prefix}_saturated_p99_delay_s"] = _median_of(group, "p99_delay_s")
                out[f"{prefix}_rss_mb"] = max(float(r["rss_peak_mb"]) for r in group)
            else:
                out[f"{prefix}_p50_delay_s"] = _median_of(group, "p50_delay_s")
                out[f"{prefix}_p99_delay_s"] = _median_of(group, "p99_delay_s")
                out[f"{prefix}_paced_changes_per_s"] = _median_of(group, "changes_per_s")
                out[f"{prefix}_paced_rss_mb"] = max(float(r["rss_peak_mb"]) for r in group)
    if runs.get("memory"):
        out["e2e_100ms_lww_full_buffer_rss_mb"] = max(
            float(run["rss_peak_mb"]) for run in runs["memory"]
        )
        out["max_buffered_changes"] = float(runs["memory"][0]["max_buffered_changes"])
    peaks = [
        float(run["rss_peak_mb"])
        for mode in ("e2e", "paced", "memory")
        for run in _select(runs.get(mode, []), latency_ms=100.0, policy="last_writer_wins")
    ]
    if peaks:
        out["e2e_100ms_rss_mb"] = max(peaks)
    for run in runs.get("naive", []):
        latency = run["latency_ms"]
        group = _select(runs["naive"], latency_ms=latency)
        naive_rate = _median_of(group, "changes_per_s")
        out[f"naive_{latency:g}ms_changes_per_s"] = naive_rate
        for short in SHORT.values():
            ours = out.get(f"e2e_{latency:g}ms_{short}_changes_per_s")
            if ours is not None and naive_rate:
                suffix = "" if short == "lww" else "_overwrite"
                out[f"ratio_vs_naive_{latency:g}ms{suffix}"] = ours / naive_rate
    for run_policy, short in SHORT.items():
        hot = _select(runs.get("hot", []), policy=run_policy)
        if hot:
            out[f"hot_{short}_writes"] = _median_of(hot, "writes")
            out[f"hot_{short}_writes_per_key_per_batch"] = _median_of(
                hot, "writes_per_key_per_batch"
            )
    if runs.get("naive_hot"):
        out["naive_hot_writes_per_key_per_batch"] = float(
            runs["naive_hot"]["writes_per_key_per_batch"]
        )
    return out


def verdicts(summary: dict[str, float]) -> list[dict[str, Any]]:
    rows = []
    for target in TARGETS:
        value = summary.get(target.key, math.nan)
        rows.append(
            {
                "key": target.key,
                "target": target.description,
                "limit": target.limit,
                "comparison": ">=" if target.at_least else "<=",
                "value": value,
                "measured": not math.isnan(value),
                "met": target.met(value),
            }
        )
    return rows


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(summary: dict[str, float], rows: list[dict[str, Any]], runs: int) -> str:
    get: Callable[[str], float] = lambda key: summary.get(key, math.nan)  # noqa: E731
    lines = [f"Medians over {runs} run(s) (peak RSS: the largest of the runs).", ""]
    if "endpoint_ceiling_requests_per_s" in summary:
        lines.append(
            f"fake endpoint ceiling: {_fmt(get('endpoint_ceiling_requests_per_s'))} requests/s "
            f"at 0 ms with its process at {get('endpoint_ceiling_cpu_share'):.0%} of a core "
            f"({_fmt(get('endpoint_requests_per_cpu_s'))} requests per CPU second); "
            f"{_fmt(get('endpoint_100ms_requests_per_s_256_connections'))} requests/s at "
            "100 ms over 256 connections"
        )
    lines.append("")
    lines.append(f"{'core (no I/O)':<34}{'records/s':>12}{'CPU us/record':>15}")
    for short in SHORT.values():
        lines.append(
            f"  {short:<32}{_fmt(get(f'core_{short}_records_per_s')):>12}"
            f"{_fmt(get(f'core_{short}_cpu_us_per_record')):>15}"
        )
    lines.append(
        f"  {'lww, small items':<32}{_fmt(get('core_small_items_lww_records_per_s')):>12}"
        f"{_fmt(get('core_small_items_lww_cpu_us_per_record')):>15}"
    )
    steps = sorted(
        (key[len("core_step_") : -len("_us")], value)
        for key, value in summary.items()
        if key.startswith("core_step_") and key != "core_step_decode_whole_us"
    )
    if steps:
        lines.append(
            "  where it goes (us/record, lww): "
            + ", ".join(f"{name} {value:.1f}" for name, value in steps)
        )
    lines.append("")
    header = (
        f"{'end to end':<22}{'changes/s':>10}{'writes/s':>10}{'CPU us/ch':>10}"
        f"{'p50 s':>8}{'p99 s':>8}{'RSS MB':>8}{'naive/s':>9}{'ratio':>8}"
    )
    lines.append(header)
    latencies = sorted(
        {float(k.split("_")[1][:-2]) for k in summary if k.startswith("e2e_") and "ms_" in k}
    )
    for latency in latencies:
        for short in SHORT.values():
            prefix = f"e2e_{latency:g}ms_{short}"
            suffix = "" if short == "lww" else "_overwrite"
            lines.append(
                f"  {f'{latency:g} ms {short}':<20}"
                f"{_fmt(get(prefix + '_changes_per_s')):>10}"
                f"{_fmt(get(prefix + '_writes_per_s')):>10}"
                f"{_fmt(get(prefix + '_cpu_us_per_change')):>10}"
                f"{_fmt(get(prefix + '_p50_delay_s')):>8}"
                f"{_fmt(get(prefix + '_p99_delay_s')):>8}"
                f"{_fmt(max(get(prefix + '_rss_mb'), get(prefix + '_paced_rss_mb'))):>8}"
                f"{_fmt(get(f'naive_{latency:g}ms_changes_per_s')):>9}"
                f"{_fmt(get(f'ratio_vs_naive_{latency:g}ms{suffix}')):>8}"
            )
    lines.append("  (changes/s, writes/s, CPU: saturated runs; p50/p99: 1,000 changes/s offered)")
    if "e2e_100ms_lww_full_buffer_rss_mb" in summary:
        lines.append(
            f"  peak RSS with a full buffer ({_fmt(get('max_buffered_changes'))} changes), "
            f"100 ms lww: {_fmt(get('e2e_100ms_lww_full_buffer_rss_mb'))} MB"
        )
    lines.append("")
    lines.append(
        f"hot keys (10 keys, 10,000 updates, 100 ms): writes per key per batch of 1,000: "
        f"lww {_fmt(get('hot_lww_writes_per_key_per_batch'))}, "
        f"overwrite {_fmt(get('hot_overwrite_writes_per_key_per_batch'))}, "
        f"naive {_fmt(get('naive_hot_writes_per_key_per_batch'))}"
    )
    lines.append("")
    lines.append("targets:")
    for row in rows:
        verdict = "MET" if row["met"] else ("NOT MET" if row["measured"] else "NOT MEASURED")
        lines.append(
            f"  {verdict:<13}{row['target']}: {_fmt(row['value'])} "
            f"(target {row['comparison']} {_fmt(row['limit'])})"
        )
    return "\n".join(lines)
