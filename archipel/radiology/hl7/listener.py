"""The MLLP listener: the ``hl7`` library's asyncio server in a background thread, one message at a time per
connection (a RIS waits for each acknowledgement before it sends the next), applied in worker threads.

A frame is ``<VT> message <FS><CR>``. A frame without its ``<VT>`` is answered ``AR`` and kept as a dead letter
(its bytes are read up to ``<FS><CR>`` first, so nothing is lost and the connection stays usable). A message over
the size limit is answered ``AR`` and its beginning kept as a truncated dead letter.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from hl7.mllp import start_hl7_server
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

from archipel.platform.runtime import Runtime
from archipel.radiology.hl7.messages import SEGMENT_SEQUENCE, Rejected, ack, header_fields
from archipel.radiology.hl7.receiver import keep_refused, receive, unkept

log = logging.getLogger("archipel.hl7")

#: Largest message accepted (an ORU may carry a PDF in base64).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
#: How much of a message over the limit is kept in its dead letter (enough for its header and patient).
KEPT_BYTES = 64 * 1024
#: Seconds a connection may stay silent before we close it.
IDLE_SECONDS = 600


@dataclass
class Hl7Listener:
    """A running MLLP listener; ``stop()`` closes it and waits for its thread."""

    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    server: Any = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, "hl7"))

    def stop(self) -> None:
        """Stop accepting, close the socket, and let the messages being applied finish."""

        async def close() -> None:
            self.server.close()
            await self.server.wait_closed()

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.executor.shutdown(wait=True)


def frame(message: bytes) -> bytes:
    """``message`` in an MLLP frame."""
    return START_BLOCK + message + END_BLOCK + CARRIAGE_RETURN


def _answer(rt: Runtime, block: bytes, peer: str) -> bytes:
    """The acknowledgement of one frame's bytes (``<FS><CR>`` included); every frame gets one, even when the
    database is unavailable (an ``AE`` asking the RIS to send it again: nothing was applied or kept)."""
    body = block[: -len(END_BLOCK + CARRIAGE_RETURN)]
    stripped = body.lstrip(b"\r\n\t ")
    try:
        if not stripped.startswith(START_BLOCK):
            error = Rejected("the frame does not begin with the MLLP start block <VT>", SEGMENT_SEQUENCE)
            return keep_refused(rt.db, body, peer, None, error, None).ack
        return receive(rt, stripped[1:], peer).ack
    except Exception as exc:  # the refusal itself could not be recorded
        log.exception("event=hl7_not_kept peer=%s error=%s", peer, type(exc).__name__)
        return unkept(stripped[1:] if stripped.startswith(START_BLOCK) else body)


async def _skip_frame(reader: Any, overrun: asyncio.LimitOverrunError) -> tuple[bytes, int] | None:
    """Read past a frame that overran the limit, up to its ``<FS><CR>``, keeping what follows it; return its
    first :data:`KEPT_BYTES` bytes and its whole size, or ``None`` if the connection ended first."""
    sep = END_BLOCK + CARRIAGE_RETURN
    head, size = b"", 0
    while True:
        try:
            chunk = await reader.readexactly(max(overrun.consumed, 1))
            size += len(chunk)
            if len(head) < KEPT_BYTES:
                head += chunk[: KEPT_BYTES - len(head)]
            rest = await reader.readuntil(sep)
            size += len(rest) - len(sep)
            return head, size
        except asyncio.LimitOverrunError as again:
            overrun = again
        except (asyncio.IncompleteReadError, ConnectionError):
            return None


def _keep_too_large(rt: Runtime, head: bytes, size: int, peer: str, max_bytes: int) -> bytes:
    """The ``AR`` of a message over the size limit, kept as a dead letter: whole when it fits in
    :data:`KEPT_BYTES`, else its beginning cut after its last whole segment (truncated), so an administrator sees
    what it was and may correct it."""
    body = head.lstrip(b"\r\n\t ")
    body = body[1:] if body.startswith(START_BLOCK) else body
    received = size - (len(head) - len(body))  # the message without what precedes its <VT>
    kept = body
    if size > len(head):
        cut = body.rfind(b"\r")
        kept = body[: cut + 1] if cut > 0 else body
    reason = f"the message is larger than {max_bytes} bytes ({received})"
    if len(kept) < received:
        reason += f"; only its first {len(kept)} are kept"
    try:
        return keep_refused(rt.db, kept, peer, None, Rejected(reason, SEGMENT_SEQUENCE), None,
                            received_size=received).ack  # fmt: skip
    except Exception:  # the database is unavailable: still answer
        log.exception("event=hl7_not_kept peer=%s", peer)
        return ack(None, "AR", reason, SEGMENT_SEQUENCE, raw_fields=header_fields(kept))


async def _connection(
    rt: Runtime, executor: ThreadPoolExecutor, reader: Any, writer: Any, max_bytes: int
) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    name = writer.get_extra_info("peername")
    peer = f"{name[0]}:{name[1]}" if isinstance(name, tuple) else ""
    log.info("event=hl7_connection peer=%s", peer)
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                block = await asyncio.wait_for(reader.readuntil(END_BLOCK + CARRIAGE_RETURN), IDLE_SECONDS)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                break
            except asyncio.LimitOverrunError as overrun:
                # Its beginning is kept, its end skipped (the RIS waits for this answer before sending more).
                log.warning("event=hl7_too_large peer=%s limit=%d", peer, max_bytes)
                skipped = await _skip_frame(reader, overrun)
                if skipped is None:
                    break
                head, size = skipped
                answer = await loop.run_in_executor(
                    executor, _keep_too_large, rt, head, size, peer, max_bytes
                )
                writer.write(frame(answer))
                await writer.drain()
                continue
            answer = await loop.run_in_executor(executor, _answer, rt, block, peer)
            writer.write(frame(answer))
            await writer.drain()
    finally:
        writer.close()
        log.info("event=hl7_connection_closed peer=%s", peer)


def start_hl7_listener(
    rt: Runtime, host: str, port: int, *, max_bytes: int = MAX_MESSAGE_BYTES
) -> Hl7Listener:
    """Listen for MLLP on ``host:port`` (``port`` 0: any free port) in a background thread; return once it
    accepts connections. A message over ``max_bytes`` is answered ``AR`` and kept as a dead letter (truncated
    when larger than :data:`KEPT_BYTES`); the connection stays open."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        executor: ThreadPoolExecutor = holder["executor"]

        async def begin() -> Any:
            async def on_client(reader: Any, writer: Any) -> None:
                await _connection(rt, executor, reader, writer, max_bytes)

            return await start_hl7_server(on_client, host, port, limit=max_bytes)

        try:
            holder["server"] = loop.run_until_complete(begin())
        except BaseException as exc:  # reported to the caller, e.g. the port is taken
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.close()

    holder["executor"] = ThreadPoolExecutor(4, "hl7")
    thread = threading.Thread(target=run, name="hl7-listener", daemon=True)
    thread.start()
    ready.wait(30)
    if failure:
        raise failure[0]
    server = holder["server"]
    actual = server.sockets[0].getsockname()[1]
    log.info("event=hl7_listening host=%s port=%d", host, actual)
    return Hl7Listener(actual, loop, thread, server, holder["executor"])
