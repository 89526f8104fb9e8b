"""The embedded demo as `make run` runs it: a subprocess that must end with a convergence
report and exit 0, and whose /metrics, read while it lingers after the check, report lag
and write outcomes per destination that agree with what was replicated."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from replicator.cli import cli
from tests.support import ROOT
from tests.support.e2e import PATIENCE

DESTINATIONS = ("eu-west-1/demo-orders-replica", "ap-southeast-2/demo-orders-replica")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_demo(
    port: int,
    scratch: Path,
    *args: str,
    ignored: tuple[signal.Signals, ...] = (),
    extra_env: dict[str, str] | None = None,
    cwd: Path = ROOT,
) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    # Its own temporary directory: the local runtime's per-task lock lives there, and
    # another run of the suite on the same host must not hold this demo's lock.
    env = {
        **os.environ,
        "REPLICATOR_DEMO_METRICS_PORT": str(port),
        "TMPDIR": str(scratch),
        **(extra_env or {}),
    }
    # An ignored signal is inherited across exec: SIGINT as by a background job of a
    # non-interactive shell (CI), SIGHUP as by nohup.
    previous = {stop: signal.signal(stop, signal.SIG_IGN) for stop in ignored}
    # A short run by default; an option given in args replaces its default (the CLI
    # refuses an option given twice).
    defaults = [
        word
        for option, value in (("--duration", "4"), ("--rate", "30"))
        if option not in args
        for word in (option, value)
    ]
    try:
        demo = subprocess.Popen(
            [sys.executable, "-m", "replicator", "demo", *defaults, *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert demo.stdout is not None
        for line in demo.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return demo, lines


def read_until(lines: queue.Queue[str | None], marker: str, seen: list[str]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise AssertionError(f"the demo ended before {marker!r}:\n{''.join(seen)}")
        seen.append(line)
        if marker in line:
            return
    raise AssertionError(f"no {marker!r} within 180 s:\n{''.join(seen)}")


def stopped(demo: subprocess.Popen[str], lines: queue.Queue[str | None], seen: list[str]) -> int:
    """The demo's exit status once it stops; killed, and failing with its output, if it
    does not stop in time (so it cannot outlive the test)."""
    try:
        return demo.wait(timeout=90 * PATIENCE)
    except subprocess.TimeoutExpired:
        demo.kill()
        demo.wait()
        while (line := lines.get(timeout=10)) is not None:
            seen.append(line)
        raise AssertionError("the demo did not stop after Ctrl-C:\n" + "".join(seen)) from None


def stopped_with_output(
    demo: subprocess.Popen[str], lines: queue.Queue[str | None], seen: list[str]
) -> tuple[int, str]:
    """The demo's exit status once it stops (:func:`stopped`), and all it printed."""
    status = stopped(demo, lines, seen)
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    return status, "".join(seen)


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), sample.value))
    return samples


def total(samples: list[tuple[dict[str, str], float]], **labels: str) -> float:
    return sum(v for have, v in samples if all(have.get(k) == w for k, w in labels.items()))


def test_the_demo_converges_and_its_metrics_agree_with_what_was_replicated(
    tmp_path: Path,
) -> None:
    port = free_port()
    demo, lines = start_demo(port, tmp_path, "--linger", "120")
    seen: list[str] = []
    try:
        read_until(lines, "keeps running", seen)
        output = "".join(seen)
        assert "converged: every destination equals the source" in output
        assert "/s of the 30/s asked" in output
        # Its workload updates only items that exist: one record per change counted.
        assert "records read can exceed source changes" not in output
        # Read exceeds applied by the changes squashed, which the progress counts apart.
        assert re.search(r"read \d+  squashed \d+", output), output
        assert "(squashed: changes replaced by a later change to the same item before" in output
        for destination in DESTINATIONS:
            assert f"{destination}: equal (every item compared)" in output
            # Off a terminal, the progress lines say what the live table shows.
            progress = rf"{destination}: applied \d+ lost conflicts \d+ dead letters \d+ lag "
            assert re.search(progress, output), output

        samples = scrape(port)
        received = total(samples["replicator_records_received_total"])
        squashed = total(samples["replicator_squashed_total"])
        assert received > 0
        for destination in DESTINATIONS:
            writes = samples["replicator_writes_total"]
            applied = total(writes, destination=destination, outcome="applied")
            settled = sum(
                total(writes, destination=destination, outcome=outcome)
                for outcome in ("applied", "unchanged", "conflict_lost", "loop_skipped", "filtered")
            )
            assert total(writes, destination=destination, outcome="dead_lettered") == 0
            # Every change read was written there once or replaced by a newer change.
            assert received - squashed <= settled <= received
            # Each applied write was timed from its record's creation.
            delays = samples["replicator_apply_delay_seconds_count"]
            assert total(delays, destination=destination) == applied > 0
            lag = [
                v
                for labels, v in samples["replicator_replication_lag_seconds"]
                if labels["destination"] == destination
            ]
            assert lag and max(lag) == 0.0  # converged: nothing held back
        assert total(samples["replicator_checkpoints_total"]) > 0
    finally:
        demo.send_signal(signal.SIGINT)
        status, output = stopped_with_output(demo, lines, seen)
    # Ctrl-C during the linger is a stop as at any other moment (the README's exit 130).
    assert status == 130, output
    assert "interrupted: stopping the replicator" in output, output
    assert_nothing_left(tmp_path)


def assert_nothing_left(scratch: Path) -> None:
    """The demo's temporary directory (its TMPDIR) as it was: no files directory of the
    run (it wrote none), no lock file of its runtime (one a run, which piled up)."""
    assert sorted(path.name for path in scratch.iterdir()) == []


@pytest.mark.parametrize(
    ("stop", "said"),
    [
        (signal.SIGINT, "interrupted: stopping the replicator"),
        (signal.SIGTERM, "interrupted (SIGTERM): stopping the replicator"),
        (signal.SIGHUP, "interrupted (SIGHUP): stopping the replicator"),
    ],
    ids=["SIGINT", "SIGTERM", "SIGHUP"],
)
def test_the_demo_stops_cleanly_on_a_stop_signal_while_it_replicates(
    tmp_path: Path, stop: signal.Signals, said: str
) -> None:
    """Ctrl-C (also where SIGINT was ignored at start), kill or a closed terminal: the
    replicator stopped, one line, its files removed, and 128 + the signal."""
    port = free_port()
    demo, lines = start_demo(port, tmp_path, "--duration", "60", ignored=(signal.SIGINT,))
    seen: list[str] = []
    read_until(lines, "metrics:", seen)
    demo.send_signal(stop)
    status, output = stopped_with_output(demo, lines, seen)
    assert status == 128 + stop, output
    assert said in output, output
    assert "Traceback" not in output, output
    assert_nothing_left(tmp_path)


@pytest.mark.parametrize("when", ["at once", "during the stop"])
def test_a_second_stop_signal_lets_the_first_ones_stop_finish(tmp_path: Path, when: str) -> None:
    """SIGTERM, then SIGTERM again while the demo stopped: the second cut the stop short
    (its files and lock left in the temporary directory, the replicator's children
    logging after the demo had ended) and, raised from the demo's own handler, was
    named ``SIGINT received`` with exit 130. The first signal's stop is finished."""
    port = free_port()
    demo, lines = start_demo(port, tmp_path, "--duration", "60")
    seen: list[str] = []
    read_until(lines, "metrics:", seen)
    demo.send_signal(signal.SIGTERM)
    if when == "during the stop":
        read_until(lines, "stopping the replicator", seen)
    demo.send_signal(signal.SIGTERM)
    status, output = stopped_with_output(demo, lines, seen)
    assert status == 128 + signal.SIGTERM, output
    assert "interrupted (SIGTERM): stopping the replicator" in output, output
    assert "SIGINT" not in output, output
    assert "Traceback" not in output, output
    assert_nothing_left(tmp_path)


def test_a_stop_signal_after_the_check_waits_for_the_replicators_stop(tmp_path: Path) -> None:
    """A SIGTERM while the demo stopped its replicator after the check cut that stop
    short: the lock and the run's directories were left. The stop finishes, and the
    demo ends with 128 + the signal."""
    port = free_port()
    demo, lines = start_demo(port, tmp_path, "--duration", "1")
    seen: list[str] = []
    read_until(lines, "equal (every item compared)", seen)
    demo.send_signal(signal.SIGTERM)
    status, output = stopped_with_output(demo, lines, seen)
    assert status == 128 + signal.SIGTERM, output
    assert "Traceback" not in output, output
    assert_nothing_left(tmp_path)


def piped_demo(tmp_path: Path) -> subprocess.Popen[str]:
    """A minute's demo with its stdout and stderr pipes, its temporary files in
    ``tmp_path``."""
    env = {**os.environ, "REPLICATOR_DEMO_METRICS_PORT": str(free_port()), "TMPDIR": str(tmp_path)}
    return subprocess.Popen(
        [sys.executable, "-m", "replicator", "demo", "--duration", "60", "--rate", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def waited(demo: subprocess.Popen[Any], timeout: float) -> int:
    """The demo's exit status once it ends; killed if it does not end within ``timeout``
    seconds (the wait then fails the test), so that it cannot outlive the test."""
    try:
        return demo.wait(timeout=timeout)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()


def ended(demo: subprocess.Popen[str]) -> tuple[int, str]:
    """A piped demo's exit status once it ends (:func:`waited`), and its stderr."""
    status = waited(demo, 90 * PATIENCE)
    assert demo.stderr is not None
    return status, demo.stderr.read()


def test_a_demo_whose_output_is_closed_stops_its_replicator_and_leaves_no_lock(
    tmp_path: Path,
) -> None:
    """`replicator demo | head -3`: the demo ends at its next line (exit 1 and one line
    saying so), and its replicator is stopped first. It was left to die
    with the process, its host lock file left in the temporary directory for each run."""
    demo = piped_demo(tmp_path)
    assert demo.stdout is not None and demo.stderr is not None
    try:
        seen = [demo.stdout.readline() for _ in range(3)]
        assert "metrics:" in seen[-1], seen
        demo.stdout.close()  # as `head -3` does once it has its lines
    finally:
        status, errors = ended(demo)
    assert status == 1, errors
    assert "Traceback" not in errors, errors
    # It said why (it ended without a word, which reads as a failed check).
    assert errors.strip().splitlines()[-1] == (
        "replicator: the demo's output could not be written to stdout: [Errno 32] Broken pipe"
    ), errors
    assert_nothing_left(tmp_path)


def test_ctrl_c_that_also_ends_the_pipe_reading_the_demo_stops_it_cleanly_with_130(
    tmp_path: Path,
) -> None:
    """`replicator demo | tee log`, then Ctrl-C: the signal ends the pipe's reader too, and
    the demo's first words about the stop met a closed stdout, which skipped the
    replicator's stop (its lock left behind) and ended it with exit 1."""
    demo = piped_demo(tmp_path)
    assert demo.stdout is not None and demo.stderr is not None
    try:
        seen = [demo.stdout.readline() for _ in range(4)]
        # The first progress line: the next one is 5 s away, so the stop's words are the
        # first write to the closed pipe.
        assert re.match(r"\s*\d+\.\ds ", seen[-1]), seen
        demo.stdout.close()
        demo.send_signal(signal.SIGINT)
    finally:
        status, errors = ended(demo)
    assert status == 130, errors
    assert "Traceback" not in errors, errors
    assert_nothing_left(tmp_path)


def on_a_terminal(*args: str, width: int) -> tuple[int, str]:
    """``replicator demo ARGS`` with a terminal (a pseudo-terminal ``width`` columns wide)
    as its stdin, stdout and stderr: its exit status and everything it wrote there."""
    import fcntl
    import pty
    import struct
    import termios

    reading, writing = pty.openpty()
    fcntl.ioctl(writing, termios.TIOCSWINSZ, struct.pack("HHHH", 40, width, 0, 0))
    env = {**os.environ, "REPLICATOR_DEMO_METRICS_PORT": "0", "TERM": "xterm", "COLUMNS": ""}
    env.pop("COLUMNS")
    demo = subprocess.Popen(
        [sys.executable, "-m", "replicator", "demo", *args],
        cwd=ROOT,
        env=env,
        stdin=writing,
        stdout=writing,
        stderr=writing,
    )
    os.close(writing)
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: _read_all(reading, chunks), daemon=True)
    reader.start()
    status = waited(demo, 120 * PATIENCE)
    reader.join(30)
    os.close(reading)
    return status, b"".join(chunks).decode("utf-8", "replace")


def as_shown(output: str) -> list[str]:
    """The lines a terminal shows (its scrollback included) once ``output`` is written
    to it: the cursor movements, line erasures and colours rich's live display uses."""
    rows: list[list[str]] = [[]]
    row = column = 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]", output):
        if token == "\r":
            column = 0
        elif token == "\n":
            row += 1
            column = 0
            if row == len(rows):
                rows.append([])
        elif token.startswith("\x1b["):
            if token.endswith("A"):  # cursor up
                row = max(0, row - int(token[2:-1] or 1))
            elif token == "\x1b[2K":  # erase the line
                rows[row] = []
        else:
            line = rows[row]
            line.extend(" " * (column - len(line)))
            line[column : column + 1] = [token]
            column += 1
    return ["".join(line) for line in rows]


def _read_all(descriptor: int, into: list[bytes]) -> None:
    while True:
        try:
            chunk = os.read(descriptor, 65536)
        except OSError:  # EIO: the terminal's other end closed
            return
        if not chunk:
            return
        into.append(chunk)


def test_a_processors_log_lines_come_above_the_live_progress_on_a_terminal(
    tmp_path: Path,
) -> None:
    """A processor's log line (``processor started``, a child process's) was written
    straight to the terminal, glued to the live table's last border, and the table's
    next refresh wrote over it; destination names were cut to fit 80 columns, so two
    whose names differ at the end looked alike."""
    job = tmp_path / "long-names.yaml"
    job.write_text(
        "task_name: demo-long-names\n"
        "source: {region: us-east-1, table: customer-orders}\n"
        "destinations:\n"
        "  - {region: ap-southeast-2, table: customer-orders-replica-blue}\n"
        "  - {region: ap-southeast-2, table: customer-orders-replica-green}\n"
        "conflict: {policy: overwrite}\n"
        "metrics: {port: 0}\n"
        "logging: {level: info}\n"
    )
    status, screen = on_a_terminal("-c", str(job), "--duration", "3", "--rate", "10", width=80)
    assert status == 0, screen
    lines = as_shown(screen)
    started = [line for line in lines if "processor started" in line]
    assert started, "\n".join(lines)
    for line in started:  # a line of its own, printed above the table, not after its border
        assert not any(border in line for border in "┘┐│┃└"), repr(line)
    # Each destination's whole name is on the screen (folded, not cut with an ellipsis).
    assert "…" not in screen, screen
    table = re.sub(r"[^a-z0-9/-]", "", re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen))
    for name in ("replica-blue", "replica-green"):
        assert name in table or name.replace("-", "") in table, screen


@pytest.mark.parametrize("stop", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_stop_signal_the_demo_was_started_with_ignored_stays_ignored(
    tmp_path: Path, stop: signal.Signals
) -> None:
    """`nohup replicator demo &`: the terminal closing (SIGHUP) must not stop it. It
    was answered as a stop (129) whatever its disposition at start; SIGINT alone is
    answered even when ignored (a shell's background jobs start with it ignored)."""
    demo, lines = start_demo(free_port(), tmp_path, ignored=(stop,))
    seen: list[str] = []
    read_until(lines, "metrics:", seen)  # replicating: every handler is installed
    demo.send_signal(stop)
    status, output = stopped_with_output(demo, lines, seen)
    assert status == 0, output
    assert "interrupted" not in output, output
    assert "converged: every destination equals the source" in output, output
    assert_nothing_left(tmp_path)


def test_demo_options_out_of_range_are_usage_errors() -> None:
    for option, value in [
        ("--rate", "0"),
        ("--rate", "nan"),
        ("--keys", "0"),
        ("--duration", "-5"),
        ("--duration", "inf"),
        ("--settle-timeout", "-1"),
        ("--linger", "nan"),
        ("--linger", "1e308"),
        ("--duration", "1e308"),
        ("--settle-timeout", "1e308"),
        ("--rate", "1e-300"),
        ("--rate", "1e308"),
        ("--keys", "10000000"),
    ]:
        # Refused by the command-line parser, before the demo starts anything: run in
        # this process (tests/test_cli_numbers.py runs one such case as a process).
        result = CliRunner().invoke(cli, ["demo", option, value], prog_name="replicator")
        assert result.exit_code == 2, (option, value, result.stderr)
        assert f"Invalid value for '{option}'" in result.stderr


def test_a_slow_rate_still_stops_writing_at_the_duration(tmp_path: Path) -> None:
    """At 0.01 changes/s the second change is due in 100 s: the writes end at 1 s anyway."""
    demo, lines = start_demo(free_port(), tmp_path, "--rate", "0.01", "--duration", "1")
    seen: list[str] = []
    read_until(lines, "/s asked", seen)
    written = re.search(r"(\d+) changes? in (\d+) s", seen[-1])
    assert written is not None, "".join(seen)
    assert int(written[1]) == 1 and int(written[2]) < 50, seen[-1]  # not 100 s
    assert demo.wait(timeout=90 * PATIENCE) == 0, "".join(seen)


def test_ctrl_c_while_the_demo_sets_up_exits_130(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the replication phase (the endpoint, the tables), Ctrl-C is still 130."""
    from replicator.demo import run

    def interrupted(self: object) -> str:
        raise KeyboardInterrupt

    monkeypatch.setattr(run.EmbeddedEndpoint, "start", interrupted)
    assert run.run_demo(ROOT / "config" / "demo.yaml", run.DemoOptions()) == 130


def assert_converged_at_eu_west_1(
    demo: subprocess.Popen[str], lines: queue.Queue[str | None]
) -> str:
    """The demo of a job like config/one-way.yaml ends with exit 0, its destination equal;
    its output."""
    seen: list[str] = []
    status, output = stopped_with_output(demo, lines, seen)
    assert status == 0, output
    assert "eu-west-1/orders: equal (every item compared)" in output
    return output


def test_another_job_file_runs_entirely_on_the_demos_endpoint(tmp_path: Path) -> None:
    """config/one-way.yaml names no endpoint: the demo sends all of it to its own, and
    never uses the environment's endpoint or keys (here a dead port and a bogus profile:
    any request that left the demo's endpoint would fail, and the demo would not converge)."""
    dead = free_port()  # nothing listens there
    demo, lines = start_demo(
        free_port(),
        tmp_path,
        "-c",
        "config/one-way.yaml",
        extra_env={
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}",
            "AWS_ENDPOINT_URL_DYNAMODB": f"http://127.0.0.1:{dead}",
            "AWS_ACCESS_KEY_ID": "AKIAREALKEY",
            "AWS_SESSION_TOKEN": "real-token",
            "AWS_PROFILE": "no-such-profile",
            "METRICS_PORT": str(port := free_port()),
        },
    )
    seen: list[str] = []
    read_until(lines, "metrics:", seen)
    # The file listens on every interface (no metrics.host): the URL shown is one a
    # browser opens, not http://0.0.0.0:...
    assert (
        f"metrics: http://127.0.0.1:{port}/metrics  health: http://127.0.0.1:{port}/healthz "
        "(listening on every interface: metrics.host 0.0.0.0)"
    ) in seen[-1], seen
    assert_converged_at_eu_west_1(demo, lines)


def refusal(path: Path, scratch: Path) -> str:
    """The one line of a demo of the job file ``path`` refused before it ran (exit 2)."""
    result = subprocess.run(
        [sys.executable, "-m", "replicator", "demo", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(scratch)},
        timeout=60 * PATIENCE,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "converge" not in result.stdout
    return lines[0]


def test_the_job_files_are_written_in_the_demos_own_directory(tmp_path: Path) -> None:
    """Run where a real job runs, the demo of that job must not create or append to its
    dead-letter file or conflict log (relative paths): a later redrive or restore would
    take the demo's made-up changes for real ones."""
    work = tmp_path / "where-the-real-job-runs"
    work.mkdir()
    demo, lines = start_demo(
        free_port(), tmp_path, "-c", str(ROOT / "config" / "one-way.yaml"), cwd=work
    )
    output = assert_converged_at_eu_west_1(demo, lines)
    assert list(work.iterdir()) == []
    # The file logs at info (its default): said once, before its lines come.
    assert (
        "the job logs at info level: its log lines come between the progress "
        "(logging.level: warning in the job file shows warnings and errors only)"
    ) in output, output


@pytest.mark.parametrize("section", ["dead_letter", "conflict_log"])
def test_a_job_file_target_at_an_absolute_path_is_refused(tmp_path: Path, section: str) -> None:
    job = (ROOT / "config" / "one-way.yaml").read_text()
    real = tmp_path / "real.jsonl"
    replaced = {
        "dead_letter": ("path: dead-letters/{task_name}.jsonl", f"path: {real}"),
        "conflict_log": (
            "conflict_log:\n  kind: none",
            f"conflict_log:\n  path: {real}\n  kind: file",
        ),
    }[section]
    assert replaced[0] in job
    path = tmp_path / "job.yaml"
    path.write_text(job.replace(*replaced))
    line = refusal(path, tmp_path)
    assert f"{section}.path is absolute" in line, line
    assert not real.exists()


@pytest.mark.parametrize(
    ("section", "path", "refused"),
    [
        ("dead_letter", "../x/dl.jsonl", True),
        ("conflict_log", "a/../../x/conflicts.jsonl", True),
        ("dead_letter", "..", True),
        ("dead_letter", "a/../dl.jsonl", False),
        ("conflict_log", "..x/conflicts.jsonl", False),
    ],
)
def test_a_file_target_leading_out_of_the_demos_directory_is_refused(
    tmp_path: Path, section: str, path: str, refused: bool
) -> None:
    """``../x/dl.jsonl`` created directories beside the demo's own directory."""
    from replicator.config.loader import load_job
    from replicator.demo.run import off_directory

    job = (
        "runtime: local\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        f"{section}: {{kind: file, path: '{path}'}}\n"
    )
    file = tmp_path / "job.yaml"
    file.write_text(job)
    problem = off_directory(load_job(file))
    if refused:
        assert problem is not None and problem.startswith(f"{section}.path leads out"), problem
        assert f"({path})" in problem
    else:
        assert problem is None


@pytest.mark.parametrize(
    "section",
    [
        "  endpoint_url: http://dynamodb.internal.example.com:8000\n",
        "  role_arn: arn:aws:iam::123456789012:role/replicator\n",
    ],
)
def test_a_job_file_reaching_past_the_demos_endpoint_is_refused(
    tmp_path: Path, section: str
) -> None:
    job = (ROOT / "config" / "one-way.yaml").read_text()
    job = job.replace("  table: orders\ndestinations:", f"  table: orders\n{section}destinations:")
    path = tmp_path / "job.yaml"
    path.write_text(job)
    assert "source." in refusal(path, tmp_path)


ONE_WAY_CONFLICT = "conflict:\n  policy: overwrite\n"


def demo_job(tmp_path: Path, conflict: str) -> Path:
    """config/one-way.yaml with another conflict section."""
    job = (ROOT / "config" / "one-way.yaml").read_text()
    assert ONE_WAY_CONFLICT in job
    path = tmp_path / "job.yaml"
    path.write_text(job.replace(ONE_WAY_CONFLICT, conflict))
    return path


@pytest.mark.parametrize(
    "conflict",
    [
        "conflict: {policy: last_writer_wins, timestamp_attribute: modified_at}\n",
        # Without write-back, which would otherwise make the source agree.
        "conflict: {policy: version, version_attribute: version}\n"
        "loop_prevention: {origin_attribute: written_in}\n"
        "active_active: {write_back: false}\n",
    ],
    ids=["lww-modified_at", "version"],
)
def test_the_demo_stamps_the_attribute_the_job_ranks_by(tmp_path: Path, conflict: str) -> None:
    """Few keys, so that most writes land on an item written before: with the rule's
    attribute missing every image would tie and the digest, not the order, would win."""
    path = demo_job(tmp_path, conflict)
    demo, lines = start_demo(
        free_port(),
        tmp_path,
        "-c",
        str(path),
        "--duration",
        "2",
        "--keys",
        "20",
        extra_env={"METRICS_PORT": str(free_port())},
    )
    assert_converged_at_eu_west_1(demo, lines)


@pytest.mark.parametrize(
    ("conflict", "named"),
    [
        ("conflict: {policy: custom, resolver: 'tests.nothing:decide'}\n", "policy is custom"),
        ("conflict: {policy: version, version_attribute: sk}\n", "'sk' is a key attribute"),
    ],
)
def test_a_job_the_demo_cannot_drive_is_refused_in_one_line(
    tmp_path: Path, conflict: str, named: str
) -> None:
    path = demo_job(tmp_path, conflict)
    line = refusal(path, tmp_path)
    assert named in line and str(path) in line, line


def test_the_demo_refuses_an_sqs_dead_letter_queue(tmp_path: Path) -> None:
    from replicator.config.loader import load_job
    from replicator.demo.run import off_endpoint

    job = (ROOT / "config" / "one-way.yaml").read_text()
    job = job.replace(
        "  kind: file\n  path: dead-letters/{task_name}.jsonl\n",
        "  kind: sqs\n  queue_url: https://sqs.us-east-1.amazonaws.com/123456789012/q\n",
    )
    path = tmp_path / "job.yaml"
    path.write_text(job)
    problem = off_endpoint(load_job(path), "http://127.0.0.1:1")
    assert problem is not None and "SQS" in problem
    assert off_endpoint(load_job(ROOT / "config" / "one-way.yaml"), "http://127.0.0.1:1") is None


def _loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _before_the_program(status: int, output: str) -> bool:
    """Whether the signal reached the process before any of the program ran: killed before
    the interpreter was up (a shell reports that as 130 too), or inside the interpreter's
    own start-up (its ``site`` import, which a loaded host stretches), which Python ends
    with its own fatal error, or while the interpreter imports the entry point's module,
    when its ``KeyboardInterrupt`` can land in the import system's own clean-up callback,
    which Python reports as ignored and goes on from (the signal is then spent, and the
    demo runs as if it had not come). No code of the program can run sooner to handle it."""
    if status == -signal.SIGINT:
        return True
    if output.startswith("Exception ignored in: <function _get_module_lock"):
        ignored = output.split("\n", 4)
        return len(ignored) > 3 and ignored[3].startswith("KeyboardInterrupt")
    return output.startswith("Fatal Python error: init_import_site") and output.rstrip().endswith(
        "KeyboardInterrupt"
    )


@pytest.mark.parametrize("moment", ["started", "importing", "first line"])
def test_ctrl_c_at_any_moment_of_the_start_exits_130_in_one_line(
    tmp_path: Path, moment: str
) -> None:
    """No sleeps: the signal goes as soon as the process exists, or as soon as it loads a
    library of the CLI's imports (pydantic's, long before the demo's own handler is
    installed), or as soon as it has printed its first line."""
    demo, lines = start_demo(free_port(), tmp_path)
    seen: list[str] = []
    if moment == "importing":
        while demo.poll() is None and not _loaded(demo.pid, "_pydantic_core"):
            pass
    elif moment == "first line":
        line = lines.get(timeout=60 * PATIENCE)
        assert line is not None
        seen.append(line)
    demo.send_signal(signal.SIGINT)
    status, output = stopped_with_output(demo, lines, seen)
    if moment == "started" and _before_the_program(status, output):
        return
    assert "Traceback" not in output and "Aborted" not in output, output
    assert status == 130, output
    assert "interrupted" in output, output


def test_two_demos_run_at_once_on_one_host(tmp_path: Path) -> None:
    """The same task on two private endpoints: two lease tables, so the host lock (one
    temporary directory for both, as on any host) does not refuse the second."""
    demos = [start_demo(free_port(), tmp_path) for _ in range(2)]
    outputs = []
    for demo, lines in demos:
        seen: list[str] = []
        outputs.append(stopped_with_output(demo, lines, seen))
    for status, output in outputs:
        assert status == 0, output
        assert "converged: every destination equals the source" in output


def test_a_busy_metrics_port_names_the_demos_variable(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        demo, lines = start_demo(busy.getsockname()[1], tmp_path)
        status, output = stopped_with_output(demo, lines, [])
    # Exit 3 as for `replicator run`, before anything was created: the line naming the
    # tables created comes after them.
    assert status == 3, output
    assert "source us-east-1/demo-orders" not in output, output
    assert "set REPLICATOR_DEMO_METRICS_PORT to another port" in output, output
    assert "metrics.enabled" not in output and "metrics.port" not in output, output


def test_a_metrics_port_a_connection_holds_is_said_so_with_the_demos_variable(
    tmp_path: Path,
) -> None:
    """A port that an outgoing connection of this host holds, with nothing listening
    there: the demo cut ``run``'s explanation off, leaving "Address already in use" of a
    port no server had, and said the replicator "did not start" of its own check."""
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", 0))
        server.listen()
        client.bind(("127.0.0.1", 0))
        port = client.getsockname()[1]
        client.connect(server.getsockname())
        demo, lines = start_demo(port, tmp_path)
        status, output = stopped_with_output(demo, lines, [])
    assert status == 3, output
    assert (
        f"cannot start the replicator: metrics: cannot listen on 127.0.0.1:{port} (Address "
        f"already in use); nothing listens on port {port}, but a connection of this host "
        "uses it (an outgoing one, or one closing): set REPLICATOR_DEMO_METRICS_PORT to "
        "another port (0 picks a free one; one below the host's range for outgoing "
        "connections, net.ipv4.ip_local_port_range, stays free)"
    ) in " ".join(output.split()), output


def test_the_summary_reports_the_rate_reached_beside_the_one_asked() -> None:
    from replicator.demo.run import rate_line

    assert rate_line(2389, 60.0, 100) == (
        "2389 changes in 60 s: 40/s of the 100/s asked "
        "(the endpoint or this host could not take them faster)"
    )
    assert rate_line(400, 10.0, 40) == "400 changes in 10 s: 40/s of the 40/s asked"
    # The slowest rates the demo takes, not "0/s".
    assert rate_line(1, 10.0, 0.1) == "1 change in 10 s: 0.1/s of the 0.1/s asked"
    assert rate_line(3, 300.0, 0.01) == "3 changes in 300 s: 0.01/s of the 0.01/s asked"
    assert rate_line(25, 10.0, 2.5) == "25 changes in 10 s: 2.5/s of the 2.5/s asked"
    # A run under a second wrote its first change at once: no rate, and no slow endpoint.
    too_short = "too short a run to tell its rate"
    assert rate_line(1, 0.011, 40) == f"1 change in 0.011 s: {too_short}"
    assert rate_line(0, 1e-9, 40) == f"0 changes in 1e-09 s: {too_short}"
    assert rate_line(5, 0.5, 2) == f"5 changes in 0.5 s: {too_short}"
    assert rate_line(1, 1.0, 0.01) == "1 change in 1 s: 0.01/s of the 0.01/s asked"


def test_the_default_demo_job_is_the_projects_wherever_the_command_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``replicator demo`` typed outside the project's root (the environment activated,
    as the README says) runs the project's config/demo.yaml; a path given with -c is
    taken as given, relative to the working directory."""
    import replicator.demo.run as demo_run

    ran: list[Path] = []

    def run_demo(path: Path, options: object) -> int:
        ran.append(path)
        return 0

    monkeypatch.setattr(demo_run, "run_demo", run_demo)
    # The command ignores the stop signals once its outcome is decided: not in this process.
    stops = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {stop: signal.getsignal(stop) for stop in stops}
    try:
        monkeypatch.chdir(tmp_path)
        assert CliRunner().invoke(cli, ["demo"]).exit_code == 0
        assert ran == [ROOT / "config" / "demo.yaml"]
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "demo.yaml").write_text("runtime: local\n")
        assert CliRunner().invoke(cli, ["demo"]).exit_code == 0
        assert ran[-1] == Path("config/demo.yaml")  # the working directory's own, first
        monkeypatch.chdir(tmp_path / "config")
        assert CliRunner().invoke(cli, ["demo", "-c", "config/demo.yaml"]).exit_code == 0
        assert ran[-1] == Path("config/demo.yaml")  # as given, though there is none here
    finally:
        for stop, handler in previous.items():
            signal.signal(stop, handler)


def test_a_sigterm_while_the_demo_imports_is_named_with_exit_143(tmp_path: Path) -> None:
    """Before the demo's own handlers are in, a stop other than Ctrl-C's is named as
    they name it later (``interrupted (SIGTERM)``)."""
    demo, lines = start_demo(free_port(), tmp_path)
    while demo.poll() is None and not _loaded(demo.pid, "_pydantic_core"):
        pass
    demo.send_signal(signal.SIGTERM)
    status, output = stopped_with_output(demo, lines, [])
    assert status == 143, output
    assert "Traceback" not in output, output
    assert "interrupted (SIGTERM)" in output, output


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("0.0.0.0", "127.0.0.1"),
        ("::", "::1"),
        ("::0", "::1"),
        ("0:0:0:0:0:0:0:0", "::1"),
        ("127.0.0.1", "127.0.0.1"),
        ("metrics.internal", "metrics.internal"),
    ],
)
def test_the_demo_shows_a_url_a_browser_opens_for_every_spelling_of_every_interface(
    host: str, shown: str
) -> None:
    from replicator.demo.run import _reachable

    assert _reachable(host) == shown
