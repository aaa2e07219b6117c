"""Read a ``multipart/form-data`` slide upload as a stream: the ``file`` part goes straight to a spool file.

Starlette's form parser would spool the file to a temporary file and hand it over afterwards, which copies a
many-gigabyte slide twice; here each piece of the ``file`` part is written to its :class:`SourceSpool` as it
arrives (hashed on the way), and the small ``metadata`` part is kept in memory, up to a limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio.to_thread
from python_multipart.multipart import MultipartParser, parse_options_header

from archipel.platform.settings import Settings
from archipel.wsi.slides import SourceSpool

#: The metadata part is a small JSON object.
METADATA_LIMIT = 64 * 1024


class FormError(ValueError):
    """The request body is not the expected form; the message says what is wrong."""


@dataclass
class SlideForm:
    """What the form carried: the spooled ``file`` (with its client file name) and the raw ``metadata``."""

    spool: SourceSpool | None = None
    filename: str = ""
    metadata: bytes | None = None
    _headers: dict[bytes, bytes] = field(default_factory=dict)
    _field: bytes = b""
    _value: bytes = b""
    _target: str = ""
    _meta: bytearray = field(default_factory=bytearray)

    def discard(self) -> None:
        """Drop the spooled file, if any."""
        if self.spool is not None:
            self.spool.discard()


def boundary_of(content_type: str) -> bytes:
    """The multipart boundary of a ``Content-Type`` header; raises :class:`FormError` for anything else."""
    kind, params = parse_options_header(content_type)
    if kind != b"multipart/form-data" or not params.get(b"boundary"):
        raise FormError("the body must be multipart/form-data with a `file` part and a `metadata` part")
    return params[b"boundary"]


async def read_slide_form(content_type: str, body: AsyncIterator[bytes], settings: Settings) -> SlideForm:
    """Parse the form, spooling ``file`` to disk; raises :class:`FormError` (nothing left behind) when malformed."""
    form = SlideForm()
    errors: list[str] = []

    def on_part_begin() -> None:
        form._headers, form._target = {}, ""

    def on_header_field(data: bytes, start: int, end: int) -> None:
        form._field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        form._value += data[start:end]

    def on_header_end() -> None:
        form._headers[form._field.lower()] = form._value
        form._field, form._value = b"", b""

    def on_headers_finished() -> None:
        _, params = parse_options_header(form._headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        if name == "file":
            if form.spool is not None:
                errors.append("the form has more than one `file` part")
                return
            form.spool = SourceSpool(settings)
            form.filename = params.get(b"filename", b"").decode("utf-8", "replace")
        elif name == "metadata":
            form._meta.clear()
        form._target = name

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if form._target == "file" and form.spool is not None and not errors:
            form.spool.write(data[start:end])
        elif form._target == "metadata":
            form._meta += data[start:end]
            if len(form._meta) > METADATA_LIMIT:
                errors.append(f"the metadata part is larger than {METADATA_LIMIT} bytes")

    def on_part_end() -> None:
        if form._target == "metadata":
            form.metadata = bytes(form._meta)
        form._target = ""

    parser = MultipartParser(
        boundary_of(content_type),
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        async for chunk in body:
            # The parser writes the file part to disk from its callbacks: keep that off the event loop.
            await anyio.to_thread.run_sync(parser.write, chunk)
            if errors:
                raise FormError(errors[0])
        parser.finalize()
        if errors:
            raise FormError(errors[0])
        if form.spool is None:
            raise FormError("the form has no `file` part (the slide)")
        if form.metadata is None:
            raise FormError("the form has no `metadata` part (JSON with at least patient_id and issuer)")
        if form.spool.size == 0:
            raise FormError("the `file` part is empty")
        await anyio.to_thread.run_sync(form.spool.finish)
    except Exception:
        form.discard()
        raise
    return form
