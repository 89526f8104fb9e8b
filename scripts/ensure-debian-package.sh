#!/usr/bin/env bash
# Makes tools that the tests run available: ensure-debian-package.sh PACKAGE TOOL...
#
# Does nothing when every TOOL is on PATH (or is an executable path). Otherwise installs
# Debian's PACKAGE, which needs root (as in CI and the build containers) or passwordless
# sudo. Packages that ship a service (prometheus) are only installed: the tests run the
# programs as ordinary processes on 127.0.0.1, and no service is started here.
set -euo pipefail

package=$1
shift

have() { command -v "$1" >/dev/null 2>&1; }
all_present() {
  for tool in "$@"; do
    have "$tool" || return 1
  done
}

if all_present "$@"; then
  exit 0
fi

if ! have apt-get; then
  echo "ensure-debian-package: $* not found and apt-get is unavailable;" \
    "install $package so that $* are on PATH" >&2
  exit 1
fi

SUDO=()
if [ "$(id -u)" != "0" ]; then
  if have sudo && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
  else
    echo "ensure-debian-package: installing the $package package needs root;" \
      "run: sudo apt-get install -y --no-install-recommends $package" >&2
    exit 1
  fi
fi

echo "installing Debian's $package package ($*)"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "$package" >/dev/null

for tool in "$@"; do
  if ! have "$tool"; then
    echo "ensure-debian-package: the $package package did not provide $tool" >&2
    exit 1
  fi
done
