"""eul: keep a deployed language model compliant with a log of data-deletion requests."""

__version__ = "0.1.0"
