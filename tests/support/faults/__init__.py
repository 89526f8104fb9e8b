"""Fault injection for the reliability suite (test code only)."""
