"""Fixtures for tests of the supervisor (owned by the supervisor work)."""
