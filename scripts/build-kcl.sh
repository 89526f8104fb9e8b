#!/usr/bin/env bash
# Builds the KCL runtime's jars once: docker/pom.xml resolves the pinned KCL 3, DynamoDB
# Streams Kinesis Adapter and AWS SDK jars from Maven Central and compiles the launcher
# (docker/launcher); every runtime jar lands in .cache/kcl/<key>/, and that directory is
# printed on stdout (all else goes to stderr).
#
# <key> is derived from docker/pom.xml and the launcher's sources (the first 16 hex
# digits of the sha256 of their `sha256sum` listing), so a change to either builds anew
# and an unchanged tree reuses the cache at once. `replicator run` computes the same key
# (replicator/runtime/kcl/java.py) and finds the jars there without being told.
# `make kcl-jars` and `make test` run this script; so does docker/Dockerfile's first stage.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=.cache/kcl

have() { command -v "$1" >/dev/null 2>&1; }
fail() {
  echo "build-kcl: $*" >&2
  exit 1
}

key="$(find docker/pom.xml docker/launcher -type f -print0 | LC_ALL=C sort -z |
  xargs -0 sha256sum | sha256sum | cut -c1-16)"
out="$CACHE/$key"

if [ -f "$out/.complete" ]; then
  echo "$PWD/$out"
  exit 0
fi

have mvn || fail "mvn is not on PATH; building the KCL jars needs Maven 3.8 or newer" \
  "(Debian: apt-get install maven) and a JDK 17 (apt-get install openjdk-17-jdk-headless)"
have java || fail "java is not on PATH; building the KCL jars needs a JDK 17" \
  "(Debian: apt-get install openjdk-17-jdk-headless)"
have javac || [ -x "${JAVA_HOME:-/nonexistent}/bin/javac" ] ||
  fail "javac is not on PATH; building the launcher needs a JDK 17, not only a JRE" \
    "(Debian: apt-get install openjdk-17-jdk-headless)"

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if have flock; then
  flock 9 # another build of the same tree finishes first; its result is reused below
fi
if [ -f "$out/.complete" ]; then
  echo "$PWD/$out"
  exit 0
fi

partial="$out.partial"
rm -rf "$partial"
echo "build-kcl: building the KCL jars into $out (docker/pom.xml, from Maven Central)" >&2
# Quiet: only Maven's errors are shown (without the colour codes it writes regardless).
if ! mvn --batch-mode --no-transfer-progress --quiet -f docker/pom.xml package \
  "-Djars.directory=$PWD/$partial" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >&2; then
  rm -rf "$partial"
  fail "the Maven build of docker/pom.xml failed (see Maven's errors above)"
fi
[ -f "$partial/replicator-kcl-launcher.jar" ] ||
  fail "the Maven build wrote no replicator-kcl-launcher.jar into $partial"
(cd "$partial" && ls -- *.jar | LC_ALL=C sort >jars.txt)
touch "$partial/.complete"
rm -rf "$out"
mv "$partial" "$out"
echo "build-kcl: $(wc -l <"$out/jars.txt") jars in $out" >&2
echo "$PWD/$out"
