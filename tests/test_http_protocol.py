"""The HTTP protocol's coalesced writes: a response's status line, headers and body leave in one call to the
transport, and what a connection writes is never lost, reordered or held past the callback that wrote it."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from archipel.platform.http_protocol import CoalescingTransport
from tests.support import free_port, wait_until


class RecordingTransport:
    """A transport that records what it is asked to send."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closed = False
        self.protocol: object = None

    def write(self, data: bytes) -> None:
        self.calls.append(("write", [data]))

    def writelines(self, lines: list[bytes]) -> None:
        self.calls.append(("writelines", list(lines)))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str) -> str:
        return f"extra:{name}"


def in_own_thread(body: Any) -> None:
    """Run ``body`` in a thread of its own: an earlier test of the same worker (a Playwright session, say) may
    have left an event loop running in this one, and a second loop cannot run there."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            body()
        except BaseException as exc:  # handed back to the test
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the loop did not stop"
    if errors:
        raise errors[0]


def test_writes_of_one_callback_go_out_in_one_call_at_its_end_and_a_close_sends_them_first() -> None:
    in_own_thread(_writes_of_one_callback)


def _writes_of_one_callback() -> None:
    loop = asyncio.new_event_loop()
    try:
        raw = RecordingTransport()
        transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]

        def respond() -> None:
            transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
            transport.write(b"tile")
            assert raw.calls == []  # nothing sent within the callback
            assert transport.get_write_buffer_size() == 42
            loop.call_soon(loop.stop)  # after the flush the writes queued

        loop.call_soon(respond)
        loop.run_forever()
        assert raw.calls == [("writelines", [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n", b"tile"])]

        transport.write(b"last words")
        transport.close()  # a close does not wait for the loop: what was written goes first
        assert raw.calls[-1] == ("writelines", [b"last words"]) and raw.closed
        assert transport.get_extra_info("peername") == "extra:peername"  # the rest is the transport's
    finally:
        loop.close()


def test_a_connection_handed_to_another_protocol_writes_straight_through() -> None:
    loop = asyncio.new_event_loop()
    try:
        raw = RecordingTransport()
        transport = CoalescingTransport(raw, loop)  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        websocket = object()
        transport.set_protocol(websocket)  # type: ignore[arg-type]
        assert raw.protocol is websocket
        assert raw.calls == [("writelines", [b"HTTP/1.1 101 Switching Protocols\r\n\r\n"])]
        transport.write(b"\x81\x02hi")
        assert raw.calls[-1] == ("write", [b"\x81\x02hi"])
    finally:
        loop.close()


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = scope["path"].encode() * 1000
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        _app, host="127.0.0.1", port=port, loop="uvloop", http="archipel.platform.http_protocol:HttpProtocol"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, 30, "uvicorn to listen")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_uvicorn_over_the_protocol_answers_many_requests_on_one_kept_alive_connection(server: str) -> None:
    with httpx.Client(base_url=server) as client:
        for n in range(50):
            r = client.get(f"/t{n}")
            assert r.status_code == 200 and r.content == f"/t{n}".encode() * 1000
