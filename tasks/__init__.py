"""Prefect tasks: thin wrappers over `eul` (filled in by the pipeline work)."""
