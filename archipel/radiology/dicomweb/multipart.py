"""``multipart/related`` bodies (RFC 2387) as DICOMweb uses them: read a request part by part, write a response
as a stream.

Reading parses with python-multipart, which accepts any boundary, and spools each part to a temporary file, so a
large STOW body is held once, on disk, and never whole in memory.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState
from starlette.concurrency import run_in_threadpool

#: Parts up to this size stay in memory; larger ones roll over to a temporary file.
SPOOL_IN_MEMORY = 8 << 20
#: How far into the body the first boundary may be (the preamble RFC 2046 allows before it).
MAX_PREAMBLE = 64 << 10
CHUNK = 1 << 20


class MalformedMultipart(ValueError):
    """The body is not a well-formed ``multipart/related`` message; ``reason`` says where it broke."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class ReceivedPart:
    """One part of a received message: its headers (lower-cased names) and its spooled content."""

    headers: dict[str, str]
    content: IO[bytes]
    size: int = 0

    @property
    def content_type(self) -> str:
        """The part's ``Content-Type`` header ('' when absent)."""
        return self.headers.get("content-type", "")

    def read(self) -> bytes:
        """The whole content of the part."""
        self.content.seek(0)
        return self.content.read()

    def close(self) -> None:
        """Release the spool file."""
        self.content.close()


@dataclass
class _Collector:
    spool_dir: Path | None
    parts: list[ReceivedPart] = field(default_factory=list)
    current: ReceivedPart | None = None
    header_name: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)

    def begin(self) -> None:
        # The spool outlives this call: ReceivedPart.close releases it once the part is stored.
        spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=SPOOL_IN_MEMORY, dir=str(self.spool_dir) if self.spool_dir else None
        )
        self.current = ReceivedPart(headers={}, content=spool)  # type: ignore[arg-type]

    def data(self, data: bytes, start: int, end: int) -> None:
        assert self.current is not None
        self.current.content.write(data[start:end])
        self.current.size += end - start

    def field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        assert self.current is not None
        name = self.header_name.decode("latin-1").strip().lower()
        self.current.headers[name] = self.header_value.decode("latin-1").strip()
        self.header_name.clear()
        self.header_value.clear()

    def end(self) -> None:
        assert self.current is not None
        self.parts.append(self.current)
        self.current = None


async def read_parts(
    chunks: AsyncIterator[bytes], boundary: str, spool_dir: Path | None = None
) -> list[ReceivedPart]:
    """Read every part of a ``multipart/related`` body arriving as ``chunks``.

    Raises :class:`MalformedMultipart` when the body does not parse, ends before its closing boundary, or holds
    no part; the spooled parts are released in that case.
    """
    collector = _Collector(spool_dir)
    parser = MultipartParser(
        boundary.encode("latin-1"),
        {
            "on_part_begin": collector.begin,
            "on_part_data": collector.data,
            "on_header_field": collector.field,
            "on_header_value": collector.value,
            "on_header_end": collector.header_end,
            "on_part_end": collector.end,
        },
    )
    opening = b"--" + boundary.encode("latin-1")
    head = bytearray()
    started = False
    try:
        async for chunk in chunks:
            if not started:
                # python-multipart wants the body to open with the boundary: drop a preamble ourselves.
                head += chunk
                at = head.find(opening)
                if at < 0:
                    if len(head) > MAX_PREAMBLE:
                        raise MalformedMultipart(
                            f"no boundary {boundary!r} in the first {MAX_PREAMBLE} bytes"
                        )
                    continue
                started = True
                chunk, head = bytes(head[at:]), bytearray()
            # Parsing writes the spool files: keep that disk work off the event loop.
            await run_in_threadpool(parser.write, chunk)
        if not started:
            raise MalformedMultipart(f"the body holds no boundary {boundary!r}")
        parser.finalize()
        if parser.state != MultipartState.END:
            raise MalformedMultipart("the body ends before the closing boundary")
        if not collector.parts:
            raise MalformedMultipart("the body holds no part")
    except MultipartParseError as exc:
        _close(collector)
        raise MalformedMultipart(f"malformed multipart body: {exc}") from exc
    except MalformedMultipart:
        _close(collector)
        raise
    return collector.parts


def _close(collector: _Collector) -> None:
    for part in collector.parts:
        part.close()
    if collector.current is not None:
        collector.current.close()


@dataclass(frozen=True)
class OutgoingPart:
    """One part of a response: its ``Content-Type``, an optional ``Content-Location``, and its content."""

    content_type: str
    content: Iterable[bytes]
    location: str = ""


def new_boundary() -> str:
    """A boundary that cannot occur in DICOM content by chance."""
    return f"archipel-{uuid.uuid4().hex}"


def multipart_content_type(part_type: str, boundary: str, transfer_syntax: str | None = None) -> str:
    """The ``Content-Type`` of a ``multipart/related`` response whose root parts are ``part_type``."""
    value = f'multipart/related; type="{part_type}"; boundary={boundary}'
    if transfer_syntax:
        value += f"; transfer-syntax={transfer_syntax}"
    return value


def write_parts(parts: Iterable[OutgoingPart], boundary: str) -> Iterator[bytes]:
    """The body of a ``multipart/related`` message, part after part, each part's content as it comes."""
    for part in parts:
        head = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
        if part.location:
            head += f"Content-Location: {part.location}\r\n"
        yield (head + "\r\n").encode("latin-1")
        yield from part.content
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode("latin-1")


def file_chunks(handle: IO[bytes], offset: int = 0, length: int | None = None) -> Iterator[bytes]:
    """Read ``length`` bytes (or to the end) of an open file from ``offset``, a chunk at a time; close it after."""
    with handle:
        handle.seek(offset)
        remaining = length
        while remaining is None or remaining > 0:
            size = CHUNK if remaining is None else min(CHUNK, remaining)
            chunk = handle.read(size)
            if not chunk:
                break
            if remaining is not None:
                remaining -= len(chunk)
            yield chunk
