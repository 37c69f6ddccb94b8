"""`eul requests`: submit, validate, list, show and verify deletion requests in the log, and
the one-time migration of older evidence to keyed digests.

Tables for people by default, ``--json`` for machines. Only ids and hashes are printed,
never the text of the data being forgotten.
"""

from __future__ import annotations

from typing import Any

from eul.cli.requests.intake import declare_submit, declare_validate
from eul.cli.requests.reading import declare_list, declare_show, declare_snapshot
from eul.cli.requests.verify import declare_migrate_evidence, declare_verify


def register(subparsers: Any) -> None:
    """Add `eul requests ...` to the `eul` command line."""
    requests = subparsers.add_parser(
        "requests",
        help="the deletion log: submit, validate, list, show, verify, migrate-evidence",
        description="The append-only, hash-chained log of deletion requests. Lifecycle: "
        "received -> validated | rejected -> unlearned -> fused -> deployed -> purged. "
        "Each request has a deadline (30 days unless log.deadline_days or --deadline-days "
        "says otherwise).",
    )
    sub = requests.add_subparsers(dest="requests_command", metavar="ACTION", required=True)
    declare_submit(sub)
    declare_validate(sub)
    declare_list(sub)
    declare_show(sub)
    declare_verify(sub)
    declare_snapshot(sub)
    declare_migrate_evidence(sub)
