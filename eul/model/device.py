"""Which torch device a name (auto, cpu, cuda, cuda:N, mps) stands for on this machine.

`eul.params` checks `train.device` and `unlearn.device` against `DEVICE_PATTERN` when it reads
params.yaml, so this module imports torch only inside the functions that need it: reading the
settings does not load torch.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Where training and evaluation run (`resolve_device`): auto takes a GPU if there is one.
DEVICE_PATTERN = r"auto|cpu|mps|cuda(:[0-9]+)?"


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device that `name` (auto, cpu, cuda, cuda:N, mps) stands for on this machine.

    "auto" takes a CUDA GPU, else Apple's MPS, else the CPU. A device this machine does not
    have is a ValueError of one line that says what to use instead, raised before any work.
    """
    import torch

    text = str(name).strip().lower()
    if not re.fullmatch(DEVICE_PATTERN, text):
        raise ValueError(f"unknown device {str(name)!r}: use auto, cpu, cuda, cuda:N or mps")
    fix = "use --device cpu or auto (train.device / unlearn.device in params.yaml)"
    if text == "auto":
        if torch.cuda.is_available():
            text = "cuda"
        elif _mps_available():
            text = "mps"
        else:
            text = "cpu"
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r} is not available (torch sees no CUDA GPU): {fix}")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if device.index is None else device.index
        if index >= count:
            raise ValueError(f"device {text!r} is not available (torch sees {count} GPU): {fix}")
        # explicit index: equal to the device that the parameters report once moved
        return torch.device("cuda", index)
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device {text!r} is not available (torch sees no MPS backend): {fix}")
    return device
