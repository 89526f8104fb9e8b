"""dynamodb-replicator: keeps DynamoDB tables in other regions and accounts in step with a
source table, reading its change stream.

The data path, one module per stage::

    records.py  a daemon record (RawRecord) and a decoded change (Change)
    decode.py   stage 1: record -> Change (DynamoDB Streams adapter or Kinesis format)
    filters.py  stage 2: loop prevention and TTL policy decide what is sent on
    buffer.py   stage 3: squash per key, one write per key in flight, safe checkpoint
    rules/      stage 4: conflict rules -> conditional PutItem/DeleteItem
    writers/    stage 5: one writer per destination, retries, dead letters
    checkpoint.py stage 6: checkpoints through the daemon
    pipeline.py runs stages 3-5 for one shard with bounded parallelism
    processor.py the amazon-kclpy record processor that ties them together

Beside it: ``deadletter/`` (what no retry can apply), ``conflictlog/`` (the record of
lost conflicts, written off the data path), ``metrics/``, ``runtime/`` and ``tools/``.
"""

import os
import signal
import sys

__version__ = "0.1.0"


def _started_as_the_processor() -> bool:
    """Whether this process is ``python [options] -m replicator processor`` (as both
    runtimes start it) or ``replicator processor``, read from the interpreter's own
    command line up to its script, ``-c`` or ``-m``: an application that imports the
    package is never taken for it, whatever its own arguments say."""
    argv = list(getattr(sys, "orig_argv", ()))[1:]
    at = 0
    while at < len(argv):
        option = argv[at]
        if option in ("-W", "-X"):  # the interpreter's options that take the next word
            at += 2
        elif option == "-m":
            return argv[at + 1 : at + 3] == ["replicator", "processor"]
        elif option.startswith("-m"):
            return [option[2:], *argv[at + 1 : at + 2]] == ["replicator", "processor"]
        elif option.startswith("-c") or option == "-" or not option.startswith("-"):
            break
        else:
            at += 1
    script = argv[at : at + 2]
    return (
        len(script) == 2
        and os.path.basename(script[0]) == "replicator"
        and script[1] == "processor"
    )


def _processor_ignores_stop_signals_at_once() -> None:
    """The processor ignores SIGTERM, SIGINT and SIGHUP for its whole life
    (:mod:`replicator.entry`), from the first line of the package rather than after its
    imports: a service manager that signals every process of the service (systemd's
    KillMode=control-group) can do so just as the daemon starts a processor, and one that
    died of it before its first answer left the KCL's stop waiting out
    ``shutdownGraceMillis`` for it. What remains is the interpreter's own start."""
    if _started_as_the_processor():
        for stop in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(stop, signal.SIG_IGN)


def _structlog_without_rich() -> None:
    """Import structlog without the rich tracebacks it loads whenever rich is installed
    (the demo's table and the tools' progress bars need rich): about a tenth of a second
    of CPU in every process this package starts (each processor, runtime and command),
    for a console renderer that then prints an exception as Python does. Any module
    that imports structlog gets it so; rich itself stays importable afterwards."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # what `import rich` then refuses
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_processor_ignores_stop_signals_at_once()
_structlog_without_rich()
