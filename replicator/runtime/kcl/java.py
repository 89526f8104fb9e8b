"""Where the KCL daemon comes from: the java executable, the jars, the command line.

Everything here is checked before anything is started, so that a host without java or
without the right jars fails with one sentence naming what is missing and where to get
it, instead of a Java stack trace half a minute into a run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from replicator.config.model import ResolvedJob, StreamKind
from replicator.exceptions import KclUnavailable
from replicator.runtime.kcl.properties import has_endpoint_override, templates_dir

JARS_ENV = "REPLICATOR_KCL_JARS"
JVM_OPTIONS_ENV = "REPLICATOR_KCL_JVM_OPTIONS"

MULTILANG_DAEMON = "software.amazon.kinesis.multilang.MultiLangDaemon"
MULTILANG_CONFIG = "software.amazon.kinesis.multilang.MultiLangDaemonConfig"
STREAMS_LAUNCHER = "replicator.kcl.DynamoDbStreamsMultiLangDaemon"
STREAMS_ADAPTER = "com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory"

_GET_STOCK_JARS = (
    "the Docker image has them (make image); elsewhere build them with "
    "`mvn -f docker/pom.xml package` (docker/target/jars), or install amazon-kclpy with "
    "its jars (KCLPY_WITH_JARS=1 make setup) and use its amazon_kclpy/jars directory"
)
_GET_LAUNCHER = (
    "a DynamoDB Streams source runs through the replicator's launcher and the DynamoDB "
    "Streams Kinesis Adapter 2.x on KCL 3: the Docker image has them (make image); "
    "elsewhere build them with `mvn -f docker/pom.xml package` and point "
    f"kcl.jars_dir or ${JARS_ENV} at docker/target/jars"
)


@dataclass(frozen=True)
class DaemonInstallation:
    """A java executable and a jars directory that hold what the job's source needs."""

    java: str
    jars_dir: Path
    main_class: str


def find_java(configured: str) -> str:
    found = shutil.which(configured)
    if found is None:
        where = "is not an executable file" if os.sep in configured else "is not on PATH"
        raise KclUnavailable(
            f"kcl.java: {configured!r} {where}; the KCL runtime needs a Java 17 runtime "
            "(for example apt-get install openjdk-17-jre-headless), or set kcl.java to "
            "the path of a java executable"
        )
    return found


def find_jars_dir(configured: str | None, environ: Mapping[str, str]) -> Path:
    if configured:
        source, text = "kcl.jars_dir", configured
    elif environ.get(JARS_ENV):
        source, text = f"${JARS_ENV}", environ[JARS_ENV]
    else:
        raise KclUnavailable(
            f"the KCL runtime needs the KCL jars: set kcl.jars_dir in the job file or "
            f"${JARS_ENV} to a directory of them; {_GET_STOCK_JARS}"
        )
    path = Path(text).expanduser()
    if not path.is_dir() or not any(path.glob("*.jar")):
        raise KclUnavailable(f"{source}: {path} is not a directory of jars; {_GET_STOCK_JARS}")
    return path


def classes_present(jars_dir: Path, class_names: list[str]) -> set[str]:
    """Which of ``class_names`` some jar in ``jars_dir`` contains (by its entry name)."""
    wanted = {name.replace(".", "/") + ".class": name for name in class_names}
    found: set[str] = set()
    for jar in sorted(jars_dir.glob("*.jar")):
        try:
            with zipfile.ZipFile(jar) as archive:
                entries = set(archive.namelist())
        except (OSError, zipfile.BadZipFile) as error:
            raise KclUnavailable(f"{jar}: not a readable jar ({error})") from None
        found |= {name for entry, name in wanted.items() if entry in entries}
        if len(found) == len(wanted):
            break
    return found


def required_classes(kind: StreamKind) -> dict[str, str]:
    """The classes a source kind needs on the classpath, each with how to get it."""
    if kind is StreamKind.KINESIS:
        return {MULTILANG_DAEMON: f"the KCL MultiLangDaemon; {_GET_STOCK_JARS}"}
    return {
        STREAMS_LAUNCHER: f"the replicator's DynamoDB Streams launcher; {_GET_LAUNCHER}",
        STREAMS_ADAPTER: f"the DynamoDB Streams Kinesis Adapter 2.x; {_GET_LAUNCHER}",
        MULTILANG_CONFIG: f"the KCL 3 multilang module; {_GET_LAUNCHER}",
    }


def locate(resolved: ResolvedJob, environ: Mapping[str, str] = os.environ) -> DaemonInstallation:
    """Find java and jars for the job, or raise KclUnavailable naming what is missing."""
    kcl = resolved.job.kcl
    java = find_java(kcl.java)
    jars_dir = find_jars_dir(kcl.jars_dir, environ)
    kind = resolved.job.source.stream.kind
    needed = required_classes(kind)
    missing = [name for name in needed if name not in classes_present(jars_dir, list(needed))]
    if missing:
        raise KclUnavailable(
            f"{jars_dir} has no jar with {missing[0]}, {needed[missing[0]]}"
            + (f" (also missing: {', '.join(missing[1:])})" if missing[1:] else "")
        )
    main_class = MULTILANG_DAEMON if kind is StreamKind.KINESIS else STREAMS_LAUNCHER
    return DaemonInstallation(java=java, jars_dir=jars_dir, main_class=main_class)


def jvm_options(environ: Mapping[str, str]) -> list[str]:
    """Operator JVM options (heap size, proxies) from ``$REPLICATOR_KCL_JVM_OPTIONS``."""
    return shlex.split(environ.get(JVM_OPTIONS_ENV, ""))


def daemon_command(
    resolved: ResolvedJob,
    installation: DaemonInstallation,
    properties_file: Path,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """The daemon's argv; the operator's JVM options come after ours, so they win."""
    argv = [installation.java]
    if has_endpoint_override(resolved.job):
        # The AWS SDK for Java sends Kinesis requests as CBOR, which AWS reads but local
        # emulators (moto, LocalStack) do not; against AWS itself CBOR stays on, as it is
        # smaller and faster to parse.
        argv.append("-Daws.cborEnabled=false")
    logback = templates_dir() / "logback.xml"
    if logback.is_file():
        argv.append(f"-Dlogback.configurationFile={logback}")
    argv += jvm_options(environ)
    argv += [
        "-cp",
        str(installation.jars_dir / "*"),
        installation.main_class,
        "--properties-file",
        str(properties_file),
    ]
    return argv
