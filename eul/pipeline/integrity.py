"""The log against what is recorded outside it: the anchors of its head (`eul.pipeline.anchors`)
and, for every request deployed or later, the registered version its `deployed` entry names.

`verify()` checks the log against itself; this checks it against the registry, the anchors
file and the DVC remotes, which whoever edits the log's database does not also hold. `eul
audit` and `eul requests verify --registry` run it; only ids, seqs and hashes appear.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eul.pipeline.anchors import Finding, check_anchors, read_anchors
from eul.stores.log.schema import SUPPRESSED_STATUSES, Entry, RequestState
from eul.stores.log.store import Ledger

if TYPE_CHECKING:
    from eul.pipeline.context import Context


def deployment_findings(
    states: Sequence[RequestState],
    entries: Sequence[Entry],
    covered_by: Mapping[int, Collection[str]],
) -> list[Finding]:
    """A request deployed or later needs a `deployed` entry naming a registered version
    (`covered_by`: each version's covered ids) that covers it."""
    deployed = {e.request_id: e for e in entries if e.status == "deployed"}
    findings = []
    for state in states:
        rid = state.request_id
        if state.status not in SUPPRESSED_STATUSES:
            continue
        entry = deployed.get(rid)
        if entry is None:
            message = f"{rid} is {state.status} but the log has no deployed entry for it"
            findings.append(Finding("deployment", message, request_id=rid))
            continue
        raw = entry.details.get("model_version")
        try:
            version = int(raw)
        except (TypeError, ValueError):
            message = f"{rid}'s deployed entry {entry.seq} names no model version ({raw!r})"
            findings.append(Finding("deployment", message, seq=entry.seq, request_id=rid))
            continue
        if version not in covered_by:
            message = (
                f"{rid} was deployed in version {version} (entry {entry.seq}), which the "
                "registry does not hold"
            )
        elif rid not in covered_by[version]:
            message = (
                f"{rid} was deployed in version {version} (entry {entry.seq}), which does not "
                "cover it"
            )
        else:
            continue
        findings.append(Finding("deployment", message, seq=entry.seq, request_id=rid))
    return findings


def _store(source: str) -> str:
    """The store an anchor came from: versions, the anchors file, or a remote."""
    if source.startswith("version "):
        return "versions"
    if source.startswith("anchors file"):
        return "anchors file"
    return source


def integrity_check(
    ledger: Ledger,
    ctx: Context,
    states: Sequence[RequestState] | None = None,
    entries: Sequence[Entry] | None = None,
) -> dict[str, Any]:
    """The log against what is recorded outside it: every anchor of its head (registered
    versions, the anchors file, the remotes) and every deployment against the registry.
    `states` and `entries` (the `deployed` ones at least) are read when not given."""
    from eul.stores.registry.tags import covered_request_ids
    from eul.stores.registry.versions import TAG_FILE_PREFIX, version_tags

    states = ledger.list() if states is None else states
    entries = ledger.entries(("deployed",)) if entries is None else entries
    records = _version_records(ctx.settings)
    anchors, findings = read_anchors(ctx, records)
    findings += check_anchors(ledger, anchors)
    named = {str(e.details.get("model_version")) for e in entries if e.status == "deployed"}
    covered_by: dict[int, set[str]] = {}
    for version in sorted(v for v in records if str(v) in named):
        tags = records[version]
        if tags.get("covered_request_ids", "").startswith(TAG_FILE_PREFIX):
            tags = version_tags(ctx.settings, version)
        covered_by[version] = set(covered_request_ids(tags))
    findings += deployment_findings(states, entries, covered_by)
    stores: dict[str, int] = {}
    for anchor in anchors:
        stores[_store(anchor.source)] = stores.get(_store(anchor.source), 0) + 1
    return {
        "ok": not findings,
        "anchors": len(anchors),
        "stores": stores,
        "findings": [f.to_dict() for f in findings],
    }


def _version_records(settings: Any) -> dict[int, dict[str, str]]:
    """Every registered version's raw tags; {} where the SQLite store is not there yet (a
    check creates no store)."""
    from eul.stores.registry.erasure import version_records

    prefix = "sqlite:///"
    uri = settings.tracking_uri
    if uri.startswith(prefix) and not Path(uri[len(prefix) :]).is_file():
        return {}
    return version_records(settings)
