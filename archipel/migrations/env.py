"""Alembic environment: runs migrations online against the configured URL."""

from __future__ import annotations

from alembic import context

from archipel.migrations import load_models
from archipel.platform.db import Base, get_database

load_models()
config = context.config
url = config.get_main_option("sqlalchemy.url") or ""


def run() -> None:
    engine = get_database(url).engine
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run()
