"""Releases: immutable records of server versions, the current pointer, migrations."""
