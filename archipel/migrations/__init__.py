"""Alembic migrations of the whole index, and the function that applies them.

They live at the composition level because the schema spans every module's models.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def alembic_config(url: str) -> Config:
    """An Alembic configuration for ``url`` that needs no alembic.ini."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logger"] = False
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def ensure_current(url: str) -> None:
    """Bring the database at ``url`` to the newest revision, unless it is there already.

    Every command line call makes sure of the schema; the check alone reads the revision table and the
    migration scripts' headers, whereas a full ``upgrade`` imports every model of the platform (seconds)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    cfg = alembic_config(url)
    heads = set(ScriptDirectory.from_config(cfg).get_heads())
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()
    if current != heads:
        command.upgrade(cfg, "head")


def load_models() -> None:
    """Import every module that declares ORM models, so the metadata is complete."""
    import archipel.mammo.models
    import archipel.platform.audit
    import archipel.platform.audit_checkpoints
    import archipel.platform.authn
    import archipel.platform.breakglass
    import archipel.platform.care
    import archipel.platform.consent
    import archipel.platform.identity.models
    import archipel.platform.inbox
    import archipel.platform.jobs
    import archipel.platform.notify
    import archipel.platform.patient_access
    import archipel.platform.preservation
    import archipel.platform.sessions
    import archipel.platform.throttle
    import archipel.radiology.documents_models
    import archipel.radiology.hl7.models
    import archipel.radiology.models
    import archipel.radiology.retention_models
    import archipel.radiology.telerad_models
    import archipel.radiology.tumorboard_models
    import archipel.wsi.annotations
    import archipel.wsi.duty
    import archipel.wsi.frozen
    import archipel.wsi.frozen_report
    import archipel.wsi.models
    import archipel.wsi.validation_study  # noqa: F401
