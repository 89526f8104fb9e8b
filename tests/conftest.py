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
    "runtime/kcl/test_kcl.py",  # 234: KCL daemons taking over leases after kill -9
    "reliability/test_active_active.py",  # 135
    "watermark/test_watermark_e2e.py",  # 131
    "runtime/local/test_tombstone_table_gone.py",  # 100: four runs stopped by a refusal
    "watermark/test_unread_spans_e2e.py",  # 92
    "demo/test_demo.py",  # 88
    "tools/test_backfill.py",  # 84
    "runtime/kcl/test_kcl_kinesis.py",  # 72
    "tools/test_redrive.py",  # 71
    "tools/test_verify.py",  # 69
    "runtime/local/test_local_runtime_leases.py",  # 66
    "reliability/test_active_active_mesh.py",  # 66
    "runtime/local/test_local_runtime.py",  # 64
    "conflictlog/test_conflict_audit.py",  # 62: two bursts of 800 lost conflicts
    "runtime/kcl/test_kcl_launcher.py",  # 55
    "test_processor_protocol.py",  # 50
    "reliability/test_kill_9.py",  # 48
    "reliability/test_throttling.py",  # 44
    "conflictlog/test_sqs_readers.py",  # 40
    "runtime/local/test_local_runtime_failures.py",  # 39
    "config/test_config.py",  # 39
    "watermark/test_wait.py",  # 38
    "test_squash_equivalence.py",  # 34
    "reliability/test_destination_down.py",  # 34
    "reliability/test_active_active_restore.py",  # 31
    "runtime/local/test_local_runtime_backpressure.py",  # 30
    "metrics/test_metrics.py",  # 29
    "watermark/test_commands.py",  # 25
    "runtime/local/test_stock_moto.py",  # 24: writers at once on moto's own server
    "reliability/test_malformed_answers.py",  # 22
    "deadletter/test_deadletters.py",  # 21
    "runtime/local/test_redacted_outputs.py",  # 20: waits for the restart limit's exit 3
    "reliability/test_active_active_pair.py",  # 20
    "conflictlog/test_conflict_command.py",  # 20
    "runtime/kcl/test_kcl_first_start.py",  # 20: a stop during a first start
    "runtime/local/test_source_outage.py",  # 19
    "reliability/test_bad_job_files_and_environment.py",  # 18
    "tools/test_dead_letter_outage.py",  # 17
    "writers/test_late_writes.py",  # 15
    "reliability/test_poison_input.py",  # 15
    "tools/test_ranking_attributes.py",  # 13
    "runtime/local/test_shard_worker.py",  # 13
    "runtime/kcl/test_properties.py",  # 11
    "writers/test_wide_items.py",  # 10: items of 600 and 2000 attributes
    "runtime/local/test_wide_items.py",  # 8
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

    from replicator.demo.endpoint import serialize_table_writes
    from tests.support import fastmoto

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
