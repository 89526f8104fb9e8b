"""The demo's progress, its wait for convergence and its linger, in this process: the
runtime, the workload and the check are stand-ins, so each case is decided by what the
demo does with what they report."""

from __future__ import annotations

import io
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from replicator.config.loader import load_job
from replicator.demo import run
from replicator.demo.workload import WorkloadStats
from replicator.metrics.server import check_listen
from tests.support import ROOT
from tests.support.cli import in_process

EU = "eu-west-1/orders"
Sample = tuple[str, dict[str, str], float]


def lag(value: float) -> Sample:
    return ("replicator_replication_lag_seconds", {"destination": EU, "shard": "s-1"}, value)


def applied(value: float) -> Sample:
    labels = {"destination": EU, "op": "put", "outcome": "applied"}
    return ("replicator_writes_total", labels, value)


class Server:
    """The runtime's metrics server: answers ``answers[phase]`` (the last one once past
    it); a test moves ``phase`` on as the demo waits."""

    def __init__(self, *answers: list[Sample]) -> None:
        self.answers = answers
        self.phase = 0

    def samples(self) -> list[Sample]:
        return self.answers[min(self.phase, len(self.answers) - 1)]

    def next_phase(self, _seconds: float) -> None:
        self.phase += 1


class Runtime:
    def __init__(self, server: Server | None) -> None:
        self.metrics_server = server
        self.metrics_port = None
        self.failure = None
        self.started = threading.Event()
        self.started.set()

    def progress(self) -> list[Any]:
        return []


class Workload:
    error = None

    def __init__(self) -> None:
        self.stats = WorkloadStats()

    def start(self) -> None:
        pass

    def is_alive(self) -> bool:
        return False  # the writes are done: the demo waits for convergence


@pytest.fixture
def demo(monkeypatch: pytest.MonkeyPatch) -> Iterator[run._Demo]:
    """A demo of config/one-way.yaml (one destination) whose tables are always equal,
    printing to a string as off a terminal, and whose waits take no time."""
    resolved = load_job(ROOT / "config" / "one-way.yaml")
    shown = run._Demo.__new__(run._Demo)
    shown.resolved = resolved
    shown.job = resolved.job
    shown.options = run.DemoOptions(settle_timeout_s=1.0)
    shown.console = Console(file=io.StringIO(), width=200, soft_wrap=True)
    shown.destinations = {EU: (None, "orders")}  # type: ignore[dict-item]
    monkeypatch.setattr(shown, "_differences", dict)
    monkeypatch.setattr(run.time, "sleep", lambda _s: None)
    yield shown


def printed(demo: run._Demo) -> list[str]:
    file = demo.console.file
    assert isinstance(file, io.StringIO)
    return file.getvalue().splitlines()


@pytest.mark.parametrize(
    "server",
    [None, Server([])],
    ids=["metrics-off", "no-batch-yet"],
)
def test_a_destination_no_metric_reports_on_is_unknown_and_never_caught_up(
    demo: run._Demo, server: Server | None
) -> None:
    """Shown as applied 0 and lag 0.00s, and taken as caught up, it ended the wait on
    the tables' equality alone, with writes possibly still in flight."""
    runtime = Runtime(server)
    line = demo._line(runtime, Workload(), 0.0)  # type: ignore[arg-type]
    assert f"{EU}: applied - lost conflicts - dead letters - lag -" in line, line
    assert not demo._caught_up(runtime)  # type: ignore[arg-type]


def test_a_destination_that_reported_shows_counts_not_yet_counted_as_0(
    demo: run._Demo,
) -> None:
    runtime = Runtime(Server([lag(0.25), applied(7)]))
    line = demo._line(runtime, Workload(), 0.0)  # type: ignore[arg-type]
    assert f"{EU}: applied 7 lost conflicts 0 dead letters 0 lag 0.25s" in line, line


def test_off_a_terminal_the_last_figures_are_printed_before_the_check(
    demo: run._Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A progress line every 5 s: the one before the check was up to 5 s old, here still
    showing the lag of before the destination caught up."""
    server = Server([lag(3.0), applied(1)], [lag(0.0), applied(9)])
    monkeypatch.setattr(run.time, "sleep", server.next_phase)  # caught up after one wait
    runtime = Runtime(server)
    assert demo._watch(runtime, Workload(), 0.0)  # type: ignore[arg-type]
    lines = printed(demo)
    assert f"{EU}: applied 9 lost conflicts 0 dead letters 0 lag 0.00s" in lines[-1], lines


def test_with_metrics_off_the_wait_ends_at_the_settle_time_not_converged(
    demo: run._Demo,
) -> None:
    demo.options = run.DemoOptions(settle_timeout_s=0.1)
    assert not demo._watch(Runtime(None), Workload(), 0.0)  # type: ignore[arg-type]


def test_the_linger_follows_a_failed_check_too(
    demo: run._Demo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator most wants the metrics when the check failed; the check's outcome is
    still what the demo returns."""
    slept: list[float] = []
    monkeypatch.setattr(run.time, "sleep", slept.append)
    monkeypatch.setattr(demo, "_watch", lambda *_: False)
    monkeypatch.setattr(demo, "_report", lambda *_: False)
    demo.options = run.DemoOptions(linger_s=30.0)
    equal = demo._replicate(Runtime(None), Workload(), [])  # type: ignore[arg-type]
    assert not equal
    assert slept == [30.0]
    assert "the replicator keeps running for 30s" in "\n".join(printed(demo))


class Unstarted:
    """The runtime of a second demo started with the first: the metrics port was free at
    the demo's check, and the first demo's runtime has bound it since."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.failure = None
        self.metrics_port = None
        self.started = threading.Event()

    def run(self) -> int:
        check_listen("127.0.0.1", self.port)  # what the metrics server raises on binding
        return 0

    def stop(self) -> None:
        pass


class Unwritten:
    error = None
    ident = None  # never started
    stop_event = threading.Event()


def test_a_metrics_port_taken_after_the_check_ends_the_demo_with_exit_3(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Checking the port first cannot close the race with another demo binding it after
    the check: the runtime's own refusal ended the demo with exit 1, not the exit 3 the
    docs give for a taken metrics port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(run.METRICS_PORT_ENV, str(port))
        monkeypatch.setattr(run, "check_listen", lambda *_: None)  # free when checked
        demo = unstarted_demo(monkeypatch, ROOT / "config" / "demo.yaml", port)
        assert demo.run() == 3
    said = [line for line in printed(demo) if "did not start" in line]
    assert said == [
        f"the replicator did not start: metrics: cannot listen on 127.0.0.1:{port} "
        f"(Address already in use); set {run.METRICS_PORT_ENV} to another port "
        "(0 picks a free one)"
    ], printed(demo)


def unstarted_demo(monkeypatch: pytest.MonkeyPatch, job_file: Path, port: int) -> run._Demo:
    """A demo of ``job_file`` whose tables are never created and whose runtime finds
    ``port`` taken (:class:`Unstarted`), printing to a string."""
    resolved = load_job(job_file)
    demo = run._Demo.__new__(run._Demo)
    demo.resolved, demo.job, demo.url = resolved, resolved.job, "http://127.0.0.1:1"
    demo.options = run.DemoOptions()
    demo.console = Console(file=io.StringIO(), width=200, soft_wrap=True)
    demo.source = None  # type: ignore[assignment]
    demo.destinations = {}
    monkeypatch.setattr(run.tables, "create", lambda *_, **__: None)
    monkeypatch.setattr(run, "LocalRuntime", lambda *_, **__: Unstarted(port))
    monkeypatch.setattr(run, "Workload", lambda *_, **__: Unwritten())
    return demo


def test_a_taken_port_of_another_job_file_names_the_variable_the_file_takes_it_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """config/one-way.yaml takes its port from $METRICS_PORT: the refusal said "choose
    another metrics.port", a file the user had not written, instead of the variable."""
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))  # the file's metrics.host
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("METRICS_PORT", str(port))
        demo = unstarted_demo(monkeypatch, ROOT / "config" / "one-way.yaml", port)
        assert demo.run() == 3
    (said,) = [line for line in printed(demo) if "cannot start the replicator" in line]
    assert said.endswith("; set METRICS_PORT to another port (0 picks a free one)"), said


def test_a_kcl_job_is_said_to_run_on_the_local_runtime(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A `runtime: kcl` job converged in the demo with nothing but a JSON log line saying
    the local runtime ran it: it could be taken for a run of the KCL."""
    job = tmp_path / "kcl.yaml"
    job.write_text(
        "runtime: kcl\n"
        "source: {region: us-east-1, table: orders}\n"
        "destinations: [{region: eu-west-1, table: orders}]\n"
        "metrics: {port: 0}\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        demo = unstarted_demo(monkeypatch, job, taken.getsockname()[1])
        demo.run()
    assert (
        "runtime: local (the job file says kcl; the demo runs every job on the local runtime, "
        "one process, no KCL)"
    ) in printed(demo)


@pytest.mark.parametrize("value", ["abc", "70000", "-1"])
def test_a_bad_demo_metrics_port_names_the_variable_that_gave_it(value: str) -> None:
    """The demo's job file takes its port from REPLICATOR_DEMO_METRICS_PORT: a bad value
    named only the project's file and line, which the user never wrote."""
    said = in_process("demo", env={run.METRICS_PORT_ENV: value})
    assert said.returncode == 2, said.stderr
    (line,) = [line for line in said.stderr.splitlines() if "metrics.port" in line]
    assert line.endswith(f"(got '{value}', from the environment: {run.METRICS_PORT_ENV})"), line


@pytest.mark.parametrize(
    ("text", "variable"),
    [
        ("metrics:\n  port: ${METRICS_PORT:-9400}\n", "METRICS_PORT"),
        ('metrics: {"port": "${PORT_OF_JOB}"}\n', "PORT_OF_JOB"),
        ("metrics:\n  # port: ${OLD}\n  port: ${NEW:-1}\n", "NEW"),
        ("# port: ${OLD}\nmetrics: {port: 9400}\n", None),
    ],
)
def test_the_variable_a_job_file_takes_its_metrics_port_from(
    text: str, variable: str | None
) -> None:
    assert run._port_variable(text) == variable
