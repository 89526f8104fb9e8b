"""The watermark on ``/metrics``: a scrape answers from what the runtime has read already,
whatever the destinations' status tables do, and what it shows follows their answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from structlog.testing import capture_logs

from replicator.config.loader import load_job
from replicator.exceptions import StatusTableMissing
from replicator.runtime import supervisor
from replicator.watermark.collector import NAME, READ_NAME, WatermarkCollector
from replicator.watermark.parts import Watermark
from tests.support.e2e import wait_until
from tests.support.metrics import health, matching, scrape
from tests.support.silent import SilentEndpoint


def mark(seconds: float) -> Watermark:
    return Watermark("d", round(seconds * 1_000_000))


class StandIn:
    """A destination's status table as the collector reads it: each read gives the last
    answer the test set (a watermark, or an error to raise), waiting until there is one."""

    def __init__(self) -> None:
        self.calls = 0
        self.waiting = threading.Event()
        """Set once a read is waiting for an answer that has not been given."""
        self._answer: Watermark | Exception | None = None
        self._changed = threading.Condition()

    def answer(self, answer: Watermark | Exception) -> None:
        with self._changed:
            self._answer = answer
            self._changed.notify_all()

    def read(self, timeout: float | None = None) -> Watermark:
        with self._changed:
            self.calls += 1
            if self._answer is None:
                self.waiting.set()
                self._changed.wait_for(lambda: self._answer is not None)
            answer = self._answer
        if isinstance(answer, Exception):
            raise answer
        assert answer is not None
        return answer


def shown(collector: WatermarkCollector, name: str = NAME) -> dict[str, float]:
    """What a scrape shows now (the watermark, or another of the collector's metrics).
    Collected on a thread of its own, so that a collect that waits on a held read fails
    the test instead of hanging it."""
    result: list[dict[str, float]] = []

    def collect() -> None:
        result.append(
            {
                sample.labels["destination"]: sample.value
                for family in collector.collect()
                for sample in family.samples
                if sample.name == name
            }
        )

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    thread.join(30)
    assert result, "collect() waited on a read of the status table"
    return result[0]


def calls_grow(table: StandIn, by: int) -> Callable[[], bool]:
    target = table.calls + by
    return lambda: table.calls >= target


def test_a_scrape_does_not_wait_on_a_read_that_is_not_answered() -> None:
    held, answering = StandIn(), StandIn()
    answering.answer(mark(100.0))
    collector = WatermarkCollector({"held": held, "answering": answering}, every_s=0.01)
    collector.start()
    try:
        assert held.waiting.wait(30), "the held destination was never read"
        # The held read waits; every scrape answers meanwhile, with what is known.
        wait_until(
            lambda: shown(collector) == {"answering": 100.0},
            10,
            "the other destination's watermark, read beside the held one",
        )
        answering.answer(mark(101.0))
        wait_until(
            lambda: shown(collector) == {"answering": 101.0},
            10,
            "the other destination's next watermark",
        )
        assert held.calls == 1, "the held read was answered"
        assert set(shown(collector, READ_NAME)) == {"answering"}

        held.answer(mark(50.0))
        wait_until(
            lambda: shown(collector) == {"answering": 101.0, "held": 50.0},
            10,
            "the held destination's watermark once its table answers",
        )
        assert set(shown(collector, READ_NAME)) == {"answering", "held"}
    finally:
        held.answer(mark(0.0))
        collector.stop()


def test_a_destination_whose_reads_fail_keeps_its_last_value_and_is_logged_once() -> None:
    table = StandIn()
    table.answer(mark(100.0))
    collector = WatermarkCollector({"d": table}, every_s=0.001)
    with capture_logs() as logs:
        collector.start()
        try:
            wait_until(lambda: shown(collector) == {"d": 100.0}, 10, "the first watermark")
            table.answer(
                ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "Query")
            )
            wait_until(calls_grow(table, 20), 10, "twenty failed reads")
            assert shown(collector) == {"d": 100.0}
            last_read = shown(collector, READ_NAME)["d"]
            assert last_read <= time.time()
            # An endpoint that resets connections fails by turns as two kinds of error:
            # one outage, warned once (it was warned at each change of kind).
            for _ in range(3):
                table.answer(TimeoutError("read timed out"))
                wait_until(calls_grow(table, 5), 10, "reads failing otherwise")
                table.answer(ConnectionResetError("reset"))
                wait_until(calls_grow(table, 5), 10, "reads failing as before")
            assert shown(collector) == {"d": 100.0}
            assert shown(collector, READ_NAME) == {"d": last_read}, "no read was answered"

            table.answer(mark(200.0))
            wait_until(lambda: shown(collector) == {"d": 200.0}, 10, "the next watermark")
            assert shown(collector, READ_NAME)["d"] > last_read
            wait_until(calls_grow(table, 20), 10, "twenty reads answered again")
        finally:
            collector.stop()
    told = [(entry["log_level"], entry.get("error", "")) for entry in logs]
    assert told == [
        ("warning", "ClientError: An error occurred (InternalServerError) when calling the "
         "Query operation: x"),
        ("info", ""),
    ], logs  # fmt: skip
    assert all(entry["destination"] == "d" for entry in logs)


def test_a_status_table_that_does_not_exist_shows_no_watermark_and_is_no_failure() -> None:
    table = StandIn()
    table.answer(mark(100.0))
    collector = WatermarkCollector({"d": table}, every_s=0.001)
    with capture_logs() as logs:
        collector.start()
        try:
            wait_until(lambda: shown(collector) == {"d": 100.0}, 10, "the first watermark")
            table.answer(StatusTableMissing("status table wm-watermark does not exist"))
            wait_until(lambda: shown(collector) == {}, 10, "the watermark to be gone")
            wait_until(calls_grow(table, 20), 10, "twenty reads")
            assert shown(collector) == {}
            assert set(shown(collector, READ_NAME)) == {"d"}, "the table answered"
        finally:
            collector.stop()
    assert logs == []


def test_stop_ends_the_reads_and_does_not_wait_on_a_held_one() -> None:
    held, answering = StandIn(), StandIn()
    answering.answer(mark(1.0))
    collector = WatermarkCollector({"stop-held": held, "stop-answering": answering}, every_s=0.01)
    collector.start()
    assert held.waiting.wait(30)
    wait_until(calls_grow(answering, 3), 10, "reads of the answering destination")
    stopped = threading.Thread(target=collector.stop, kwargs={"wait_s": 0.1}, daemon=True)
    stopped.start()
    stopped.join(30)
    assert not stopped.is_alive(), "stop() waited on the held read"
    assert not _alive("watermark-stop-answering")
    calls = answering.calls
    assert _alive("watermark-stop-held")
    held.answer(mark(2.0))  # the held read ends, and no other is started
    wait_until(lambda: not _alive("watermark-stop-held"), 10, "the held thread to end")
    assert (held.calls, answering.calls) == (1, calls)


def _alive(name: str) -> bool:
    return any(thread.name == name and thread.is_alive() for thread in threading.enumerate())


# -- against an endpoint that accepts connections and never answers -----------------------

# Reading the status tables on every scrape, a scrape took 9 s (a 3 s read, 3 attempts)
# and the ones arriving meanwhile queued behind it (13 s, 22 s, 31 s ...). A scrape that
# reads nothing answers in milliseconds: 6 s is far above that on a loaded machine, and
# below the first of those (9 s).
ANSWERS_WITHIN_S = 6.0


def test_scrapes_and_health_probes_answer_at_once_while_a_status_table_hangs(
    silent: SilentEndpoint, tmp_path: Path
) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "task_name: wm-hung\n"
        "source: {region: us-east-1, table: src, endpoint_url: 'http://127.0.0.1:9'}\n"
        "destinations:\n"
        f"  - {{region: eu-west-1, table: replica, endpoint_url: '{silent.url}'}}\n"
        "metrics: {host: 127.0.0.1, port: 0}\n"
    )
    resolved = load_job(path)
    with capture_logs() as logs, supervisor.metrics_served(resolved, list, []) as served:
        port = served.start()
        assert port is not None
        took: dict[str, float] = {}
        answers: dict[str, Any] = {}

        def ask(name: str, request: Callable[[int], Any]) -> None:
            started = time.monotonic()
            answers[name] = request(port)
            took[name] = time.monotonic() - started

        # A first scrape, then more scrapes and probes while the table's read hangs.
        requests = [threading.Thread(target=ask, args=("metrics-first", scrape), daemon=True)]
        requests[0].start()
        assert silent.connected.wait(30), "the status table was never read"
        requests += [
            threading.Thread(target=ask, args=(f"{kind}-{n}", request), daemon=True)
            for n in range(3)
            for kind, request in (("metrics", scrape), ("healthz", health))
        ]
        for request in requests[1:]:
            request.start()
        for request in requests:
            request.join(60)
        assert len(took) == len(requests), answers
        assert max(took.values()) < ANSWERS_WITHIN_S, took
        for name, answer in answers.items():
            if name.startswith("metrics"):
                assert matching(answer, NAME) == [], "a watermark from a table that never answered"
                assert matching(answer, READ_NAME) == []
            elif name.startswith("healthz"):
                assert answer[0] == 200 and answer[1]["status"] == "ok", answer
        # The hung read gives up by the client's timeouts, and says so once.
        wait_until(
            lambda: _read_warnings(logs),
            30,
            "the failed read to be logged",
        )
    warnings = _read_warnings(logs)
    assert warnings[0]["destination"] == "eu-west-1/replica", logs


def _read_warnings(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Warnings other than the picked port's ``serving metrics`` line (the server here
    listens on port 0)."""
    return [
        entry
        for entry in logs
        if entry["log_level"] == "warning" and entry["event"] != "serving metrics"
    ]
