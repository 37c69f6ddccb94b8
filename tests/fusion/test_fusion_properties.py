"""Properties of the fusion sums, over generated requests (hypothesis): fusing layers in any
order, or batch after batch through a saved state, gives the fused weights of fusing them
all at once; adding a request's statistics and taking them out again gives the sums back."""

from __future__ import annotations

import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from eul.fusion.fuse import FusionState, fuse_shared
from eul.fusion.statistics import FusionStats
from eul.layers import LayerConfig

POSITIONS = ["encoder.0", "decoder.0"]
WIDTH, D_MODEL = 6, 5
CONFIG = LayerConfig(width=WIDTH)
FEW = settings(max_examples=25, deadline=None)


def _request(seed: int) -> tuple[dict[str, torch.Tensor], FusionStats]:
    """One request's up projections and feature statistics, drawn from `seed`: sums over a
    random number of tokens of random features (with the column of ones) and targets."""
    gen = torch.Generator().manual_seed(seed)
    tokens = int(torch.randint(1, 20, (1,), generator=gen))
    up, gram, cross, target_sq = {}, {}, {}, {}
    for p in POSITIONS:
        up[p] = torch.randn(WIDTH + 1, D_MODEL, generator=gen, dtype=torch.float64)
        features = torch.randn(tokens, WIDTH, generator=gen, dtype=torch.float64).relu()
        x = torch.cat([features, torch.ones(tokens, 1, dtype=torch.float64)], dim=1)
        y = x @ up[p]
        gram[p], cross[p], target_sq[p] = x.T @ x, x.T @ y, float((y**2).sum())
    counts = {p: tokens for p in POSITIONS}
    return up, FusionStats(list(POSITIONS), gram, cross, counts, target_sq)


def _empty() -> FusionState:
    up = {p: torch.zeros(WIDTH + 1, D_MODEL, dtype=torch.float64) for p in POSITIONS}
    return FusionState(CONFIG, up, FusionStats.zeros(POSITIONS, D_MODEL, WIDTH), [])


def _fused(state: FusionState) -> dict[str, dict[str, torch.Tensor]]:
    return {mode: fuse_shared(state, mode) for mode in ("sum", "fit")}


def _close(a: dict, b: dict) -> bool:
    return all(
        torch.allclose(a[mode][p], b[mode][p], rtol=1e-4, atol=1e-4) for mode in a for p in a[mode]
    )


requests = st.lists(st.integers(0, 10_000), min_size=1, max_size=6, unique=True)


@FEW
@given(seeds=requests, data=st.data())
def test_fusing_in_any_order_gives_the_weights_of_fusing_all_at_once(seeds, data):
    order = data.draw(st.permutations(seeds))
    at_once, shuffled = _empty(), _empty()
    for seed in seeds:
        at_once.add_up(f"r{seed}", *_request(seed))
    for seed in order:
        shuffled.add_up(f"r{seed}", *_request(seed))
    assert sorted(at_once.requests) == sorted(shuffled.requests)
    assert _close(_fused(at_once), _fused(shuffled))


@FEW
@given(seeds=requests, data=st.data())
def test_fusing_batch_after_batch_through_saved_states_gives_the_same_weights(seeds, data):
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(seeds) - 1)), max_size=3)))
    batches = [seeds[a:b] for a, b in zip([0, *cuts], [*cuts, len(seeds)], strict=True)]
    at_once = _empty()
    for seed in seeds:
        at_once.add_up(f"r{seed}", *_request(seed))
    # each batch loads the state the one before saved (as each night's batch loads
    # production's), adds its requests and saves it again
    state = _empty()
    with tempfile.TemporaryDirectory() as tmp:
        for number, batch in enumerate(b for b in batches if b):
            for seed in batch:
                state.add_up(f"r{seed}", *_request(seed))
            state.save(f"{tmp}/{number}")
            state = FusionState.load(f"{tmp}/{number}")
    assert state.requests == at_once.requests
    assert _close(_fused(at_once), _fused(state))


@FEW
@given(seeds=requests, extra=st.integers(10_001, 20_000))
def test_adding_then_taking_out_a_requests_statistics_gives_the_sums_back(seeds, extra):
    total = sum(_request(seed)[1] for seed in seeds)
    _, one = _request(extra)
    back = (total + one) - one
    assert back.count == total.count
    for p in POSITIONS:
        assert torch.allclose(back.gram[p], total.gram[p], rtol=1e-9, atol=1e-9)
        assert torch.allclose(back.cross[p], total.cross[p], rtol=1e-9, atol=1e-9)
        assert abs(back.target_sq[p] - total.target_sq[p]) <= 1e-9 * max(1.0, total.target_sq[p])


@FEW
@given(seeds=requests)
def test_statistics_add_in_any_grouping(seeds):
    stats = [_request(seed)[1] for seed in seeds]
    left = sum(stats)
    right = sum(reversed(stats))
    for p in POSITIONS:
        assert torch.allclose(left.gram[p], right.gram[p], rtol=1e-9, atol=1e-9)
        assert left.count[p] == right.count[p] == sum(s.count[p] for s in stats)


def test_taking_out_more_than_the_total_holds_is_refused():
    _, one = _request(1)
    _, other = _request(2)
    with pytest.raises(ValueError, match="more tokens than the total"):
        one - (one + other)
