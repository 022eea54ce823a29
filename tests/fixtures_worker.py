"""Fixtures for tests of the worker (owned by the worker work)."""
