"""The ground floor: every OS effect mlxctl has (processes, identity, locks, state files).

Stdlib and psutil only, so anything above may import it and nothing here imports back up.
"""
