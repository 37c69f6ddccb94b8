"""Fusion: per-request statistics and the fused layer that serves every request at once."""
