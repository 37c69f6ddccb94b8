"""Data: records, the synthetic generator, file readers and public data sets."""
