"""The local runtime end to end, as a real process against a moto server over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from replicator.demo.workload import Workload, demo_item
from tests.support.e2e import PATIENCE, Job, children_of, stop, wait_until
from tests.support.silent import SilentEndpoint


def test_every_change_converges_and_the_lease_holds_the_last_checkpoint(job: Job) -> None:
    rng = random.Random(1)
    for index in range(60):
        job.source.put_item(
            TableName=job.source_table, Item=demo_item(rng, f"p{index % 7}", index, "us-east-1")
        )
    runtime = job.start()
    try:
        for index in range(0, 60, 3):  # updates and deletes while it runs
            job.source.put_item(
                TableName=job.source_table, Item=demo_item(rng, f"p{index % 7}", index, "us-east-1")
            )
        for index in range(1, 60, 4):
            job.source.delete_item(
                TableName=job.source_table,
                Key={"pk": {"S": f"p{index % 7}"}, "sk": {"N": str(index)}},
            )
        wait_until(job.converged, 60, "destinations to equal the source")
        last = job.wait_checkpointed()
    finally:
        assert stop(runtime) == 0
    (row,) = job.lease_rows()
    assert set(row) >= {
        "leaseKey",
        "leaseCounter",
        "checkpoint",
        "checkpointSubSequenceNumber",
        "ownerSwitchesSinceCheckpoint",
    }
    assert row["leaseKey"]["S"].startswith("shardId-")
    assert row["checkpoint"] == {"S": last}
    assert row["checkpointSubSequenceNumber"] == {"N": "0"}
    assert "leaseOwner" not in row  # released on a clean stop
    assert int(row["leaseCounter"]["N"]) > 0


def test_kill_9_of_the_runtime_mid_stream_then_restart_loses_nothing(job: Job) -> None:
    workload = Workload(
        job.source, job.source_table, rate=60, duration_s=12, keys=150, origin="us-east-1"
    )
    runtime = job.start()
    workload.start()
    wait_until(
        lambda: any(row.get("checkpoint", {}).get("S", "").isdigit() for row in job.lease_rows()),
        30,
        "a first checkpoint",
    )
    # The run's temporary directory, where its processors read the job's copy.
    (workdir,) = {
        Path(argv[argv.index("--config") + 1]).parent
        for argv in (
            Path(f"/proc/{child}/cmdline").read_text().split("\0")
            for child in children_of(runtime.pid)
        )
        if "--config" in argv
    }
    runtime.send_signal(signal.SIGKILL)
    runtime.wait(10)
    for child in children_of(runtime.pid):
        os.kill(child, signal.SIGKILL)
    time.sleep(0.5)  # the workload keeps writing while nothing replicates
    restarted = job.start()
    try:
        workload.join(60)
        assert workload.error is None
        wait_until(job.converged, 90, "destinations to equal the source after the restart")
        # Left by the killed run, removed by the next (they piled up on a host that
        # restarted a crashing run).
        assert not workdir.exists()
    finally:
        assert stop(restarted) == 0
    # The lease names the killed process as its holder, gone: taken at once, without
    # waiting the failover time as for a worker that may be alive.
    assert "checking whether it is alive" not in (job.directory / "runtime.log").read_text()


def test_kill_9_of_a_processor_child_is_restarted_from_the_checkpoint(job: Job) -> None:
    workload = Workload(
        job.source, job.source_table, rate=60, duration_s=10, keys=150, origin="us-east-1"
    )
    runtime = job.start()
    try:
        workload.start()
        child = wait_until(lambda: children_of(runtime.pid), 30, "a processor child")[0]
        wait_until(
            lambda: any(
                row.get("checkpoint", {}).get("S", "").isdigit() for row in job.lease_rows()
            ),
            30,
            "a first checkpoint",
        )
        # The job file goes away, as a ConfigMap update removes the old version: the new
        # processor reads the copy this run validated, not the operator's file.
        job.path.rename(job.path.with_suffix(".moved"))
        os.kill(child, signal.SIGKILL)
        wait_until(
            lambda: [c for c in children_of(runtime.pid) if c != child], 30, "a new processor child"
        )
        workload.join(60)
        wait_until(job.converged, 90, "destinations to equal the source")
        assert runtime.poll() is None
    finally:
        assert stop(runtime) == 0
    log = (job.directory / "runtime.log").read_text()
    (restart,) = [
        line
        for line in (json.loads(text) for text in log.splitlines() if text.startswith("{"))
        if line.get("event") == "processor child failed; restarting from the checkpoint"
    ]
    # How it ended, whether the kill met the runtime sending an action or waiting for one.
    assert "killed by SIGKILL" in restart["error"], restart
    assert "job file not found" not in log


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name
)
def test_a_stop_signal_to_the_runtime_and_its_processors_at_once_is_a_clean_stop(
    job: Job, sig: signal.Signals
) -> None:
    """As systemd's default KillMode (control-group) stops a service, and as a terminal's
    Ctrl-C would reach a processor in the runtime's group: the signal reaches the runtime
    and its processor together. The processor leaves its stop to the runtime: it answers
    the shutdownRequested, the lease is given up at the last checkpoint, exit 0."""
    rng = random.Random(3)
    runtime = job.start()
    try:
        job.put_demo_items(rng, 0, 10)
        wait_until(job.converged, 60, "destinations to equal the source")
        last = job.wait_checkpointed()
        job.put_demo_items(rng, 10, 10)  # a stop mid-stream: these may not be read yet
        processors = children_of(runtime.pid)
        assert processors
        for pid in (runtime.pid, *processors):
            os.kill(pid, sig)
        assert runtime.wait(60 * PATIENCE) == 0
    finally:
        if runtime.poll() is None:
            runtime.kill()
    log = [json.loads(line) for line in (job.directory / "runtime.log").read_text().splitlines()]
    events = [line["event"] for line in log]
    assert any(event.startswith("shutdown requested; ") for event in events), events
    assert "local runtime stopped cleanly" in events
    (row,) = job.lease_rows()
    assert "leaseOwner" not in row  # given up on a clean stop
    assert int(row["checkpoint"]["S"]) >= int(last)


def _catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process ``pid`` has a handler for ``sig`` (its SigCgt mask in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (sig - 1) & 1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_run_is_still_starting_exits_0_without_a_traceback(
    job: Job, tmp_path: Path, sig: signal.Signals
) -> None:
    """The signal arrives as soon as the command holds it, while it is still importing
    its modules and reading the job: exit 0, as a stop at any other time."""
    log = tmp_path / f"early-{sig.name}.log"
    runtime = job.start(log=log)
    wait_until(lambda: _catches(runtime.pid, signal.SIGTERM), 10, "the stop signals held", 0.005)
    runtime.send_signal(sig)
    assert runtime.wait(60) == 0
    output = log.read_text()
    assert "Traceback" not in output and "Aborted" not in output
    assert "stop requested" in output


def test_two_stop_signals_at_once_while_run_is_still_starting_are_one_request(
    job: Job, tmp_path: Path
) -> None:
    """The first signal is held until the runtime is set up (its preflight may wait
    minutes creating tables); a second one a second or more later ends the command at
    once (tests/test_cli_interrupts.py), but one sent with it (``timeout`` signals the
    command and then its process group) is the same request: a clean stop, exit 0."""
    log = tmp_path / "twice.log"
    runtime = job.start(log=log)
    wait_until(lambda: _catches(runtime.pid, signal.SIGTERM), 10, "the stop signals held", 0.005)
    runtime.send_signal(signal.SIGTERM)
    runtime.send_signal(signal.SIGTERM)
    status = runtime.wait(60)
    output = log.read_text()
    assert status == 0, output
    assert "again while starting" not in output
    assert output.count('"event": "stop requested"') == 1, output
    assert "Traceback" not in output


def test_a_stop_signal_while_a_start_up_check_hangs_is_said_at_once(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """A destination endpoint that accepts and never answers holds the start-up check in
    flight for the SDK's timeouts (some 30 s): a Ctrl-C then was held without a word,
    and the run ended later with exit 3 and no sign of it. It is said at once; a second
    one ends the command at once (130)."""
    with SilentEndpoint() as silent:
        name = unique("hung")
        job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
        job.path.write_text(
            job.path.read_text().replace(
                f"table: {name}-eu, endpoint_url: '{moto_endpoint}'",
                f"table: {name}-eu, endpoint_url: '{silent.url}'",
            )
        )
        log = tmp_path / "hung.log"
        runtime = job.start(log=log)
        try:
            assert silent.connected.wait(60 * PATIENCE), log.read_text()
            runtime.send_signal(signal.SIGINT)
            wait_until(
                lambda: "stop signal received while starting" in log.read_text(),
                10 * PATIENCE,
                "the stop to be said",
            )
            time.sleep(1.5)  # past entry.REPEAT_S: a second request, not the same one
            runtime.send_signal(signal.SIGINT)
            status = runtime.wait(30 * PATIENCE)
        finally:
            if runtime.poll() is None:
                runtime.kill()
    output = log.read_text()
    assert status == 130, output
    (said,) = [json.loads(line) for line in output.splitlines() if "stop signal" in line]
    assert said["signal"] == "SIGINT" and said["level"] == "info"
    assert "Traceback" not in output


def test_a_sigint_between_the_two_stop_handlers_going_in_is_held() -> None:
    """Ctrl-C right after the first of the two handlers went in (here: sent by the
    process itself, between the two installations) is held as the other signal is, not
    met by Python's own handler with a traceback."""
    code = (
        "import os, signal\n"
        "from replicator import entry\n"
        "real = signal.signal\n"
        "done = []\n"
        "def installing(sig, handler):\n"
        "    if done:\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "    done.append(sig)\n"
        "    return real(sig, handler)\n"
        "signal.signal = installing\n"
        "entry.hold_stop_signals()\n"
        "signal.signal = real\n"
        "print(entry.take_held_signal().name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "SIGINT"), result.stderr


def test_a_stop_asked_for_during_the_preflight_is_acted_on_between_its_steps(
    job: Job,
) -> None:
    from replicator.config.loader import load_job
    from replicator.runtime import preflight

    asked: list[int] = []

    def stopped() -> bool:
        asked.append(1)
        return len(asked) > 2  # after the dead-letter file and source checks

    with pytest.raises(preflight.Stopped):
        preflight.check(load_job(job.path), stopped)
    assert len(asked) == 3


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_destination_deleted_while_running_is_unhealthy_then_exit_3_and_the_lease_freed(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """The processor stops on the refusals and is restarted; /healthz answers 503 while
    it is down or crash-looping (its own gauges are gone with it), and when it keeps
    failing the runtime ends as a missing destination does at start-up: exit 3, one line
    naming the destination and the error, the lease given up."""
    from replicator.config.loader import load_job
    from replicator.exceptions import EnvironmentProblem
    from replicator.runtime.local.runtime import LocalRuntime

    name = unique("gone")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    fast_retries = "writer: {max_in_flight: 16, retry: {base_delay_ms: 1, max_delay_ms: 20}}"
    job.path.write_text(job.path.read_text().replace("writer: {max_in_flight: 16}", fast_retries))
    runtime = LocalRuntime(load_job(job.path), restart_limit=1)
    outcome: list[BaseException | int] = []

    def run() -> None:
        try:
            outcome.append(runtime.run())
        except BaseException as error:  # the test looks at it
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: any(p.child_up_since for p in runtime.progress()), 30, "a running processor")
    assert runtime.metrics_port is not None
    assert _health(runtime.metrics_port)[0] == 200
    ((ddb, table),) = job.destination_clients()
    ddb.delete_table(TableName=table)
    job.source.put_item(TableName=job.source_table, Item={"pk": {"S": "a"}, "sk": {"N": "1"}})
    answers: list[tuple[int, dict[str, Any]]] = []

    def unhealthy() -> bool:
        if not thread.is_alive():
            return True
        with contextlib.suppress(OSError):
            answers.append(_health(runtime.metrics_port or 0))
        return bool(answers) and answers[-1][0] == 503

    wait_until(unhealthy, 60, "/healthz to report the failing processor", interval=0.05)
    thread.join(60 * PATIENCE)
    unhealthy_answers = [body for status, body in answers if status == 503]
    assert unhealthy_answers, answers
    assert "processor" in unhealthy_answers[0]["reasons"][0]
    assert "ResourceNotFoundException" in unhealthy_answers[0]["reasons"][0]
    (error,) = outcome
    assert isinstance(error, EnvironmentProblem) and error.exit_code == 3
    message = str(error)
    assert f"destination eu-west-1/{table}" in message and "ResourceNotFoundException" in message
    assert "\n" not in message
    (row,) = job.lease_rows()
    assert "leaseOwner" not in row  # given up: another worker may start at once
    assert not row["checkpoint"]["S"].isdigit()  # never past the change it could not write


def test_every_line_of_a_run_stopped_by_a_refusing_destination_is_whole_json(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Many writes refused at once stop the processor (os._exit) while other threads log:
    the runtime's log, which the processors share, is still one JSON object per line."""
    name = unique("lines")
    job = Job(moto_endpoint, name, tmp_path, destinations=[("eu-west-1", f"{name}-eu")])
    refusing = (
        "writer: {max_in_flight: 64, access_denied_limit: 2, "
        "retry: {base_delay_ms: 1, max_delay_ms: 5}}"
    )
    job.path.write_text(job.path.read_text().replace("writer: {max_in_flight: 16}", refusing))
    log = tmp_path / "lines.log"
    runtime = job.start(log=log)
    try:
        wait_until(lambda: "shard started" in log.read_text(), 60, "the shard to start")
        ((ddb, table),) = job.destination_clients()
        ddb.delete_table(TableName=table)
        rng = random.Random(3)
        job.put_demo_items(rng, 0, 200)
        assert runtime.wait(120 * PATIENCE) == 3
    finally:
        if runtime.poll() is None:
            runtime.kill()
    *lines, last = log.read_text().splitlines()
    assert last.startswith("replicator: destination ")  # the CLI's one line, as documented
    assert any("destination writer failed" in line for line in lines)
    for line in lines:
        json.loads(line)


def test_latest_kill_9_of_the_processor_before_the_first_record_loses_nothing(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """initial_position LATEST: the position is pinned when the shard starts, so a change
    made as soon as the log says "shard started" is read, and so are changes made while
    a killed processor is started again (not a new LATEST after them)."""
    name = unique("latest")
    job = Job(
        moto_endpoint,
        name,
        tmp_path,
        destinations=[("eu-west-1", f"{name}-eu")],
        kcl="{idle_time_between_reads_ms: 100, failover_time_ms: 6000, initial_position: LATEST}",
    )
    job.source.put_item(  # before the job: not replicated under LATEST
        TableName=job.source_table, Item={"pk": {"S": "before"}, "sk": {"N": "0"}}
    )
    log = tmp_path / "runtime.log"
    runtime = job.start(log=log)
    try:
        wait_until(lambda: "shard started" in log.read_text(), 30, "the shard to start")
        child = wait_until(lambda: children_of(runtime.pid), 30, "a processor child")[0]
        os.kill(child, signal.SIGKILL)
        for index in range(3):  # while the processor is started again
            job.source.put_item(
                TableName=job.source_table, Item={"pk": {"S": f"k{index}"}, "sk": {"N": "1"}}
            )
        ((ddb, table),) = job.destination_clients()

        def replicated() -> list[str]:
            return sorted(item["pk"]["S"] for item in ddb.scan(TableName=table)["Items"])

        wait_until(lambda: replicated() == ["k0", "k1", "k2"], 60, "the changes to arrive")
        assert runtime.poll() is None
    finally:
        assert stop(runtime) == 0
    assert "restarting from the checkpoint" in log.read_text()
    (row,) = job.lease_rows()
    assert row["checkpoint"]["S"] == job.last_stream_sequence()


def test_latest_stopped_before_its_first_checkpoint_warns_at_the_stop_and_the_next_start(
    moto_endpoint: str, unique: Any, tmp_path: Path
) -> None:
    """Under LATEST a stop before the first record keeps the lease at LATEST, so the next
    start begins at the tip again and what was written meanwhile is passed over (as the
    KCL does, documented): both the stop and the next start say so at warning level."""
    name = unique("latest-stop")
    job = Job(
        moto_endpoint,
        name,
        tmp_path,
        destinations=[("eu-west-1", f"{name}-eu")],
        kcl="{idle_time_between_reads_ms: 100, initial_position: LATEST}",
    )
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = job.start(log=first_log)
    try:
        wait_until(lambda: "processor started" in first_log.read_text(), 60, "the processor")
    finally:
        assert stop(first) == 0
    warnings = [
        json.loads(line) for line in first_log.read_text().splitlines() if '"warning"' in line
    ]
    assert [w["event"] for w in warnings if "LATEST" in w["event"]] == [
        "shutdown requested; the shard has no checkpoint yet: it started at LATEST and no "
        "change has been read, so the next start begins again at the stream's tip and "
        "changes made until then are not replicated (the watermark reports them as never "
        "read; `replicator backfill` copies them)"
    ]
    (row,) = job.lease_rows()
    assert row["checkpoint"]["S"] == "LATEST"
    job.source.put_item(  # while the job is stopped: passed over, as documented
        TableName=job.source_table, Item={"pk": {"S": "stopped"}, "sk": {"N": "0"}}
    )
    second = job.start(log=second_log)
    try:
        wait_until(lambda: "shard started" in second_log.read_text(), 60, "the shard to start")
        job.source.put_item(
            TableName=job.source_table, Item={"pk": {"S": "after"}, "sk": {"N": "0"}}
        )
        ((ddb, table),) = job.destination_clients()
        wait_until(lambda: ddb.scan(TableName=table)["Items"], 60, "the change after the start")
        assert [item["pk"]["S"] for item in ddb.scan(TableName=table)["Items"]] == ["after"]
    finally:
        assert stop(second) == 0
    started = [
        json.loads(line)
        for line in second_log.read_text().splitlines()
        if "was started before at LATEST" in line
    ]
    assert [(line["level"], line["shard"]) for line in started] == [
        ("warning", row["leaseKey"]["S"])
    ]
    # It read a change and checkpointed it: its stop says nothing of LATEST.
    assert "the shard has no checkpoint yet" not in second_log.read_text()
