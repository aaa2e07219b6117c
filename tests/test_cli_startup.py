"""The ``archipel`` command starts without loading what only some of its commands need."""

from __future__ import annotations

import subprocess
import sys

#: Libraries that cost a noticeable part of a second to import and that only database-backed commands,
#: ``serve`` or ``wsi convert`` need.
HEAVY = (
    "sqlalchemy",
    "pydantic_settings",
    "celery",
    "fastapi",
    "pydicom",
    "dask",
    "archipel.platform.runtime",
)


def test_loading_the_command_line_imports_no_database_web_or_imaging_library() -> None:
    code = f"import sys, archipel.cli\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert loaded == []


def test_help_lists_the_command_groups() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "archipel.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert all(group in result.stdout for group in ("identity", "wsi", "import", "serve"))
