"""Operator tools: backfill, verify (and repair), redrive dead letters."""
