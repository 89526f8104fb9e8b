"""Fixtures every test can use: a moto server over HTTP on 127.0.0.1, unique names, fresh
metrics. Helpers that are not fixtures live in tests/support/."""

from __future__ import annotations

import itertools
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from replicator.metrics import Metrics
from tests.support import ROOT
from tests.support.iam import CallLog

# Tests never reach AWS: dummy credentials, no instance metadata, explicit endpoints.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
# The tests start thousands of Python processes (runtimes, processors, every command run
# as a user runs it). Where the environment forbids bytecode files beside the sources
# (PYTHONDONTWRITEBYTECODE), each of them would compile the replicator's modules again, a
# quarter of its start-up; they keep their bytecode under .cache/ instead (git ignores it).
if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None:
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / ".cache" / "pycache"))

_names = itertools.count(1)

# The longest files, longest first, as measured with `--durations` (seconds of test
# time per file on a 2-core machine). make test gives each test process whole files
# (`--dist loadfile`, in the order collected: `--no-loadscope-reorder`); started first,
# these leave the short files to fill the end of the run on every process, instead of
# one process running a multi-minute scenario alone at the end. A file missing here only
# runs later, in collection order.
_LONGEST_FIRST = (
    "runtime/kcl/test_kcl.py",  # 202: KCL daemons taking over leases after kill -9
    "reliability/test_active_active.py",  # 133
    "watermark/test_watermark_e2e.py",  # 99
    "demo/test_demo.py",  # 87
    "runtime/local/test_tombstone_table_gone.py",  # 75: four runs stopped by a refusal
    "runtime/local/test_local_runtime.py",  # 72
    "runtime/kcl/test_kcl_kinesis.py",  # 65
    "runtime/kcl/test_kcl_launcher.py",  # 61
    "tools/test_backfill.py",  # 60
    "test_processor_protocol.py",  # 60
    "runtime/local/test_local_runtime_leases.py",  # 56
    "conflictlog/test_conflict_audit.py",  # 56: two bursts of 800 lost conflicts
    "conflictlog/test_sqs_readers.py",  # 55
    "tools/test_verify.py",  # 51
    "reliability/test_active_active_mesh.py",  # 50
    "reliability/test_throttling.py",  # 42
    "watermark/test_unread_spans_e2e.py",  # 41
    "reliability/test_kill_9.py",  # 40
    "watermark/test_wait.py",  # 39
    "tools/test_redrive.py",  # 37
    "runtime/local/test_local_runtime_failures.py",  # 33
    "conflictlog/test_conflict_command.py",  # 33
    "runtime/local/test_local_runtime_backpressure.py",  # 29
    "runtime/local/test_stock_moto.py",  # 25: writers at once on moto's own server
    "reliability/test_destination_down.py",  # 27
    "metrics/test_metrics.py",  # 26
    "test_squash_equivalence.py",  # 25
    "watermark/test_commands.py",  # 24
    "deadletter/test_deadletters.py",  # 22
    "writers/test_late_writes.py",  # 21
    "reliability/test_active_active_restore.py",  # 20
    "writers/test_wide_items.py",  # 19: items of 600 and 2000 attributes
    "runtime/local/test_source_outage.py",  # 18
    "reliability/test_poison_input.py",  # 17
    "reliability/test_malformed_answers.py",  # 17
    "reliability/test_active_active_pair.py",  # 17
    "runtime/local/test_redacted_outputs.py",  # 15: waits for the restart limit's exit 3
    "runtime/test_preflight.py",  # 14
    "reliability/test_bad_job_files_and_environment.py",  # 14
    "conflictlog/test_shared_log.py",  # 14
    "tools/test_dead_letter_outage.py",  # 13
    "writers/test_wire.py",  # 12
    "watermark/test_watermark.py",  # 11
    "runtime/local/test_shard_worker.py",  # 11
    "conflictlog/test_conflict_log.py",  # 10
    "test_tombstone_reads.py",  # 9
    "test_cli_interrupts.py",  # 9
    "runtime/test_owned_tables.py",  # 9
    "runtime/local/test_wide_items.py",  # 9
    "writers/test_write_outcomes.py",  # 8
    "writers/test_loop_path.py",  # 8
    "rules/test_total_order.py",  # 8
    "deadletter/test_dead_letters_across_restarts.py",  # 8
    "config/test_yaml_forms.py",  # 8
)
_TESTS = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a terminal gives it, whatever started the suite: a non-interactive shell
    starts a background job (``make test &``, a CI step) with SIGINT ignored, and every
    process a test starts would inherit that. The demo, the runtimes and the KCL are
    tested for how they answer a SIGINT; the tests that mean to start one with SIGINT
    ignored say so (tests/demo/test_demo.py ``start_demo(ignored=...)``)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {_TESTS / name: index for index, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path, len(rank)))  # stable sort


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    import logging

    from moto.server import ThreadedMotoServer

    from replicator.demo import fastmoto
    from replicator.demo.endpoint import serialize_table_writes

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    serialize_table_writes()
    fastmoto.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def unique() -> Callable[[str], str]:
    def name(prefix: str) -> str:
        return f"{prefix}-{os.getpid()}-{next(_names)}"

    return name


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def call_log(moto_endpoint: str) -> Iterator[CallLog]:
    """The calls the session's moto server answers during the test."""
    with CallLog().recording() as log:
        yield log
