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
# A full buffer is held "without growth" when the resident set in the second half of the
# hold exceeds the first half's by at most this much (the collector's ups and downs).
FULL_BUFFER_GROWTH_PCT = 5.0


@dataclass(frozen=True)
class Target:
    """One of the performance targets: ``key`` of the summary against ``bound``."""

    name: str
    description: str
    key: str
    bound: float
    at_least: bool  # True: value >= bound; False: value <= bound
    # Summary keys printed after the value (the figures a ratio is made of).
    detail: tuple[tuple[str, str], ...] = ()
    # A summary key that must be 1 for the measurement to count (else: not met, and why).
    requires: tuple[str, str] | None = None

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.bound if self.at_least else value <= self.bound


ENDPOINT_RATIO_BOUND = 4.0

# Keys results.json always has at its top level (null when the run did not measure them).
REQUIRED_KEYS = (
    "e2e_0ms_lww_cpu_us_per_change",
    "e2e_100ms_lww_cpu_us_per_change",
    "endpoint_cpu_us_per_request",
    "cpu_ratio_vs_endpoint_0ms",
    "cpu_ratio_vs_endpoint_100ms",
    "core_cpu_us_per_record",
    "json_loads_us_per_record",
    "core_ratio_vs_json_loads",
    "e2e_100ms_lww_changes_per_s",
    "e2e_100ms_lww_p99_delay_s",
    "e2e_100ms_rss_mb",
    "ratio_vs_naive_100ms",
    "host_4_shards_changes_per_s",
)


def _endpoint_ratio(latency: int, short: str) -> Target:
    policy = "last_writer_wins" if short == "lww" else "overwrite"
    suffix = "" if short == "lww" else "_overwrite"
    return Target(
        name=f"cpu_vs_endpoint_{latency}ms_{short}",
        description=(
            f"end to end, saturated, {latency} ms, {policy}: "
            "processor CPU per change / endpoint CPU per request"
        ),
        key=f"cpu_ratio_vs_endpoint_{latency}ms{suffix}",
        bound=ENDPOINT_RATIO_BOUND,
        at_least=False,
        detail=(
            (f"e2e_{latency}ms_{short}_cpu_us_per_change", "us/change"),
            ("endpoint_cpu_us_per_request", "us/request"),
        ),
    )


# Issue 16's targets. Every ratio is made of figures from the same run.
TARGETS = (
    _endpoint_ratio(0, "lww"),
    _endpoint_ratio(0, "overwrite"),
    _endpoint_ratio(100, "lww"),
    _endpoint_ratio(100, "overwrite"),
    Target(
        "core_vs_json_loads",
        "core (no I/O): CPU per record / json.loads of the same record data",
        "core_ratio_vs_json_loads",
        1.0,
        False,
        detail=(
            ("core_cpu_us_per_record", "us/record"),
            ("json_loads_us_per_record", "us json.loads"),
        ),
    ),
    Target(
        "e2e_100ms_changes_per_s",
        "100 ms, saturated, last_writer_wins: changes/s sustained by one processor",
        "e2e_100ms_lww_changes_per_s",
        2_000,
        True,
    ),
    Target(
        "e2e_100ms_p99_delay",
        "100 ms, last_writer_wins, 1,000 changes/s offered: p99 record-to-applied, s",
        "e2e_100ms_lww_p99_delay_s",
        1.0,
        False,
    ),
    Target(
        "e2e_100ms_peak_rss",
        "100 ms: peak RSS of the processor (every run, full buffer included), MB",
        "e2e_100ms_rss_mb",
        150,
        False,
    ),
    Target(
        "full_buffer_held_without_growth",
        "full buffer held: RSS growth, largest of the hold's second half over its first, %",
        "full_buffer_rss_growth_pct",
        FULL_BUFFER_GROWTH_PCT,
        False,
        detail=(
            ("full_buffer_hold_changes", "changes through the held buffer"),
            ("full_buffer_hold_min_fill_pct", "% full at least"),
        ),
        requires=("full_buffer_held_full", "the buffer was not held full"),
    ),
    Target(
        "ratio_vs_naive_100ms",
        "100 ms, last_writer_wins: changes/s over the naive baseline's, x",
        "ratio_vs_naive_100ms",
        20,
        True,
    ),
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
        if out["endpoint_requests_per_cpu_s"] > 0:
            out["endpoint_ceiling_cpu_us_per_request"] = 1e6 / out["endpoint_requests_per_cpu_s"]
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
    out.update(_core_vs_json(runs.get("core", [])))
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
        out.update(_full_buffer_hold(runs["memory"]))
    out.update(_endpoint_cost(runs.get("e2e", []), out))
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
    out.update(_host(runs.get("host", [])))
    return out


def _core_vs_json(core: list[dict[str, Any]]) -> dict[str, float]:
    """The core's CPU per record against ``json.loads`` of the same records' data, in the
    same run, when the core scenario measures it: the run whose ratio is the median (the
    lower of the two middle ones for an even count), with that run's own two figures, so
    that the ratio reported is the quotient of the parts reported beside it."""
    measured = [run for run in core if "json_loads_us_per_record" in run]
    preferred = _select(measured, policy="last_writer_wins", shape="order") or measured
    preferred = [run for run in preferred if float(run["json_loads_us_per_record"]) > 0]
    if not preferred:
        return {}

    pairs = [
        (
            float(run.get("core_cpu_us_per_record", run.get("cpu_us_per_record", 0.0))),
            float(run["json_loads_us_per_record"]),
        )
        for run in preferred
    ]
    ranked = sorted(pairs, key=lambda pair: pair[0] / pair[1])
    cpu, loads = ranked[(len(ranked) - 1) // 2]
    return {
        "json_loads_us_per_record": loads,
        "core_cpu_us_per_record": cpu,
        "core_ratio_vs_json_loads": cpu / loads,
    }


def _endpoint_cost(saturated: list[dict[str, Any]], out: dict[str, float]) -> dict[str, float]:
    """The fake endpoint's own CPU per request it answered during the saturated end-to-end
    runs (its CPU time over their requests, all runs pooled, so that the 10,000s of
    requests make one figure), and each run's processor CPU per change against it."""
    runs = [run for run in saturated if run.get("requests") and "endpoint_cpu_s" in run]
    if not runs:
        return {}
    result: dict[str, float] = {}

    def pooled(group: list[dict[str, Any]]) -> float:
        requests = sum(int(run["requests"]) for run in group)
        return sum(float(run["endpoint_cpu_s"]) for run in group) / requests * 1e6

    result["endpoint_cpu_us_per_request"] = endpoint = pooled(runs)
    for latency in sorted({float(run["latency_ms"]) for run in runs}):
        group = _select(runs, latency_ms=latency)
        result[f"endpoint_cpu_us_per_request_{latency:g}ms"] = pooled(group)
        for short in SHORT.values():
            cpu = out.get(f"e2e_{latency:g}ms_{short}_cpu_us_per_change")
            if cpu is not None and endpoint > 0:
                suffix = "" if short == "lww" else "_overwrite"
                result[f"cpu_ratio_vs_endpoint_{latency:g}ms{suffix}"] = cpu / endpoint
                # The same against the endpoint at its ceiling (small requests back to
                # back): a stricter yardstick, shown beside the target, never instead.
                ceiling = out.get("endpoint_ceiling_cpu_us_per_request")
                if ceiling:
                    result[f"cpu_ratio_vs_endpoint_ceiling_{latency:g}ms{suffix}"] = cpu / ceiling
    return result


def _full_buffer_hold(memory: list[dict[str, Any]]) -> dict[str, float]:
    held = [run for run in memory if "hold_rss_first_half_mb" in run]
    if not held:
        return {}
    run = held[0]
    return {
        "full_buffer_rss_growth_mb": float(run["rss_growth_mb"]),
        "full_buffer_rss_growth_pct": float(run["rss_growth_pct"]),
        "full_buffer_hold_rss_mb": float(run["hold_rss_second_half_mb"]),
        "full_buffer_hold_changes": float(run["hold_changes"]),
        "full_buffer_hold_s": float(run["hold_seconds"]),
        "full_buffer_hold_min_fill_pct": float(run["hold_min_fill"]) * 100,
        "full_buffer_held_full": 1.0 if run["held_full"] else 0.0,
    }


def _host(host: list[dict[str, Any]]) -> dict[str, float]:
    if not host:
        return {}
    shards = int(host[0]["shards"])
    prefix = f"host_{shards}_shards"
    return {
        f"{prefix}_changes_per_s": _median_of(host, "changes_per_s"),
        f"{prefix}_cpu_us_per_change": _median_of(host, "cpu_us_per_change"),
        f"{prefix}_cpu_share": _median_of(host, "cpu_share"),
        f"{prefix}_endpoint_cpu_share": _median_of(host, "endpoint_cpu_share"),
        f"{prefix}_bench_cpu_share": _median_of(host, "bench_cpu_share"),
        "shards_per_core": _median_of(host, "shards_per_core"),
    }


def verdicts(summary: dict[str, float]) -> list[dict[str, Any]]:
    """Each target, MET or NOT MET from this run's figures (not measured: NOT MET)."""
    rows = []
    for target in TARGETS:
        value = summary.get(target.key, math.nan)
        measured = not math.isnan(value)
        met = target.met(value)
        note = ""
        if measured and target.requires is not None:
            key, why = target.requires
            if summary.get(key) != 1.0:
                met, note = False, why
        rows.append(
            {
                "name": target.name,
                "target": target.description,
                "key": target.key,
                "value": value if measured else None,
                "bound": target.bound,
                "comparison": ">=" if target.at_least else "<=",
                "measured": measured,
                "met": met,
                "detail": {key: summary.get(key) for key, _ in target.detail},
                "note": note,
            }
        )
    return rows


def _fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
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
    if "json_loads_us_per_record" in summary:
        lines.append(
            f"  lww: {_fmt(get('core_cpu_us_per_record'))} us of core CPU per record against "
            f"{_fmt(get('json_loads_us_per_record'))} us for json.loads of its data: "
            f"{_fmt(get('core_ratio_vs_json_loads'))}x"
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
        {
            float(k.split("_")[1][:-2])
            for k in summary
            if k.startswith("e2e_") and k.endswith(("_cpu_us_per_change", "_p99_delay_s"))
        }
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
    if "endpoint_cpu_us_per_request" in summary:
        per_latency = ", ".join(
            f"{key[len('endpoint_cpu_us_per_request_') :]} {_fmt(value)}"
            for key, value in sorted(summary.items())
            if key.startswith("endpoint_cpu_us_per_request_")
        )
        lines.append(
            f"  fake endpoint's own CPU per request it answered in the saturated runs: "
            f"{_fmt(get('endpoint_cpu_us_per_request'))} us ({per_latency}; at its ceiling "
            f"{_fmt(get('endpoint_ceiling_cpu_us_per_request'))} us)"
        )
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
    host = [key for key in summary if key.startswith("host_") and key.endswith("_changes_per_s")]
    if host:
        prefix = host[0][: -len("_changes_per_s")]
        shards = prefix.split("_")[1]
        lines.append("")
        lines.append(
            f"host, {shards} shards at 0 ms, saturated: {_fmt(get(prefix + '_changes_per_s'))} "
            f"changes/s in all, {_fmt(get(prefix + '_cpu_us_per_change'))} us processor CPU "
            f"per change ({get(prefix + '_cpu_share'):.2f} cores): "
            f"{get('shards_per_core'):.2f} saturated shards (1,000 changes/s) per core; "
            f"endpoint at {get(prefix + '_endpoint_cpu_share'):.0%} of a core, "
            f"benchmark process at {get(prefix + '_bench_cpu_share'):.0%}"
        )
    lines.append("")
    lines.append("targets:")
    lines.extend(target_lines(rows))
    return "\n".join(lines)


def target_lines(rows: list[dict[str, Any]]) -> list[str]:
    """One line per target: the verdict, the measured value, the bound, and the figures
    the value is made of."""
    units = {target.name: target.detail for target in TARGETS}
    lines = []
    for row in rows:
        verdict = "MET" if row["met"] else ("NOT MET" if row["measured"] else "not measured")
        parts = [
            f"{_fmt(row['detail'].get(key))} {unit}"
            for key, unit in units.get(row["name"], ())
            if row["detail"].get(key) is not None
        ]
        if row["note"]:
            parts.append(row["note"])
        extra = f"; {', '.join(parts)}" if parts else ""
        lines.append(
            f"  {verdict:<14}{row['target']}: {_fmt(row['value'])} "
            f"(bound {row['comparison']} {_fmt(row['bound'])}{extra})"
        )
    return lines
