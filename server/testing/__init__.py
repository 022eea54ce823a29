"""Test and benchmark support: not part of the served worker (excluded from the wheel)."""
