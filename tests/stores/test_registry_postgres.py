"""MLflow's tracking store and model registry on PostgreSQL (``postgresql+psycopg2://``), the
production set-up: the registry tests of test_registry.py that hold for any store run again
here on one PostgreSQL database for the module (MLflow's schema takes seconds to create),
the database itself is searched for forgotten text, and an `mlflow server` on the same
database serves the registry code over HTTP."""

from __future__ import annotations

import pytest
import test_registry as sqlite_suite
from mlflow_server import running_mlflow_server
from postgres import with_driver
from test_registry import (  # noqa: F401  (collected here too: the same tests, on PostgreSQL)
    test_a_runs_artifacts_are_deleted_from_the_file_store_and_its_record_stays,
    test_experiment_has_an_explicit_artifact_location,
    test_experiment_stored_elsewhere_is_refused,
    test_long_tag_value_round_trips_through_a_model_file,
    test_missing_layer_folder_is_refused_before_logging,
    test_no_forget_text_reaches_the_store,
    test_register_promote_and_load_production,
    test_request_and_batch_runs_record_params_metrics_and_artifacts,
)

from eul.stores.registry.runs import log_batch_run, log_request_run
from eul.stores.registry.settings import TrackingSettings
from eul.stores.registry.tags import compliance_tags
from eul.stores.registry.versions import (
    PRODUCTION,
    find_versions,
    get_alias_version,
    register_version,
    set_alias,
    set_version_tags,
)

# MLflow's SQL store still calls an SQLAlchemy loader that SQLAlchemy 2.1 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy")

# The tiny models and layers the registry tests register (module-scoped).
folders = sqlite_suite.folders


@pytest.fixture(scope="module")
def store(tmp_path_factory, module_postgres_url) -> sqlite_suite.Store:
    """A PostgreSQL tracking database and a file artifact store shared by the module."""
    root = tmp_path_factory.mktemp("mlflow")
    settings = TrackingSettings(
        tracking_uri=with_driver(module_postgres_url, "postgresql+psycopg2"),
        artifact_location=str(root / "artifacts"),
        experiment="eul-test",
    )
    return sqlite_suite.Store(root, settings)


def _database_text(url: str) -> str:
    """Every row of every table of the database at `url`, as PostgreSQL writes rows as text."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            ).scalars()
            return "\n".join(
                row
                for table in list(tables)
                for row in conn.execute(text(f'SELECT t::text FROM "{table}" t')).scalars()
            )
    finally:
        engine.dispose()


def test_the_database_holds_tags_and_aliases_but_no_forget_text(store, folders, tmp_path):
    # given a version registered, promoted and tagged through the project's registry code
    settings = sqlite_suite._settings(store, "pg-dump")
    run = log_request_run(settings, "req-1", folders.layer, {"forget_acc": 0.0})
    tags = compliance_tags(["req-1"], 1, "h", sqlite_suite.GATES_OK)
    version = register_version(settings, run, folders.base, folders.layer, tags)
    set_alias(settings, PRODUCTION, version)
    set_version_tags(settings, version, {"promoted_by": "reviewer"})
    assert get_alias_version(settings, PRODUCTION) == version
    assert find_versions(settings, "promoted_by", "reviewer") == [version]
    # when every row of every table of the database is read as text
    dump = _database_text(store.settings.tracking_uri)
    # then it holds the version and its tags (the search finds what is there), and no
    # forget text or rare forget word
    assert settings.model_name in dump and "covered_request_ids,req-1" in dump
    for needle in [r.text for r in sqlite_suite.FORGET] + [sqlite_suite.SECRET, "zanzibar"]:
        assert needle.lower() not in dump.lower(), needle


@pytest.fixture(scope="module")
def mlflow_server(store):
    """`mlflow server --backend-store-uri postgresql+psycopg2://...` on a free loopback port,
    on the module's database; yields its URL and stops it by its PID."""
    with running_mlflow_server(store.settings.tracking_uri, store.root) as url:
        yield url


def test_an_mlflow_server_on_postgresql_serves_versions_and_aliases(store, folders, mlflow_server):
    # given the pipeline's settings pointing at the server (artifacts written directly)
    direct = sqlite_suite._settings(store, "server")
    served = TrackingSettings(
        tracking_uri=mlflow_server,
        artifact_location=direct.artifact_location,
        model_name=direct.model_name,
        experiment=direct.experiment,
    )
    # when a version is registered and promoted through it
    run = log_batch_run(served, "b1", ["req-1"], {"test_acc": 0.8})
    tags = compliance_tags(["req-1"], 2, "hash-2", sqlite_suite.GATES_OK)
    version = register_version(served, run, folders.base, folders.fused, tags)
    set_alias(served, PRODUCTION, version)
    # then the server answers with it, and the database behind it holds it too
    assert get_alias_version(served, PRODUCTION) == version == 1
    assert get_alias_version(direct, PRODUCTION) == 1
    assert find_versions(direct, "log_hash", "hash-2") == [1]
