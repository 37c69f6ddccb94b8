"""The deletion log: an append-only, hash-chained ledger of deletion requests."""
