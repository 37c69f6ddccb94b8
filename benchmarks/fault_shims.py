"""Faults put into a batch process before it runs the flow (`fault_scenarios` starts
`python -c "...; fault_shims.NAME(); <run the flow>"`): test-only patches, so the pipeline
itself carries no fault switch beyond its drill points."""

from __future__ import annotations


def nan_training() -> None:
    """Every layer's retained loss becomes NaN, as a diverging training's would."""
    from eul.methods.eul import EUL

    retained_loss = EUL._retained_loss

    def diverged(self, *args, **kwargs):
        return retained_loss(self, *args, **kwargs) * float("nan")

    EUL._retained_loss = diverged
