"""Store and pipeline benchmarks (log, partition, registry, whole batch) with their results."""

from pathlib import Path

#: Where the benchmarks write their results by default (`<name>-bench.json` and `.md`).
RESULTS = Path(__file__).resolve().parent / "results"
