"""Prefect flows and their deployment entry points (filled in by the pipeline work)."""
