"""Where the KCL daemon comes from: the java executable, the jars, the command line.

Everything here is checked before anything is started, so that a host without java or
without the right jars fails with one sentence naming what is missing and where to get
it, instead of a Java stack trace half a minute into a run.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from replicator.config.kcl_settings import CREDENTIALS_PROVIDER_KEY, credentials_provider_names
from replicator.config.model import ResolvedJob, StreamKind
from replicator.exceptions import KclUnavailable
from replicator.runtime.kcl.properties import templates_dir

JARS_ENV = "REPLICATOR_KCL_JARS"
JVM_OPTIONS_ENV = "REPLICATOR_KCL_JVM_OPTIONS"

MULTILANG_DAEMON = "software.amazon.kinesis.multilang.MultiLangDaemon"
MULTILANG_CONFIG = "software.amazon.kinesis.multilang.MultiLangDaemonConfig"
STREAMS_LAUNCHER = "replicator.kcl.DynamoDbStreamsMultiLangDaemon"
STREAMS_ADAPTER = "com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory"

# The repository this package runs from, when it runs from a checkout.
REPOSITORY = Path(__file__).resolve().parents[3]

_BUILD = (
    "build them with `make kcl-jars` (scripts/build-kcl.sh: docker/pom.xml through Maven, "
    "needs mvn and a JDK 17), which puts them where `replicator run` looks by default; "
    "the Docker image has them"
)
_GET_LAUNCHER = (
    "a DynamoDB Streams source runs through the replicator's launcher and the DynamoDB "
    f"Streams Kinesis Adapter 2.x on KCL 3: {_BUILD}"
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


def build_key(repository: Path = REPOSITORY) -> str | None:
    """The cache key scripts/build-kcl.sh builds under, computed the same way.

    The first 16 hex digits of the sha256 of ``sha256sum``'s listing of docker/pom.xml and
    every file under docker/launcher, sorted by path; None outside a checkout.
    """
    pom = repository / "docker" / "pom.xml"
    launcher = repository / "docker" / "launcher"
    if not pom.is_file():
        return None
    files = [pom, *(path for path in launcher.rglob("*") if path.is_file())]
    names = sorted(str(path.relative_to(repository)) for path in files)
    listing = "".join(
        f"{hashlib.sha256((repository / name).read_bytes()).hexdigest()}  {name}\n"
        for name in names
    )
    return hashlib.sha256(listing.encode()).hexdigest()[:16]


def built_jars_dir(repository: Path = REPOSITORY) -> Path | None:
    """The jars `make kcl-jars` built for this checkout's pom and launcher, if built."""
    key = build_key(repository)
    if key is None:
        return None
    directory = repository / ".cache" / "kcl" / key
    return directory if (directory / ".complete").is_file() else None


def find_jars_dir(
    configured: str | None, environ: Mapping[str, str], repository: Path = REPOSITORY
) -> Path:
    """kcl.jars_dir, else $REPLICATOR_KCL_JARS, else the checkout's `make kcl-jars` build."""
    if configured:
        source, text = "kcl.jars_dir", configured
    elif environ.get(JARS_ENV):
        source, text = f"${JARS_ENV}", environ[JARS_ENV]
    else:
        built = built_jars_dir(repository)
        if built is not None:
            _check_classpath_entry("the checkout's `make kcl-jars` build", built)
            return built
        builds = repository / ".cache" / "kcl"
        stale = (
            " (the builds in .cache/kcl are of another docker/pom.xml or launcher)"
            if (build_key(repository) is not None and any(builds.glob("*/.complete")))
            else ""
        )
        raise KclUnavailable(
            f"the KCL runtime needs the KCL jars{stale}: {_BUILD}, or set kcl.jars_dir in "
            f"the job file or ${JARS_ENV} to a directory of them"
        )
    path = Path(text).expanduser()
    _check_classpath_entry(source, path)
    if not path.is_dir() or not any(path.glob("*.jar")):
        raise KclUnavailable(f"{source}: {path} is not a directory of jars; {_BUILD}")
    return path


def _check_classpath_entry(source: str, path: Path) -> None:
    """The daemon's classpath is ``<jars dir>/*``, which java splits at every path
    separator: the daemon would find no class, and the run end blaming the jars."""
    if os.pathsep in str(path):
        raise KclUnavailable(
            f"{source}: {path} holds {os.pathsep!r}, which separates the entries of a Java "
            "classpath (the daemon's is this directory's jars): move the jars to a "
            f"directory whose path has no {os.pathsep!r}"
        )


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
        return {MULTILANG_DAEMON: f"the KCL MultiLangDaemon; {_BUILD}"}
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
    check_credentials_providers(resolved, jars_dir)
    main_class = MULTILANG_DAEMON if kind is StreamKind.KINESIS else STREAMS_LAUNCHER
    return DaemonInstallation(java=java, jars_dir=jars_dir, main_class=main_class)


# Where the KCL looks for a provider named without its package (KCL 3's
# AwsCredentialsProviderPropertyValueDecoder), before the name as it is.
_PROVIDER_PACKAGES = (
    "software.amazon.kinesis.multilang.auth.",
    "software.amazon.awssdk.auth.credentials.",
)
_STS_PROVIDERS = {
    "StsAssumeRoleCredentialsProvider",
    "software.amazon.awssdk.services.sts.auth.StsAssumeRoleCredentialsProvider",
}
_KCL_STS_PROVIDER = "software.amazon.kinesis.multilang.auth.KclStsAssumeRoleCredentialsProvider"


def check_credentials_providers(resolved: ResolvedJob, jars_dir: Path) -> None:
    """An AWSCredentialsProvider in kcl.extra_properties that names no class of the jars
    would stop the daemon at start (a stack trace, or a line naming the temporary
    properties file): refused here, naming the job file's key, without a JVM."""
    for key, value in resolved.job.kcl.extra_properties.items():
        if not key.lower().startswith(CREDENTIALS_PROVIDER_KEY):
            continue
        candidates = []
        for name in credentials_provider_names(value):
            if name in _STS_PROVIDERS:
                candidates.append(_KCL_STS_PROVIDER)
            else:
                candidates += [package + name for package in _PROVIDER_PACKAGES] + [name]
        if not classes_present(jars_dir, candidates):
            raise KclUnavailable(
                f"{resolved.path}: kcl.extra_properties.{key}: {value.strip()!r} names no "
                f"credentials provider in the KCL's jars ({jars_dir}); name an AWS SDK for "
                "Java v2 provider (for example DefaultCredentialsProvider) or a class in a "
                "jar there, or leave it out for the default chain"
            )


def jvm_options(environ: Mapping[str, str]) -> list[str]:
    """Operator JVM options (heap size, proxies) from ``$REPLICATOR_KCL_JVM_OPTIONS``,
    split as a shell would (quotes group words)."""
    text = environ.get(JVM_OPTIONS_ENV, "")
    try:
        return shlex.split(text)
    except ValueError as error:
        raise KclUnavailable(
            f"${JVM_OPTIONS_ENV} cannot be split into JVM options ({error}); "
            "close the quote, or quote the whole option ('-Dname=a value')"
        ) from None


def daemon_command(
    resolved: ResolvedJob,
    installation: DaemonInstallation,
    properties_file: Path,
    environ: Mapping[str, str] = os.environ,
) -> list[str]:
    """The daemon's argv; the operator's JVM options come after ours, so they win."""
    argv = [installation.java]
    if resolved.job.kcl_endpoint_override():
        # The AWS SDK for Java sends Kinesis requests as CBOR, which AWS reads but local
        # emulators (moto, LocalStack) do not; against AWS itself CBOR stays on, as it is
        # smaller and faster to parse.
        argv.append("-Daws.cborEnabled=false")
    logback = templates_dir(resolved.job.source.stream.kind) / "logback.xml"
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
