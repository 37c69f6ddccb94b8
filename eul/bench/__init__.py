"""The `eul bench` benchmarks: EUL against the baselines and the retrained oracle."""
