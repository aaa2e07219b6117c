"""Operator commands of the document registry: ``archipel documents verify`` finds a content altered or gone,
``archipel documents reindex`` rebuilds the full-text index from the contents."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from archipel.cli.common import app
from archipel.platform import access
from archipel.platform.authn import Principal
from archipel.platform.runtime import Runtime
from archipel.radiology import documents
from archipel.radiology.documents_search import DocumentQuery, find
from tests.access_support import ensure_master

RADIOLOGIST = Principal("dr-amandier", "radiologist", site="SITE-A")


def _run(runtime: Runtime, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    import archipel.cli  # noqa: F401  (registers the commands)

    monkeypatch.setenv("ARCHIPEL_DATABASE_URL", runtime.settings.effective_database_url)
    result = CliRunner().invoke(app, [*args, "--data", str(runtime.settings.data_dir)])
    return result.exit_code, result.stdout


def _report(runtime: Runtime, words: str) -> documents.Document:
    return documents.register(
        runtime.db, runtime.blobs, RADIOLOGIST, issuer="SITE-A", patient_id="CLI001", type_code="18748-4",
        title="Compte rendu", content=words.encode(), content_type="text/plain", author="Dr Amandier",
        organisation="Centre A", site="SITE-A",
    )  # fmt: skip


def _found(runtime: Runtime, words: str) -> int:
    scope = access.read_scope(RADIOLOGIST)
    return find(runtime.db, scope, DocumentQuery(words=words))[1]


def test_verify_names_the_documents_whose_content_is_altered_or_gone(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensure_master(runtime.db, "SITE-A", "CLI001", birth_name="SORBIER")
    sound, altered, gone = (_report(runtime, w) for w in ("Sain.", "Altere.", "Disparu."))
    assert _run(runtime, monkeypatch, "documents", "verify")[0] == 0
    runtime.blobs.delete(altered.blob_key)
    runtime.blobs.put(altered.blob_key, b"tampered")
    runtime.blobs.delete(gone.blob_key)
    code, output = _run(runtime, monkeypatch, "documents", "verify")
    assert code == 1
    assert f"document {altered.id}: content does not match its SHA-256" in output
    assert f"document {gone.id}: content missing" in output and f"document {sound.id}:" not in output
    assert "3 documents, 2 problems" in output


def test_reindex_rebuilds_the_full_text_index(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    ensure_master(runtime.db, "SITE-A", "CLI001", birth_name="SORBIER")
    _report(runtime, "Fracture du radius.")
    with runtime.db.write() as s:  # an index lost (a restore from a copy without it, say)
        s.execute(text("UPDATE documents SET search_text = ''"))
        if runtime.db.is_sqlite:
            s.execute(text("DELETE FROM documents_fts"))
    assert _found(runtime, "radius") == 0
    code, output = _run(runtime, monkeypatch, "documents", "reindex")
    assert code == 0 and "1 documents, 0 problems" in output
    assert _found(runtime, "fractures") == 1
