"""``make bench`` / ``python -m bench``: every scenario, a table, and bench/results.json.

Options (also as environment variables, for ``make bench``):

  --quick          (BENCH_QUICK=1)   one run of each, smaller workloads (about 2 minutes)
  --runs N         (BENCH_RUNS)      runs per measurement (default 3)
  --only a,b       (BENCH_ONLY)      scenarios: ceiling, core, e2e, paced, memory, hot, naive, host
  --latencies ...  (BENCH_LATENCIES) e.g. 100 or 0,20,100
  --policies ...   (BENCH_POLICIES)  last_writer_wins, overwrite
  --max-in-flight  (BENCH_MAX_IN_FLIGHT) override writer.max_in_flight in the job
  --max-buffered   (BENCH_MAX_BUFFERED) override writer.max_buffered_changes in the job
  --profile DIR    (BENCH_PROFILE)   sample each processor run with py-spy into DIR
  --output FILE    (BENCH_OUTPUT)    default bench/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.report import REQUIRED_KEYS, machine, summarize, table, verdicts
from bench.runner import Plan, run_all


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def parse(argv: list[str] | None) -> tuple[Plan, Path]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", default=_env("BENCH_QUICK") == "1")
    parser.add_argument("--runs", type=int, default=_env("BENCH_RUNS"))
    parser.add_argument("--only", default=_env("BENCH_ONLY"))
    parser.add_argument("--latencies", default=_env("BENCH_LATENCIES"))
    parser.add_argument("--policies", default=_env("BENCH_POLICIES"))
    parser.add_argument("--max-in-flight", type=int, default=_env("BENCH_MAX_IN_FLIGHT"))
    parser.add_argument("--max-buffered", type=int, default=_env("BENCH_MAX_BUFFERED"))
    parser.add_argument("--profile", type=Path, default=_env("BENCH_PROFILE"))
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(_env("BENCH_OUTPUT") or Path(__file__).parent / "results.json"),
    )
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    changes: dict[str, Any] = {}
    if args.runs:
        changes["runs"] = int(args.runs)
    if args.only:
        changes["scenarios"] = tuple(part.strip() for part in args.only.split(","))
    if args.latencies:
        changes["latencies_ms"] = tuple(float(part) for part in args.latencies.split(","))
    if args.policies:
        changes["policies"] = tuple(part.strip() for part in args.policies.split(","))
    if args.max_in_flight:
        changes["max_in_flight"] = int(args.max_in_flight)
    if args.max_buffered:
        changes["max_buffered"] = int(args.max_buffered)
    if args.profile:
        changes["profile_dir"] = Path(args.profile)
    return replace(plan, **changes), args.output


def main(argv: list[str] | None = None) -> int:
    plan, output = parse(argv)
    if plan.profile_dir is not None and shutil.which("py-spy") is None:
        print("--profile needs py-spy on PATH (pip install py-spy)", file=sys.stderr)
        return 2
    before = machine()

    def say(line: str) -> None:
        print(f"  {line}", file=sys.stderr, flush=True)

    print(
        f"benchmarks: {plan.runs} run(s) each; scenarios {', '.join(plan.scenarios)}",
        file=sys.stderr,
    )
    started = time.time()
    runs = run_all(plan, say)
    duration_s = round(time.time() - started, 1)
    summary = summarize(runs)
    rows = verdicts(summary)
    after = machine()
    results: dict[str, Any] = {
        **{key: None for key in REQUIRED_KEYS},
        **summary,
        "targets": rows,
        "targets_met": sum(1 for row in rows if row["met"]),
        "targets_measured": sum(1 for row in rows if row["measured"]),
        "machine": {**before, "load_average_after": after["load_average"]},
        "conditions": {
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "duration_s": duration_s,
            "plan": {
                key: (str(value) if isinstance(value, Path) else value)
                for key, value in plan.__dict__.items()
                if key != "naive_records"
            },
            "naive_records": {f"{k:g}ms": v for k, v in plan.naive_records.items()},
            "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        },
        "runs": runs,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".tmp")
    partial.write_text(json.dumps(results, indent=2, default=str) + "\n")
    partial.replace(output)
    print(table(summary, rows, plan.runs))
    print(f"\nresults: {output} ({duration_s} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
