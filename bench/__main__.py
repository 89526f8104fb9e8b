"""Benchmarks (``make bench``)."""

import sys

print("benchmarks are not written yet", file=sys.stderr)
