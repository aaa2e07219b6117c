"""uvicorn's httptools protocol, with each response's writes sent to the socket together.

uvicorn writes a response's status line and headers, then its body, each with ``transport.write``; uvloop sends
every write at once, so a small response (a 20 kB tile) costs two ``writev`` system calls and two loopback
segments. Profiled under 32 connections (docs/performance.md, "Tile service"), those two calls were 40 % of the
HTTP process's time. :class:`HttpProtocol` queues the writes of one pass of the event loop and hands them to
the transport in one ``writelines`` (one system call) at the end of that pass; nothing is delayed longer than
the callback that wrote it. A connection upgraded to a WebSocket writes straight through.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """A transport whose writes within one event loop callback go out together (``writelines``); every other
    method is the wrapped transport's. A close or an end of file first sends what is queued."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._queued: list[bytes] = []
        self._direct = False

    def write(self, data: bytes) -> None:
        """Queue ``data``; the queue goes out at the end of the current callback."""
        if self._direct:
            self._transport.write(data)
            return
        if not self._queued:
            self._loop.call_soon(self.flush)
        self._queued.append(data)

    def writelines(self, lines: Any) -> None:
        """Queue each of ``lines``."""
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        """Send what is queued, in one system call when the socket takes it."""
        if self._queued:
            queued, self._queued = self._queued, []
            if not self._transport.is_closing():
                self._transport.writelines(queued)

    def close(self) -> None:
        """Send what is queued, then close."""
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        """Send what is queued, then end the stream."""
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        """Drop what is queued and close at once."""
        self._queued = []
        self._transport.abort()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Hand the connection to another protocol (a WebSocket), which then writes straight through."""
        self.flush()
        self._direct = True
        self._transport.set_protocol(protocol)

    def get_write_buffer_size(self) -> int:
        """What the transport holds, and what is queued here."""
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._queued)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`CoalescingTransport` (``uvicorn.run(http=...)``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Wrap the connection's transport, then set the connection up as uvicorn does."""
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
