"""What a document's content may be, and the words of it that full-text search indexes.

Contents are PDF, plain text (UTF-8) or HTML. A PDF must start with ``%PDF-``; text and HTML must be UTF-8.
Text is indexed without accents, HTML without its tags (and without scripts and styles), a PDF by the text of its
pages as pypdf extracts it (decision 0044): a scanned PDF without a text layer, an encrypted one, or one pypdf
cannot read is indexed by its title only.
"""

from __future__ import annotations

import html
import io
import logging
import unicodedata
from html.parser import HTMLParser

from pypdf import PdfReader

log = logging.getLogger("archipel.documents")

PDF, TEXT, HTML = "application/pdf", "text/plain", "text/html"
CONTENT_TYPES = (PDF, TEXT, HTML)
#: The largest content accepted (a report or letter, not an image).
MAX_SIZE = 32 * 1024 * 1024
#: Pages of a PDF whose text is indexed, and the most characters kept of it: a report is a few pages, and a
#: huge or hostile PDF must not make registering it slow.
MAX_PDF_PAGES = 50
MAX_PDF_TEXT = 200_000


class DocumentInvalid(ValueError):
    """A document's metadata or content is refused; the message says why (HTTP 422)."""


class UnsupportedContentType(DocumentInvalid):
    """A content type other than PDF, text or HTML (HTTP 415)."""


def media_type(content_type: str) -> str:
    """The bare media type of a ``Content-Type`` value (``text/plain; charset=utf-8`` -> ``text/plain``),
    checked against :data:`CONTENT_TYPES`."""
    bare = content_type.split(";", 1)[0].strip().lower()
    if bare not in CONTENT_TYPES:
        raise UnsupportedContentType(
            f"content type {bare or '(none)'!r} is not accepted; use one of: {', '.join(CONTENT_TYPES)}"
        )
    return bare


def check_content(content: bytes, content_type: str) -> str:
    """Validate ``content`` for ``content_type``; return the bare media type.

    Raises :class:`UnsupportedContentType` or :class:`DocumentInvalid` naming what is wrong."""
    bare = media_type(content_type)
    if not content:
        raise DocumentInvalid("the document content is empty")
    if len(content) > MAX_SIZE:
        raise DocumentInvalid(
            f"the document content is {len(content)} bytes; at most {MAX_SIZE} are accepted"
        )
    if bare == PDF:
        if not content.startswith(b"%PDF-"):
            raise DocumentInvalid("the content is declared application/pdf but does not start with %PDF-")
        return bare
    try:
        content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentInvalid(f"{bare} content must be UTF-8 (invalid byte at offset {exc.start})") from exc
    return bare


class _TextOfHtml(HTMLParser):
    _SKIPPED = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIPPED:
            self._skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIPPED and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """The visible text of an HTML fragment or page, tags removed."""
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    return html.unescape(" ".join(" ".join(parser.parts).split()))


def without_accents(words: str) -> str:
    """``words`` with diacritics removed ("inférieur" -> "inferieur"): both the index and the queries are
    folded so, on SQLite and PostgreSQL alike (PostgreSQL's ``french`` configuration keeps accents)."""
    return "".join(c for c in unicodedata.normalize("NFKD", words) if not unicodedata.combining(c))


def pdf_text(content: bytes) -> str:
    """The text of a PDF's first :data:`MAX_PDF_PAGES` pages (at most :data:`MAX_PDF_TEXT` characters); ``""``
    for a PDF without a text layer, an encrypted one, or one that cannot be read."""
    parts: list[str] = []
    size = 0
    try:
        reader = PdfReader(io.BytesIO(content))
        if reader.is_encrypted:
            return ""
        for page in reader.pages[:MAX_PDF_PAGES]:
            words = " ".join((page.extract_text() or "").split())
            parts.append(words)
            size += len(words) + 1
            if size >= MAX_PDF_TEXT:
                break
    except Exception as exc:  # pypdf raises many kinds on a damaged file; the title still indexes it
        log.warning("event=pdf_text_unreadable error=%s", type(exc).__name__)
        return ""
    return " ".join(p for p in parts if p)[:MAX_PDF_TEXT]


def searchable_text(title: str, content: bytes, content_type: str) -> str:
    """The words full-text search finds the document by: its title, then its text (a PDF's extracted text),
    without accents."""
    bare = media_type(content_type)
    if bare == PDF:
        body = pdf_text(content)
    elif bare == HTML:
        body = html_text(content.decode("utf-8"))
    else:
        body = " ".join(content.decode("utf-8").split())
    return without_accents(f"{title}\n{body}".strip())
