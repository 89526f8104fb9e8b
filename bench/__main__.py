"""``make bench`` / ``python -m bench``: every scenario, a table, and bench/results.json.

Options (also as environment variables, for ``make bench``):

  --quick          (BENCH_QUICK=1)   one run of each, smaller workloads (1.5 to 3 minutes)
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
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import fake_endpoint
from bench.analysis import positive_count
from bench.report import REQUIRED_KEYS, machine, summarize, table, verdicts
from bench.runner import POLICIES, Plan, run_all


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def _listed(
    parser: argparse.ArgumentParser, option: str, text: str, allowed: tuple[str, ...]
) -> tuple[str, ...]:
    """The comma-separated names of ``text``, each one of ``allowed``: a name measured
    nothing and still replaced the results with empty figures."""
    names = tuple(part.strip() for part in text.split(","))
    wrong = [name for name in names if name not in allowed]
    if wrong or not names:
        parser.error(
            f"{option} {text!r}: {', '.join(map(repr, wrong)) or 'nothing'} is not one of "
            + ", ".join(allowed)
        )
    return names


def _latencies(parser: argparse.ArgumentParser, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0 <= value < 60_000 for value in values):
        parser.error(f"--latencies {text!r}: give milliseconds from 0, comma-separated")
    return values


def _quick_default(parser: argparse.ArgumentParser) -> bool:
    text = (_env("BENCH_QUICK") or "").strip().lower()
    if text not in ("", "0", "1", "true", "false", "yes", "no"):
        parser.error(f"BENCH_QUICK={text!r}: give 1 (or 0)")
    return text in ("1", "true", "yes")


def _writable(parser: argparse.ArgumentParser, output: Path) -> Path:
    """Refused before the run, which takes minutes: a directory that does not exist (it
    was made, from the root), a directory given as the file, a place not writable."""
    if output.is_dir():
        parser.error(f"--output {output}: is a directory; give the results file's path")
    if not output.parent.is_dir():
        parser.error(f"--output {output}: its directory {output.parent} does not exist")
    probe = output.with_name(output.name + ".tmp")
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        parser.error(f"--output {output}: cannot be written ({error.strerror or error})")
    return output


def parse(argv: list[str] | None) -> tuple[Plan, Path]:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the docstring's table
    )
    parser.add_argument("--quick", action="store_true", default=_quick_default(parser))
    parser.add_argument("--runs", type=positive_count, default=_env("BENCH_RUNS"))
    parser.add_argument("--only", default=_env("BENCH_ONLY"))
    parser.add_argument("--latencies", default=_env("BENCH_LATENCIES"))
    parser.add_argument("--policies", default=_env("BENCH_POLICIES"))
    parser.add_argument("--max-in-flight", type=positive_count, default=_env("BENCH_MAX_IN_FLIGHT"))
    parser.add_argument("--max-buffered", type=positive_count, default=_env("BENCH_MAX_BUFFERED"))
    parser.add_argument("--profile", type=Path, default=_env("BENCH_PROFILE"))
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(_env("BENCH_OUTPUT") or Path(__file__).parent / "results.json"),
    )
    args = parser.parse_args(argv)
    plan = Plan.quick() if args.quick else Plan()
    changes: dict[str, Any] = {}
    # Given (not None): an empty --only or a 0 count is refused, not taken as the default.
    if args.runs is not None:
        changes["runs"] = _positive_or_error(parser, "--runs", args.runs)
    if args.only is not None:
        changes["scenarios"] = _listed(parser, "--only", args.only, Plan().scenarios)
    if args.latencies is not None:
        changes["latencies_ms"] = _latencies(parser, args.latencies)
    if args.policies is not None:
        changes["policies"] = _listed(parser, "--policies", args.policies, POLICIES)
    if args.max_in_flight is not None:
        changes["max_in_flight"] = _positive_or_error(parser, "--max-in-flight", args.max_in_flight)
    if args.max_buffered is not None:
        changes["max_buffered"] = _positive_or_error(parser, "--max-buffered", args.max_buffered)
    if args.profile:
        changes["profile_dir"] = Path(args.profile)
    return replace(plan, **changes), _writable(parser, args.output)


def _positive_or_error(parser: argparse.ArgumentParser, option: str, value: Any) -> int:
    """An environment variable's value (argparse converts only what the command line
    gives) as a count of 1 or more."""
    try:
        return positive_count(str(value))
    except argparse.ArgumentTypeError:
        parser.error(f"{option} {value!r}: give a count of 1 or more")


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
    # Ctrl-C stops the run even where it was started with SIGINT ignored (a background
    # job of a script), as every replicator command does; the endpoint's watch uses it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        runs = run_all(plan, say)
    except (KeyboardInterrupt, Exception) as error:
        # The scenarios' processes end as the parent closes their input; results are
        # written only at the end, so the last run's file is as it was. An endpoint that
        # died is said whichever came first: its watch's interrupt, or a failed call.
        if fake_endpoint.GONE:
            print(f"benchmarks: {fake_endpoint.GONE[0]}; no results written", file=sys.stderr)
            return 1
        if not isinstance(error, KeyboardInterrupt):
            raise
        print("benchmarks: interrupted; no results written", file=sys.stderr)
        return 130
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
