"""Prefect tasks: thin wrappers over the plain functions of `eul` (see tasks/pipeline.py)."""
