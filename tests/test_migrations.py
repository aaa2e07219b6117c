"""The Alembic migrations build exactly the schema the models declare, and go down again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from archipel.migrations import alembic_config, load_models, upgrade
from archipel.platform.db import Base
from archipel.radiology.documents_search import FTS_TABLE, PG_INDEX

#: What a migration makes that no model declares: SQLite's FTS5 full-text tables (and their shadow tables),
#: PostgreSQL's full-text expression indexes.
_FULL_TEXT = {"table": (FTS_TABLE,), "index": (PG_INDEX,)}


def _declared(name: str | None, type_: str, _parents: object) -> bool:
    return not (name is not None and name.startswith(_FULL_TEXT.get(type_, ())))


def test_upgraded_schema_matches_the_models(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    load_models()
    engine = create_engine(empty_db_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": False, "include_name": _declared}),
                Base.metadata,
            )
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations differ; add a migration for: {diff}"


def test_every_migration_goes_down_to_an_empty_schema(empty_db_url: str) -> None:
    upgrade(empty_db_url)
    command.downgrade(alembic_config(empty_db_url), "base")
    engine = create_engine(empty_db_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
