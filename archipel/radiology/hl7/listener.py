"""The MLLP listener: the ``hl7`` library's asyncio server in a background thread, one message at a time per
connection (a RIS waits for each acknowledgement before it sends the next), applied in worker threads.

A frame is ``<VT> message <FS><CR>``. A frame without its ``<VT>`` is answered ``AR`` and kept as a dead letter
(its bytes are read up to ``<FS><CR>`` first, so nothing is lost and the connection stays usable).
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
from archipel.radiology.hl7.messages import SEGMENT_SEQUENCE, Rejected, ack
from archipel.radiology.hl7.receiver import keep_refused, receive, unkept

log = logging.getLogger("archipel.hl7")

#: Largest message accepted (an ORU may carry a PDF in base64).
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
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


async def _skip_frame(reader: Any, overrun: asyncio.LimitOverrunError) -> bool:
    """Drop the rest of a frame that overran the limit, up to its ``<FS><CR>``, and keep what follows it;
    ``False`` if the connection ended first."""
    sep = END_BLOCK + CARRIAGE_RETURN
    while True:
        try:
            await reader.readexactly(max(overrun.consumed, 1))
            await reader.readuntil(sep)
            return True
        except asyncio.LimitOverrunError as again:
            overrun = again
        except (asyncio.IncompleteReadError, ConnectionError):
            return False


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
                # Nothing of it is kept: its end is skipped (the RIS waits for this answer before sending more).
                log.warning("event=hl7_too_large peer=%s limit=%d", peer, max_bytes)
                if not await _skip_frame(reader, overrun):
                    break
                reason = f"the message is larger than {max_bytes} bytes"
                writer.write(frame(ack(None, "AR", reason, SEGMENT_SEQUENCE)))
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
    accepts connections. A message over ``max_bytes`` is answered ``AR`` and its connection closed."""
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
