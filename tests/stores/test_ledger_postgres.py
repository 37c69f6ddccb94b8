"""The deletion log on PostgreSQL (psycopg2), the production set-up: the tests of
test_ledger.py that hold for any database run again here, each on a fresh database
(submission, validation, the lifecycle, queries, one-read snapshots, tamper detection,
processes and threads writing at once under ``SELECT ... FOR UPDATE``), and what only
PostgreSQL shows: openers racing to create a new log, and old row versions left in the
tables' pages."""

from __future__ import annotations

import threading
import time

import pytest
from log_evidence import deploy, purge
from postgres import with_driver
from sqlalchemy import event, text
from test_ledger import (  # noqa: F401  (collected here too: the same tests, on PostgreSQL)
    test_a_failing_batch_writes_nothing,
    test_a_rejected_subject_request_keeps_only_the_keyed_subject,
    test_a_snapshot_is_one_read_of_the_log_while_another_writer_commits,
    test_erased_follows_purged_only_and_needs_the_compaction_version,
    test_illegal_transitions_are_refused,
    test_list_filters_by_status_and_rejects_unknown_ones,
    test_malformed_requests_are_refused_before_writing,
    test_mark_many_is_all_or_nothing,
    test_overdue_lists_only_unfinished_requests_past_their_deadline,
    test_processes_submitting_at_once_lose_and_duplicate_nothing,
    test_rejected_is_final_and_marks_need_their_details,
    test_snapshot_has_exactly_the_partition_interface,
    test_submit_generates_an_id_and_records_the_request,
    test_submit_many_is_idempotent_within_and_across_batches,
    test_submitting_a_known_request_id_changes_nothing,
    test_the_full_lifecycle_is_recorded_in_order,
    test_threads_sharing_one_ledger_lose_and_duplicate_nothing,
    test_validate_accepts_a_subject_mapping,
    test_validate_keeps_rejected_requests_with_the_reason,
    test_verify_detects_a_current_state_that_disagrees,
    test_verify_detects_a_rewritten_entry_with_a_recomputed_hash,
    test_verify_detects_edited_details,
    test_verify_detects_entries_cut_from_the_end,
    test_verify_detects_removed_entries,
    test_write_snapshot_rewrites_only_when_the_log_changed,
)

from eul.stores.log.schema import GENESIS_HASH, LedgerError, LedgerUnavailable, metadata
from eul.stores.log.store import Ledger


@pytest.fixture
def log_url(postgres_url: str) -> str:
    """The test's own PostgreSQL database, through the psycopg2 driver."""
    return with_driver(postgres_url, "postgresql+psycopg2")


@pytest.fixture
def ledger(log_url: str, tmp_path):
    with Ledger(log_url, params_path=tmp_path / "absent.yaml") as opened:
        yield opened


def _lock_waits(url: str) -> int:
    """How many sessions on the database wait for a lock right now."""
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
                    "WHERE NOT l.granted AND a.datname = current_database()"
                )
            ).scalar_one()
    finally:
        engine.dispose()


def test_openers_racing_to_create_a_new_log_wait_for_each_other(log_url, tmp_path) -> None:
    # Given one opener part-way through creating a new log: its tables made, not committed
    created, release = threading.Event(), threading.Event()
    opened: dict[str, object] = {}

    def pause_the_first(*_args, **_kwargs) -> None:
        if not created.is_set():
            created.set()
            release.wait(60)

    def open_log(name: str) -> None:
        try:
            with Ledger(log_url, params_path=tmp_path / "absent.yaml") as ledger:
                opened[name] = ledger.head()
        except Exception as err:  # what the test reports
            opened[name] = err

    event.listen(metadata, "after_create", pause_the_first)
    openers = [threading.Thread(target=open_log, args=(name,)) for name in ("first", "second")]
    try:
        openers[0].start()
        assert created.wait(60)
        # When a second opener starts meanwhile, and waits for a lock
        openers[1].start()
        deadline = time.monotonic() + 60
        while _lock_waits(log_url) == 0:
            assert openers[1].is_alive(), opened
            assert time.monotonic() < deadline, "the second opener never waited"
            time.sleep(0.05)
    finally:
        release.set()
        for opener in openers:
            opener.join(60)
        event.remove(metadata, "after_create", pause_the_first)
    # Then, once the first commits, both have opened the one new log
    assert opened == {"first": (0, GENESIS_HASH), "second": (0, GENESIS_HASH)}


def _pages_hold(ledger: Ledger, needle: str) -> bool:
    """Whether any page of the log's tables holds `needle`'s bytes (dead row versions too)."""
    with ledger.engine.begin() as conn:
        try:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pageinspect"))
        except Exception as err:  # a server without the contrib modules
            pytest.skip(f"pageinspect is not available: {str(err).splitlines()[0]}")
    found = 0
    with ledger.engine.connect() as conn:
        for table in metadata.sorted_tables:
            found += conn.execute(
                text(
                    "SELECT count(*) FROM generate_series(0, "
                    "pg_relation_size(:t) / current_setting('block_size')::int - 1) AS page "
                    "WHERE position(convert_to(:needle, 'UTF8') in get_raw_page(:t, page::int)) > 0"
                ),
                {"t": table.name, "needle": needle},
            ).scalar_one()
    return found > 0


def test_the_migration_leaves_no_old_row_version_in_the_tables_pages(ledger) -> None:
    from test_migrate import write_old_log

    # Given a log written the old way: a subject id in the clear in entries and states
    write_old_log(ledger)
    assert _pages_hold(ledger, "Alice.Smith")  # the check can fail
    # When it is migrated (rewriting those rows leaves their old versions in the pages)
    report = ledger.migrate_evidence()
    # Then the tables were rewritten: no page of them holds the subject id any more
    assert report.changed and ledger.verify().ok
    assert not _pages_hold(ledger, "Alice.Smith")


def test_a_bare_postgresql_url_without_its_driver_names_the_one_installed(tmp_path) -> None:
    import importlib.util

    if importlib.util.find_spec("psycopg") is not None:
        pytest.skip("psycopg 3 is installed: a bare postgresql:// URL opens with it")
    # when the log is opened at a bare postgresql:// URL (SQLAlchemy 2.1: psycopg 3)
    with pytest.raises(LedgerUnavailable, match="'psycopg' is not installed") as caught:
        Ledger("postgresql://eul:s3cret@127.0.0.1:9/eul", params_path=tmp_path / "absent.yaml")
    # then the error names the URL that works, and not the password
    assert "postgresql+psycopg2://" in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_case_collisions_and_state_tampering_are_caught_on_postgresql(log_url, tmp_path):
    with Ledger(log_url, params_path=tmp_path / "x.yaml", evidence_key=b"k" * 32) as ledger:
        ledger.submit(subject_id="Alice.Smith", request_id="Req-A")
        ledger.submit(record_ids=["r9"], request_id="req-ids")
        with pytest.raises(LedgerError, match="'req-a' differs from 'Req-A' only in case"):
            ledger.submit(record_ids=["r1"], request_id="req-a")
        ledger.validate({"Alice.Smith": ["r1", "r2"], "x": ["r9"]})
        deploy(ledger, "Req-A")
        purge(ledger, "Req-A")
        assert ledger.verify().ok
        # the lookup has its index
        with ledger.engine.connect() as conn:
            indexes = conn.exec_driver_sql(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'ledger_requests'"
            ).all()
        assert any("lower((request_id)" in d for (d,) in indexes)
        with ledger.engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE ledger_requests SET matched_ids = '[]' WHERE request_id = 'req-ids'"
            )
        report = ledger.verify()
    assert not report.ok
    assert "disagrees with the entries for req-ids: matched_ids" in report.reason
