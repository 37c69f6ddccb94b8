"""Peak tensor memory measured on CPU."""

from __future__ import annotations

import torch

from eul.model.memory import measure_peak_mb


def test_peak_counts_a_temporary_allocation_that_is_already_freed() -> None:
    def work() -> float:
        big = torch.ones(4 * 2**20 // 4)  # 4 MiB of float32
        total = big.sum().item()
        del big
        return total

    result, peak = measure_peak_mb(work)
    assert result == 2**20
    assert 4.0 <= peak < 4.5


def test_peak_grows_with_the_size_of_the_work() -> None:
    _, small = measure_peak_mb(lambda: torch.zeros(2**18).sum())
    _, large = measure_peak_mb(lambda: torch.zeros(2**21).sum())
    assert large > 6 * small


def test_weights_held_before_the_work_are_counted() -> None:
    module = torch.nn.Linear(512, 512)
    _, peak = measure_peak_mb(lambda: None, module)
    assert peak >= 512 * 512 * 4 / 2**20


def test_work_on_the_cpu_is_counted_on_the_cpu_even_where_a_gpu_is_present(monkeypatch) -> None:
    # given a machine that reports a GPU, and weights held on the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    module = torch.nn.Linear(256, 256)

    def work() -> float:
        big = torch.ones(2**20)  # 4 MiB of float32, on the CPU
        return big.sum().item()

    # when the work is measured, then the CPU's peak is reported, not the GPU allocator's
    _, peak = measure_peak_mb(work, module)
    assert 4.0 <= peak - 256 * 257 * 4 / 2**20 < 4.5
