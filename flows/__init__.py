"""Prefect flows and their deployment entry points.

- `nightly-deletion-batch` (flows/nightly.py): every validated request since the last batch.
- `unlearn-request` (flows/unlearn_request.py): one request now.
- `promote` (flows/promote.py): a reviewer moves the production alias, after the checks.
- `compact` (flows/compact.py): a full retrain once the stack of layers has grown too much.

prefect.yaml deploys them on a work pool; `python -m flows.serve` serves them from one
process instead.
"""
