"""One switch for the libraries' chatter: no progress bars or info logs from datasets,
transformers or MLflow downloads in a command's output or a flow's logs, and no downloads."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    """Offline, no telemetry, no progress bars (imports datasets and transformers)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
