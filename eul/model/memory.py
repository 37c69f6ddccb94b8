"""Peak tensor memory of a piece of work, on CPU as well as on GPU.

The work is measured where its weights are. On CUDA the allocator keeps the statistic. On
CPU nothing does, and the process's resident size hides reuse of freed memory, so we count
live tensor storage ourselves: every tensor an operator creates is tracked until its
storage is freed. This counts what a GPU allocator would count (weights, gradients,
optimiser state, activations) and excludes Python objects.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

T = TypeVar("T")


class _LiveTensorBytes(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0 or key in self._seen:
            return
        size = storage.nbytes()
        self._seen.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._release, key, size)

    def _release(self, key: int, size: int) -> None:
        if key in self._seen:
            self._seen.discard(key)
            self.live -= size

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        flat, _ = tree_flatten(out)
        for item in flat:
            if isinstance(item, torch.Tensor):
                self.track(item)
        return out


def existing_bytes(*modules: torch.nn.Module) -> int:
    """Bytes already held by the weights of the given modules when the work starts."""
    seen: set[int] = set()
    total = 0
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def _device_of(modules: tuple[torch.nn.Module, ...]) -> torch.device:
    """The device of the first weight among `modules` (the CPU when they hold none)."""
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            return tensor.device
    return torch.device("cpu")


def measure_peak_mb(work: Callable[[], T], *held: torch.nn.Module) -> tuple[T, float]:
    """Run `work` and return its result and the peak tensor memory in MiB.

    Weights of `held` modules, allocated before the work starts, are counted in. The work
    is measured on their device: the CUDA allocator's statistics when they are on a GPU
    (work on the CPU of a machine that has one is still counted on the CPU).
    """
    base = existing_bytes(*held)
    device = _device_of(held)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = work()
        peak = torch.cuda.max_memory_allocated(device) - start + base
        return result, peak / 2**20
    mode = _LiveTensorBytes()
    with mode:
        result: Any = work()
    return result, (mode.peak + base) / 2**20
