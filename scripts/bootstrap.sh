#!/usr/bin/env bash
# Creates .venv and installs the project with its test and dev tools, idempotently.
#
# amazon-kclpy is published on PyPI only as a source distribution whose build downloads
# the KCL jars (about 80) from Maven Central. Where Maven Central answers, it is installed
# the ordinary way, jars included; where it does not (or the build fails), only its Python
# half is installed from the unpacked source distribution, which is all the record
# processor needs (the KCL runtime's jars come from `make kcl-jars` either way).
# KCLPY_WITH_JARS=1 insists on the jars (fail rather than fall back); KCLPY_WITH_JARS=0
# skips the attempt. KCL_MVN_REPO_SEARCH_URL points amazon-kclpy's build at a Maven mirror.
#
# Every other package installs under constraints.txt (the versions the suite passed
# with); CONSTRAINTS= (empty) installs, in a new venv, the newest that pyproject.toml
# allows instead, which `make constraints` does in a venv of its own to write the file
# anew. (Build-time packages, setuptools and wheel, are pip's choice either way.)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
# The release built on the same KCL (3.1.3) and AWS SDK as docker/pom.xml.
KCLPY_VERSION=${KCLPY_VERSION:-3.1.3}
# The sdist's digest as PyPI lists it: a download that differs is refused. Another
# KCLPY_VERSION takes its digest from KCLPY_SHA256, or is installed unchecked, said so.
KCLPY_SHA256_3_1_3=146bf4a85c79eb6d3c842075d7fe2a1ffad3f2944c24db202add5e2a875259c9
if [ "$KCLPY_VERSION" = 3.1.3 ]; then
  KCLPY_SHA256=${KCLPY_SHA256:-$KCLPY_SHA256_3_1_3}
fi
KCLPY_SHA256=${KCLPY_SHA256:-}
KCLPY_WITH_JARS=${KCLPY_WITH_JARS:-auto}
CONSTRAINTS=${CONSTRAINTS-constraints.txt}
STAMP="$VENV/.installed"
want="$(cat pyproject.toml scripts/bootstrap.sh ${CONSTRAINTS:+"$CONSTRAINTS"} | sha256sum | cut -d' ' -f1) kclpy=${KCLPY_VERSION} jars=${KCLPY_WITH_JARS}"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"Python >= 3.11 is required, found {sys.version.split()[0]}")
PY

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
CONSTRAINED=()
[ -z "$CONSTRAINTS" ] || CONSTRAINED=(-c "$CONSTRAINTS")

install_python_half() {
  # An editable install of the unpacked sdist skips its jar-downloading build step.
  "${PIP[@]}" install --no-deps -e "$src/amazon_kclpy-${KCLPY_VERSION}"
}

# The sdist names the KCL it fetches; one quick request says whether Maven Central answers.
maven_central_answers() {
  "$VENV/bin/python" - "$src/amazon_kclpy-${KCLPY_VERSION}/pom.xml" <<'PY'
import os, sys, urllib.request, xml.etree.ElementTree as ET
ns = "{http://maven.apache.org/POM/4.0.0}"
version = ET.parse(sys.argv[1]).getroot().find(f"{ns}properties/{ns}kcl.version").text
base = os.environ.get("KCL_MVN_REPO_SEARCH_URL", "https://repo1.maven.org/maven2/")
name = f"amazon-kinesis-client-multilang-{version}.jar"
url = f"{base}software/amazon/kinesis/amazon-kinesis-client-multilang/{version}/{name}"
try:
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10).close()
except Exception as error:  # noqa: BLE001 - any failure means: no jars from there
    sys.exit(f"{url}: {error}")
PY
}

installed="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("amazon-kclpy"))' \
  2>/dev/null || true)"
if [ "$installed" != "$KCLPY_VERSION" ]; then
  src="$VENV/src"
  mkdir -p "$src"
  "${PIP[@]}" download --no-deps --no-binary :all: -d "$src" "amazon-kclpy==${KCLPY_VERSION}"
  if [ -n "$KCLPY_SHA256" ]; then
    echo "$KCLPY_SHA256  $src/amazon_kclpy-${KCLPY_VERSION}.tar.gz" | sha256sum --check --quiet ||
      { echo "bootstrap: amazon-kclpy ${KCLPY_VERSION}'s download does not have the SHA-256 given" >&2; exit 1; }
  else
    echo "bootstrap: amazon-kclpy ${KCLPY_VERSION}'s download is not checked (no KCLPY_SHA256 given)" >&2
  fi
  tar -xzf "$src/amazon_kclpy-${KCLPY_VERSION}.tar.gz" -C "$src"
  if [ "$KCLPY_WITH_JARS" = "0" ]; then
    echo "installing amazon-kclpy ${KCLPY_VERSION} (Python half, no jars: KCLPY_WITH_JARS=0)"
    install_python_half
  elif why="$(maven_central_answers 2>&1)" &&
    echo "installing amazon-kclpy ${KCLPY_VERSION} with its jars (from Maven Central)" &&
    timeout 900 "${PIP[@]}" install "${CONSTRAINED[@]}" "$src/amazon_kclpy-${KCLPY_VERSION}.tar.gz"; then
    :
  elif [ "$KCLPY_WITH_JARS" = "1" ]; then
    echo "bootstrap: amazon-kclpy ${KCLPY_VERSION} could not be installed with its jars" \
      "${why:+($why)}; KCLPY_WITH_JARS=1 asks for them" >&2
    exit 1
  else
    echo "installing amazon-kclpy ${KCLPY_VERSION} (Python half, no jars:" \
      "${why:-its build could not fetch them})"
    install_python_half
  fi
fi

echo "installing dynamodb-replicator and its test tools into $VENV"
"${PIP[@]}" install "${CONSTRAINED[@]}" -e ".[test,dev]"
echo "$want" > "$STAMP"
