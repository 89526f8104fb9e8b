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
    "runtime/kcl/test_kcl.py",  # 265: KCL daemons taking over leases after kill -9
    "reliability/test_active_active.py",  # 215
    "watermark/test_watermark_e2e.py",  # 192
    "tools/test_backfill.py",  # 142
    "demo/test_demo.py",  # 139
    "tools/test_redrive.py",  # 133
    "runtime/local/test_local_runtime.py",  # 125
    "tools/test_verify.py",  # 117
    "runtime/local/test_tombstone_table_gone.py",  # 106: four runs stopped by a refusal
    "watermark/test_unread_spans_e2e.py",  # 104
    "reliability/test_active_active_mesh.py",  # 99
    "conflictlog/test_conflict_audit.py",  # 90: two bursts of 800 lost conflicts
    "test_processor_protocol.py",  # 86
    "runtime/local/test_local_runtime_leases.py",  # 82
    "runtime/kcl/test_kcl_launcher.py",  # 80
    "reliability/test_kill_9.py",  # 75
    "runtime/kcl/test_kcl_kinesis.py",  # 67
    "runtime/local/test_local_runtime_failures.py",  # 53
    "conflictlog/test_sqs_readers.py",  # 50
    "reliability/test_throttling.py",  # 41
    "watermark/test_wait.py",  # 41
    "runtime/local/test_stock_moto.py",  # 39: writers at once on moto's own server
    "test_squash_equivalence.py",  # 36
    "watermark/test_commands.py",  # 34
    "reliability/test_destination_down.py",  # 34
    "metrics/test_metrics.py",  # 34
    "runtime/local/test_local_runtime_backpressure.py",  # 33
    "writers/test_wide_items.py",  # 32: items of 600 and 2000 attributes
    "runtime/test_preflight.py",  # 31
    "config/test_config.py",  # 29
    "reliability/test_malformed_answers.py",  # 28
    "writers/test_late_writes.py",  # 28
    "tools/test_ranking_attributes.py",  # 27
    "reliability/test_active_active_restore.py",  # 27
    "runtime/local/test_redacted_outputs.py",  # 22: waits for the restart limit's exit 3
    "tools/test_dead_letter_outage.py",  # 22
    "deadletter/test_deadletters.py",  # 22
    "reliability/test_active_active_pair.py",  # 22
    "conflictlog/test_conflict_command.py",  # 22
    "reliability/test_bad_job_files_and_environment.py",  # 22
    "reliability/test_poison_input.py",  # 20
    "runtime/local/test_source_outage.py",  # 20
    "runtime/test_owned_tables.py",  # 18
    "runtime/local/test_wide_items.py",  # 18
    "runtime/kcl/test_properties.py",  # 15
    "config/test_job_checks.py",  # 15
    "runtime/local/test_shard_worker.py",  # 15
    "test_cli_interrupts.py",  # 14
    "config/test_resolver_loading.py",  # 13
    "writers/test_wire.py",  # 13
    "conflictlog/test_shared_log.py",  # 11
    "conflictlog/test_conflict_log.py",  # 11
    "config/test_yaml_forms.py",  # 11
    "test_role_not_assumed.py",  # 10
    "config/test_value_checks.py",  # 10
    "deadletter/test_dead_letters_across_restarts.py",  # 9
    "test_tombstone_reads.py",  # 9
    "runtime/local/test_binary_keys.py",  # 9
    "watermark/test_watermark.py",  # 8
    "rules/test_total_order.py",  # 8
    "writers/test_write_outcomes.py",  # 8
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
