"""Helpers the tests import (not tests themselves): jobs on moto, records, metrics, faults."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The repository's root directory, wherever the test importing it sits."""
