"""Store and pipeline benchmarks (log, partition, registry, whole batch) with their results."""
