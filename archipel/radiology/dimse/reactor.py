"""Associations that wait on events instead of polling: the DIMSE listener's server, request handler and reactors.

pynetdicom 3.0 runs two polling loops per association. Its DUL thread looks at the socket and at its outgoing
queue, and sleeps 1 ms whenever both are empty; its association thread sleeps 1 ms before each look at the
incoming message queue. A C-STORE from a sender that waits for each response crosses those loops three times
(the request arrives, reaches the handler, the response leaves), so every instance waited on up to three sleeps
(about 1.5 ms on an idle machine, several ms on a busy one, where a 1 ms sleep becomes a scheduler slice).

Here the DUL thread waits in ``select`` on its socket and on a wake-up socket pair that every put on its queues
writes to, and the association thread waits on an event that every put on its queues sets. Both keep a short
timeout only as the tick of their timers (ARTIM, idle, DIMSE).

This replaces two private loops of pynetdicom (``DULServiceProvider._is_transport_event`` waits instead of
peeking, and ``Association._run_reactor`` loses its sleep) and re-creates
``RequestHandler._create_association`` to build these classes. ``pyproject.toml`` pins pynetdicom to 3.0.x for
that reason; ``tests/test_dimse_reactor.py`` covers what the loops do (release, abort, idle timeout, C-GET on
the same association, many associations).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE, _config, evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom._handlers import (
    standard_dimse_recv_handler,
    standard_dimse_sent_handler,
    standard_pdu_recv_handler,
    standard_pdu_sent_handler,
)
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from archipel.radiology.dimse import wire
from archipel.radiology.dimse.balance import ListenerGroup

T = TypeVar("T")

_PYNETDICOM_LOG = logging.getLogger("pynetdicom")
_LOG = logging.getLogger("archipel.dimse")
_LOGGING_HANDLERS = (
    (evt.EVT_DIMSE_RECV, standard_dimse_recv_handler),
    (evt.EVT_DIMSE_SENT, standard_dimse_sent_handler),
    (evt.EVT_PDU_RECV, standard_pdu_recv_handler),
    (evt.EVT_PDU_SENT, standard_pdu_sent_handler),
)

#: How often an idle association looks at its timers (seconds). Data and queued work wake it at once.
TICK = 0.05


class SignallingQueue(queue.Queue[T]):
    """A FIFO queue that calls ``signal`` after each put, so that its consumer can sleep until there is work."""

    def __init__(self, signal: Any) -> None:
        super().__init__()
        self._signal = signal

    def put(self, item: T, block: bool = True, timeout: float | None = None) -> None:
        """Queue ``item`` and wake the consumer."""
        super().put(item, block, timeout)
        self._signal()


class EventDrivenDUL(DULServiceProvider):
    """pynetdicom's DUL provider, whose thread sleeps in ``select`` until data or work arrives."""

    def __init__(self, assoc: Association, wake_user: Any) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        # The loop runs again at once after an idle pass (the wait happens in select, not in a sleep).
        self._run_loop_delay = 0.0
        self.to_provider_queue = SignallingQueue(self.wake)  # type: ignore[assignment]
        self.event_queue = SignallingQueue(self.wake)
        self.to_user_queue = SignallingQueue(wake_user)  # type: ignore[assignment]

    def wake(self) -> None:
        """Make the DUL thread look at its queues now (a no-op when called from that thread)."""
        if threading.current_thread() is self:
            return
        # A full buffer means a wake-up is pending already; a closed pair means the thread has ended.
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _wait_for_work(self) -> None:
        """Block until the socket has data, another thread queued work, or a tick has passed."""
        transport = cast(AssociationSocket | None, self.socket)
        sock = transport.socket if transport is not None else None
        if sock is None or sock.fileno() < 0 or not transport._is_connected:  # type: ignore[union-attr]
            time.sleep(0.001)
            return
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return  # TLS: decrypted bytes are waiting that select cannot see
        try:
            ready, _, _ = select.select([sock, self._wake_r], [], [], TICK)
        except (OSError, ValueError):
            return  # the socket closed meanwhile: the caller's own check reports it
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass

    def _read_pdu_data(self) -> None:
        """pynetdicom's, except that a P-DATA-TF PDU of an established association carrying a plain C-STORE goes
        straight to :meth:`StoreResponseDIMSE.receive_pdata`, not through PDU and primitive objects and the
        state machine (in Sta6, a P-DATA-TF is always action DT-2, which passes it to DIMSE and stays in
        Sta6). Every other PDU, and any P-DATA that the assembler does not take, is pynetdicom's."""
        dimse = self.assoc.dimse
        if not isinstance(dimse, StoreResponseDIMSE) or not self._bulk_ready():
            super()._read_pdu_data()
            return
        transport = cast(AssociationSocket, self.socket)
        try:
            header = transport.recv(6)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")  # the connection closed: as pynetdicom's READ_PDU_EXC_A
            return
        if len(header) < 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            _LOG.error("event=dimse_unknown_pdu type=0x%02X", pdu_type)
            self.event_queue.put("Evt19")
            return
        try:
            body = transport.recv(length)
        except (OSError, TimeoutError):
            self.event_queue.put("Evt17")
            return
        if len(body) != length:
            self.event_queue.put("Evt17")
            return
        if pdu_type == 0x04 and dimse.receive_pdata(body):
            return
        # What pynetdicom's _read_pdu_data does with a PDU once read.
        header.extend(body)
        try:
            pdu, event = self._decode_pdu(header)
            self.event_queue.put(event)
        except Exception:
            _LOG.exception("event=dimse_pdu_undecodable")
            self.event_queue.put("Evt19")
            return
        self._recv_pdu.put(pdu)

    def _bulk_ready(self) -> bool:
        if self.state_machine.current_state != "Sta6":
            return False
        # pynetdicom's PDU events get the decoded PDU objects that the direct path does not build.
        return not (self.assoc.get_handlers(evt.EVT_DATA_RECV) or self.assoc.get_handlers(evt.EVT_PDU_RECV))

    def _is_transport_event(self) -> bool:
        # pynetdicom calls this once per pass when nothing local is queued; waiting here (instead of the
        # loop's sleep) is what makes the reactor event-driven. Events already queued are handled first.
        if self.event_queue.empty() and self.to_provider_queue.empty() and not self._kill_thread:
            self._wait_for_work()
        return bool(super()._is_transport_event())

    def kill_dul(self) -> None:
        """Stop the reactor thread."""
        super().kill_dul()
        self.wake()

    def stop_dul(self) -> bool:
        """Stop the reactor if the state machine is idle (Sta1); return whether it stopped."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self.wake()
        if self.is_alive() and threading.current_thread() is not self:
            self.join()
        return True

    def run_reactor(self) -> None:
        """The DUL thread's loop (pynetdicom's), then close the wake-up pair."""
        try:
            super().run_reactor()
        finally:
            dimse = self.assoc.dimse
            if isinstance(dimse, StoreResponseDIMSE):
                dimse.abandon()
            self._close_wake()
            assoc = self.assoc
            if assoc.is_acceptor and getattr(assoc.requestor, "primitive", None) is None:
                # The connection ended before its A-ASSOCIATE-RQ (a TCP health check, a port probe): PS3.8
                # AA-5 tells the user nothing, so pynetdicom's acceptor would wait out the ACSE timeout for a
                # request that cannot come, counted as an association all that time. What it gets on timeout.
                self.to_user_queue.put(None)  # type: ignore[arg-type]

    def _close_wake(self) -> None:
        for s in (self._wake_r, self._wake_w):
            s.close()


class BulkReceiveSocket(AssociationSocket):
    """pynetdicom's association socket, but a PDU is read into one buffer in as few ``recv_into`` calls as the
    network allows.

    pynetdicom reads at most 4,096 bytes per ``recv`` and appends each piece to a growing buffer: a 128 KiB
    P-DATA-TF PDU (what dcmtk sends when we accept any size) took 32 system calls and as many copies, about
    a third of the listener's CPU per instance.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The DUL thread sends what is queued to it; the association thread sends C-STORE responses itself.
        self._send_lock = threading.Lock()

    def send(self, bytestream: bytes) -> None:
        """pynetdicom's send, one sender at a time."""
        with self._send_lock:
            super().send(bytestream)

    def send_now(self, pdu: bytes) -> bool:
        """Send an encoded PDU from the calling thread, if the transport allows it (plain TCP, connected, no
        watcher of sent data); return whether it was sent or the connection found closed."""
        sock = self.socket
        if sock is None or isinstance(sock, ssl.SSLSocket) or not self._is_connected:
            return False  # TLS: an SSL socket must not be written by one thread while another reads it
        if self.assoc.get_handlers(evt.EVT_DATA_SENT):
            return False
        with self._send_lock:
            try:
                sock.sendall(pdu)
            except OSError:
                self.event_queue.put("Evt17")  # the connection closed, as pynetdicom's send reports it
        return True

    def recv(self, nr_bytes: int) -> bytearray:
        """Read exactly ``nr_bytes`` (fewer only if the peer closes the connection), blocking as pynetdicom's."""
        sock = cast(socket.socket, self.socket)
        buffer = bytearray(nr_bytes)
        got = 0
        with memoryview(buffer) as view:
            while got < nr_bytes:
                read = sock.recv_into(view[got:], nr_bytes - got)
                if not read:
                    break
                got += read
        if got < nr_bytes:
            del buffer[got:]  # the connection was closed: what was read, as pynetdicom returns it
        return buffer


class DirectStoreRequest(C_STORE_RQ):
    """A C-STORE request whose command set :func:`.wire.store_request` decoded: its primitive is built directly."""

    request: wire.StoreRequest

    def message_to_primitive(self) -> C_STORE:  # type: ignore[override]
        """The C-STORE primitive, as pynetdicom's ``message_to_primitive`` builds it for this command set."""
        request = self.request
        primitive = C_STORE()
        primitive.MessageID = request.message_id
        # Already checked by wire.store_request: skip pydicom's validation of each UID again.
        primitive._affected_sop_class_uid = UID(request.sop_class_uid)
        primitive._affected_sop_instance_uid = UID(request.sop_instance_uid)
        primitive.Priority = request.priority
        primitive.DataSet = cast(Any, self.data_set)
        primitive._context_id = self.context_id
        primitive._dataset_path = self._data_set_path
        primitive._dataset_file = self._data_set_file
        return primitive


class DirectStoreMessage(DIMSEMessage):
    """A DIMSE message being received, whose command set is decoded directly when it is a plain C-STORE request.

    pynetdicom decodes every command set into a pydicom dataset and then copies each element into the
    primitive through setters that validate every UID again (about 0.7 ms per instance, a sixth of the
    listener's CPU). A plain C-STORE request whose command set comes whole in the first PDV of its P-DATA (what
    every sender tested does) is decoded by :func:`.wire.store_request`; anything else, and the data set, go
    through pynetdicom's ``decode_msg`` as before.
    """

    def __init__(self) -> None:  # pylint: disable=super-init-not-called
        # DIMSEMessage.__init__ looks its own class name up in a table that has only pynetdicom's: these are
        # the attributes it sets for a message not decoded yet.
        self.context_id: int | None = None
        self.encoded_command_set = BytesIO()
        self.data_set: BytesIO | None = BytesIO()
        self.command_set = Dataset()
        self._data_set_path: Path | tuple[Path, int] | None = None
        self._data_set_file = None

    def decode_msg(self, primitive: P_DATA, assoc: Association | None = None) -> bool:
        """Take the command set directly when it is plain; the rest as pynetdicom does."""
        values = primitive.presentation_data_value_list if isinstance(primitive, P_DATA) else []
        if not values or self.encoded_command_set.tell():
            return super().decode_msg(primitive, assoc)
        context_id, data = values[0]
        # Message control header 0x03: command, last fragment (PS3.8 E.2).
        request = wire.store_request(data[1:]) if data and data[0] & 3 == 3 else None
        if request is None:
            return super().decode_msg(primitive, assoc)
        self.encoded_command_set.write(data[1:])
        self.context_id = context_id
        self.__class__ = DirectStoreRequest  # type: ignore[assignment]
        cast(DirectStoreRequest, self).request = request
        if len(values) == 1:
            return False
        rest = P_DATA()
        rest.presentation_data_value_list = values[1:]
        return DIMSEMessage.decode_msg(self, rest, assoc)


class IncomingSink(Protocol):
    """Where a plain C-STORE data set is written as its fragments arrive, beside its assembly in memory (the
    archive's blob, see ``archive.IncomingBlob``). The handler finds it as the request's ``incoming``.

    A sink whose ``prefix`` attribute holds bytes (the File Meta Information it wrote before the data set) gets
    its request's data set as a :class:`ReceivedDataSet`, joined once with that prefix.
    """

    def write(self, piece: memoryview) -> None:
        """The next fragment of the data set."""

    def finish(self) -> None:
        """The data set is whole."""

    def discard(self) -> None:
        """The data set will not be delivered (the association broke off)."""


class ReceivedDataSet(BytesIO):
    """A received data set joined once with the bytes its sink wrote before it (``part10``: the File Meta
    Information, then the data set), so that a handler storing the Part-10 object copies nothing more.

    It reads as the data set alone, as pynetdicom's own ``BytesIO`` does; that copy is made only if something
    reads it.
    """

    def __init__(self, part10: bytes, start: int) -> None:
        super().__init__()
        #: The sink's prefix followed by the data set.
        self.part10 = part10
        #: Where the data set starts in :attr:`part10`.
        self.start = start
        self._filled = False

    def _fill(self) -> None:
        if not self._filled:
            self._filled = True
            super().write(memoryview(self.part10)[self.start :])
            super().seek(0)

    def getvalue(self) -> bytes:
        """The data set's bytes."""
        self._fill()
        return super().getvalue()

    def getbuffer(self) -> memoryview:
        """A view of the data set's bytes."""
        self._fill()
        return super().getbuffer()

    def read(self, size: int | None = -1) -> bytes:
        """Read from the data set."""
        self._fill()
        return super().read(size)

    def read1(self, size: int | None = -1) -> bytes:
        """Read from the data set."""
        self._fill()
        return super().read1(size)

    def readinto(self, buffer: Any) -> int:
        """Read from the data set into ``buffer``."""
        self._fill()
        return super().readinto(buffer)

    def readline(self, size: int | None = -1) -> bytes:
        """Read a line of the data set."""
        self._fill()
        return super().readline(size)

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move in the data set."""
        self._fill()
        return super().seek(offset, whence)

    def tell(self) -> int:
        """The position in the data set."""
        self._fill()
        return super().tell()


#: What the listener's server may offer as ``incoming_sinks``: a sink for a request and its transfer syntax.
SinkFactory = Callable[[wire.StoreRequest, str], IncomingSink | None]


@dataclass
class _BulkStore:
    """A plain C-STORE request being received: its context, decoded command set, and data set fragments."""

    context_id: int
    request: wire.StoreRequest
    fragments: list[memoryview] = field(default_factory=list)
    sink: IncomingSink | None = None

    def feed(self, piece: memoryview, last: bool) -> None:
        """Pass ``piece`` to the sink; a sink that fails is dropped (the handler then stores the whole data
        set itself, and meets the same failure with a status for the sender)."""
        sink = self.sink
        if sink is None:
            return
        try:
            sink.write(piece)
            if last:
                sink.finish()
        except Exception:
            _LOG.exception("event=dimse_incoming_sink_failed")
            self.drop_sink()

    def drop_sink(self) -> None:
        """Discard the sink, if any."""
        sink, self.sink = self.sink, None
        if sink is not None:
            with contextlib.suppress(Exception):
                sink.discard()


def _pdv_items(body: bytearray) -> list[tuple[int, int, memoryview]] | None:
    """The presentation data values of a P-DATA-TF PDU body: (context ID, message control header, fragment),
    or ``None`` when an item's length does not fit (pynetdicom then decodes, and refuses, the PDU)."""
    items = []
    view = memoryview(body)
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            return None
        (length,) = struct.unpack_from(">L", body, offset)
        if length < 2 or offset + 4 + length > end:
            return None
        items.append((body[offset + 4], body[offset + 5], view[offset + 6 : offset + 4 + length]))
        offset += 4 + length
    return items or None


class StoreResponseDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, which decodes plain C-STORE requests and encodes their responses itself.

    See :mod:`.wire`.
    """

    def receive_primitive(self, primitive: P_DATA) -> None:
        """pynetdicom's, but a new message starts as a :class:`DirectStoreMessage` when nothing else listens."""
        if self.message is None:
            if self._pynetdicom_decodes:
                self._pynetdicom_decodes = False
            elif self._direct_requests():
                self.message = DirectStoreMessage()
        super().receive_primitive(primitive)

    def _direct_requests(self) -> bool:
        # EVT_DIMSE_RECV gets the message with its decoded command set, which the direct path leaves empty;
        # pynetdicom writes a chunked data set's File Meta Information from that command set.
        if _config.STORE_RECV_CHUNKED_DATASET:
            return False
        # pynetdicom's own logging handler is one of them: it looks the message's class up in a table of its own
        # and reads the command set, so it must not be bound either (it is not when its logger drops INFO).
        if self.assoc.get_handlers(evt.EVT_DIMSE_RECV):
            return False
        return not _PYNETDICOM_LOG.isEnabledFor(logging.DEBUG)

    _bulk: _BulkStore | None = None
    #: The message starting in the PDU being passed to pynetdicom was looked at by receive_pdata already.
    _pynetdicom_decodes = False

    def receive_pdata(self, body: bytearray) -> bool:
        """Take the PDVs of one P-DATA-TF PDU (``body``: the PDU after its 6-byte header) into a plain C-STORE
        request being assembled; return False, having taken nothing, to leave the PDU to pynetdicom.

        A request starts with its command set whole in one PDV (what every sender tested does), decoded by
        :func:`.wire.store_request`; its data set fragments are kept as they arrive and joined once at the
        end, instead of being copied into a growing buffer fragment by fragment.
        """
        items = _pdv_items(body)
        if items is None:
            return False
        bulk = self._bulk
        if bulk is None:
            if self.message is not None or not self._direct_requests():
                return False  # pynetdicom is assembling a message, or something listens to its decoding
            context_id, control, data = items[0]
            request = wire.store_request(bytes(data)) if control & 3 == 3 else None
            if request is None:
                self._pynetdicom_decodes = True  # not plain: pynetdicom decodes it, without a second look
                return False
            bulk = self._bulk = _BulkStore(context_id, request, sink=self._sink(context_id, request))
            items = items[1:]
        for context_id, control, data in items:
            if control & 1 or context_id != bulk.context_id:
                # A command fragment, or another context, inside a data set: the peer broke PS3.8 9.3.1.
                _LOG.error("event=dimse_pdv_out_of_order context=%d control=0x%02X", context_id, control)
                bulk.drop_sink()
                self._bulk = None
                self.dul.event_queue.put("Evt19")
                return True
            bulk.fragments.append(data)  # a view of the PDU's buffer: copied once, by the join
            bulk.feed(data, last=bool(control & 2))
            if control & 2:
                self._bulk = None
                self._deliver(bulk)
                return True
        return True

    def _sink(self, context_id: int, request: wire.StoreRequest) -> IncomingSink | None:
        factory = cast(SinkFactory | None, getattr(self.assoc._server, "incoming_sinks", None))
        context = self.assoc._accepted_cx.get(context_id)
        if factory is None or context is None or context.transfer_syntax is None:
            return None  # no sink offered, or a context not accepted: the handler refuses the request
        try:
            return factory(request, str(context.transfer_syntax[0]))
        except Exception:
            _LOG.exception("event=dimse_incoming_sink_failed")
            return None

    def abandon(self) -> None:
        """The association ended: drop a data set still being assembled, with its sink."""
        bulk, self._bulk = self._bulk, None
        if bulk is not None:
            bulk.drop_sink()

    def _deliver(self, bulk: _BulkStore) -> None:
        message = DirectStoreMessage()
        message.context_id = bulk.context_id
        prefix = getattr(bulk.sink, "prefix", None)
        if isinstance(prefix, bytes) and prefix:
            message.data_set = ReceivedDataSet(b"".join([prefix, *bulk.fragments]), len(prefix))
        else:
            message.data_set = BytesIO(b"".join(bulk.fragments))  # BytesIO shares these bytes until written
        message.__class__ = DirectStoreRequest  # type: ignore[assignment]
        cast(DirectStoreRequest, message).request = bulk.request
        primitive = cast(DirectStoreRequest, message).message_to_primitive()
        primitive.incoming = bulk.sink  # type: ignore[attr-defined]
        primitive.direct = True  # type: ignore[attr-defined]
        self.msg_queue.put((bulk.context_id, primitive))

    def send_msg(self, primitive: Any, context_id: int) -> None:
        """Send a DIMSE message; a C-STORE response with only a status takes the short path."""
        sent = self._short_path(primitive) and self.send_store_status(
            context_id,
            primitive.MessageIDBeingRespondedTo,
            primitive.AffectedSOPClassUID,
            primitive.AffectedSOPInstanceUID,
            primitive.Status,
        )
        if not sent:
            super().send_msg(primitive, context_id)

    def send_store_status(
        self, context_id: int, message_id: int, sop_class_uid: str, sop_instance_uid: str, status: int
    ) -> bool:
        """Send a C-STORE response that carries only ``status``, encoded directly; return False, having sent
        nothing, when it must go as pynetdicom's primitive (something watches sent messages, or the peer's
        largest PDU is too small for it)."""
        if not self._quiet_sending():
            return False
        command = wire.c_store_response(message_id, sop_class_uid, sop_instance_uid, status)
        limit = self.maximum_pdu_size
        if limit and len(command) + 6 > limit:
            return False
        if self._send_now(wire.command_pdu(context_id, command)):
            return True
        pdata = P_DATA()
        # Message control header 0x03: command, last fragment (PS3.8 E.2).
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
        self.dul.send_pdu(pdata)
        return True

    def _send_now(self, pdu: bytes) -> bool:
        """Send a response PDU from the association thread instead of queueing it for the DUL thread (whose
        wake-up, PDU objects and state machine cost 0.2-0.5 ms per response). Only in Sta6, where sending a
        P-DATA-TF is action DT-1 and changes nothing, and only with nothing queued for the DUL thread to send
        before it. A peer waits for each response (no asynchronous operations window is negotiated), so the
        DUL thread has nothing of this association's in flight meanwhile; what it sends shares the lock."""
        dul = self.dul
        if dul.state_machine.current_state != "Sta6" or not dul.to_provider_queue.empty():
            return False
        if self.assoc.get_handlers(evt.EVT_PDU_SENT):
            return False
        transport = dul.socket
        return isinstance(transport, BulkReceiveSocket) and transport.send_now(pdu)

    def _short_path(self, primitive: Any) -> bool:
        if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
            return False
        if primitive.Status is None or primitive.AffectedSOPClassUID is None:
            return False
        if primitive.AffectedSOPInstanceUID is None:
            return False
        return primitive.ErrorComment is None and primitive.OffendingElement is None

    def _quiet_sending(self) -> bool:
        # EVT_DIMSE_SENT gets the encoded message object: only pynetdicom's own debug log listens by default.
        watchers = cast(list[tuple[Any, Any]], self.assoc.get_handlers(evt.EVT_DIMSE_SENT))
        if any(handler is not standard_dimse_sent_handler for handler, _ in watchers):
            return False
        return not _PYNETDICOM_LOG.isEnabledFor(logging.DEBUG)


class EventDrivenAssociation(Association):
    """An acceptor association whose thread waits for messages instead of sleeping between looks."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._wakeup = threading.Event()
        self.dul = EventDrivenDUL(self, self._wakeup.set)
        # The timeout setters pass their values on to the DUL's timers: pass them to this DUL too.
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        self.dimse = StoreResponseDIMSE(self)
        if not _PYNETDICOM_LOG.isEnabledFor(logging.INFO):
            # pynetdicom's logging handlers describe every PDU and message, under the AE-wide lock, for a
            # logger that would drop the lines anyway.
            for event, handler in _LOGGING_HANDLERS:
                self.unbind(event, handler)
        self.dimse.msg_queue = SignallingQueue(self._wakeup.set)  # type: ignore[assignment]

    def _idle(self) -> bool:
        return self.dimse.msg_queue.empty() and self.dul.to_user_queue.empty()

    def run(self) -> None:
        """Run the association; its server learns when it is over, however it ends."""
        try:
            super().run()
        finally:
            server = getattr(self, "_server", None)
            if isinstance(server, ListenerServer):
                server.association_ended()

    def _serve_request(self, msg: Any, context_id: int) -> None:
        if not self._serve_store(msg, context_id):
            super()._serve_request(msg, context_id)

    def _serve_store(self, msg: Any, context_id: int) -> bool:
        """Serve a plain C-STORE request that came the direct way (:meth:`StoreResponseDIMSE.receive_pdata`):
        what pynetdicom's ``_serve_request`` and ``StorageServiceClass.SCP`` do with it, without looking the
        service class up again or building a response primitive for a status alone (about 0.1 ms of the GIL
        per instance). Return False, having done nothing, to leave the request to pynetdicom."""
        if not getattr(msg, "direct", False) or self._sent_release:
            return False
        context = self._accepted_cx.get(context_id)
        class_uid = str(msg.AffectedSOPClassUID)
        if context is None or _config.UNRESTRICTED_STORAGE_SERVICE:
            return False
        if class_uid in self.acceptor.accepted_common_extended or not _is_storage(class_uid):
            return False
        self.dimse.cancel_req = {}
        self._is_paused = True
        # As pynetdicom's attempt(): a handler that aborts must not wait for this thread.
        self.abort = self._abort_nonblocking  # type: ignore[method-assign]
        try:
            status = evt.trigger(self, evt.EVT_C_STORE, {"request": msg, "context": context.as_tuple})
        except Exception:
            _LOG.exception("event=dimse_store_handler_failed")
            status = 0xC211  # what pynetdicom answers when the handler raises
        finally:
            self.abort = self._abort_blocking  # type: ignore[method-assign]
        if self.is_established:
            try:
                self._respond(msg, context_id, status)
            except Exception:
                _LOG.exception("event=dimse_store_response_failed")  # as pynetdicom's _serve_request: abort
                self.abort()
        self._is_paused = False
        self.dimse.cancel_req = {}
        return True

    def _respond(self, request: C_STORE, context_id: int, status: Any) -> None:
        sop_class, sop_instance = str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID)
        message_id = cast(int, request.MessageID)
        if isinstance(status, int) and not isinstance(status, bool):
            dimse = cast(StoreResponseDIMSE, self.dimse)
            if dimse.send_store_status(context_id, message_id, sop_class, sop_instance, status):
                return
        rsp = C_STORE()
        rsp.MessageID = message_id
        rsp.MessageIDBeingRespondedTo = message_id
        rsp.AffectedSOPInstanceUID = sop_instance
        rsp.AffectedSOPClassUID = sop_class
        rsp = StorageServiceClass(self).validate_status(status, rsp)
        self.dimse.send_msg(rsp, context_id)

    def kill(self) -> None:
        """Stop the association thread and its DUL thread."""
        self._wakeup.set()
        super().kill()

    def _run_reactor(self) -> None:
        # pynetdicom's acceptor loop, with its 1 ms sleep replaced by a wait on the queues' event. Clearing the
        # event before looking at the queues means a put that lands after the look still wakes the wait.
        self._is_paused = False
        while not self._kill:
            self._wakeup.clear()
            if self._idle():
                self._wakeup.wait(TICK)

            # A thread using one of the send_*() methods pauses the reactor so that it does not take that
            # thread's response off the queue.
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False

            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, cast(int, context_id))

            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires for the abort
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            if not self.dul.is_alive():
                self.kill()
                return

            if self.dul.idle_timer_expired():
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class EventDrivenRequestHandler(RequestHandler):
    """pynetdicom's request handler, building an :class:`EventDrivenAssociation` for each connection."""

    def handle(self) -> None:
        """Start the connection's association (the server learns at once if it could not)."""
        try:
            super().handle()
        except BaseException:
            cast(ListenerServer, self.server).association_ended()  # no association thread will tell it
            raise

    def _create_association(self) -> Association:
        # What pynetdicom 3.0's RequestHandler does, with our association class.
        assoc = EventDrivenAssociation(self.ae, MODE_ACCEPTOR)
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(BulkReceiveSocket(assoc, client_socket=self.request))
        acceptor = assoc.acceptor
        acceptor.maximum_length = self.ae.maximum_pdu_size
        acceptor.ae_title = self.server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        # pynetdicom deep-copies the ~130 storage contexts (20 transfer syntaxes each, every UID validated
        # again) for each association: tens of ms of CPU per association. Negotiation only reads them
        # (negotiate_as_acceptor builds new result contexts), so the association gets the list, not copies.
        acceptor.supported_contexts = list(self.server.contexts)
        assoc.requestor.address_info = self.remote
        # The server binds pynetdicom's standard logging handlers too; the association has unbound them when
        # the logger would drop their lines, and they are not bound again here.
        quiet = not _PYNETDICOM_LOG.isEnabledFor(logging.INFO)
        logging_handlers = set(_LOGGING_HANDLERS)
        for event, bound in self.server._handlers.items():
            if event.is_intervention and bound:
                assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in cast(list[tuple[Any, Any]], bound):
                    if quiet and (event, handler) in logging_handlers:
                        continue
                    assoc.bind(event, handler, args)
        return assoc


@functools.cache
def _is_storage(sop_class_uid: str) -> bool:
    """Whether pynetdicom serves ``sop_class_uid`` with its Storage Service Class."""
    return uid_to_service_class(sop_class_uid) is StorageServiceClass


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or type(exc).__name__


class ListenerServer(ThreadedAssociationServer):
    """The threaded association server of the DICOM listener."""

    #: Share the port with other processes (SO_REUSEPORT); the kernel spreads new connections over them.
    reuse_port = False
    #: Where plain C-STORE data sets are written as they arrive (see :class:`IncomingSink`), if anywhere.
    incoming_sinks: SinkFactory | None = None

    def server_bind(self) -> None:
        """Bind (after setting SO_REUSEPORT when asked)."""
        if self.reuse_port:
            cast(socket.socket, self.socket).setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a connection; with TLS, wrap it without its handshake, which :meth:`finish_request` does.

        pynetdicom handshakes here, in the accepting thread, so one peer that connects and sends nothing would
        hold every other connection waiting; here it holds only its own thread, until the ACSE timeout.
        """
        client, address = cast(socket.socket, self.socket).accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address

    def association_ended(self) -> None:
        """An association that this server accepted is over (or could not start)."""

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Complete the TLS handshake (in this connection's thread), then serve the association."""
        if isinstance(request, ssl.SSLSocket):
            request.settimeout(self.ae.acse_timeout)
            try:
                request.do_handshake()
            except (OSError, ValueError) as exc:
                # A plain DICOM peer or a wrong or missing client certificate: refused, logged. A load balancer's
                # or an orchestrator's TCP check closes before saying anything: logged only when debugging.
                silent = isinstance(exc, ssl.SSLEOFError | ConnectionResetError)
                _LOG.log(
                    logging.DEBUG if silent else logging.INFO,
                    "event=dicom_tls_refused peer=%s reason=%r",
                    client_address[0],
                    _reason(exc),
                )
                self.association_ended()
                return
            request.settimeout(None)
        super().finish_request(request, client_address)


class SharedPortListenerServer(ListenerServer):
    """A :class:`ListenerServer` that shares its port with the listeners of other processes."""

    reuse_port = True


class GroupListenerServer(ListenerServer):
    """A :class:`ListenerServer` of a listener group (:mod:`balance`): one listening socket served by several
    processes, each accepting a waiting connection only when its turn comes (the least busy).

    :func:`serve` makes a subclass with ``group`` set, since the socket is bound while the server is built.
    The listening socket does not block: another process may have taken a waiting connection first.
    """

    group: ListenerGroup

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._declined = False
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        """Bind the group's socket (its first process), or take the one inherited."""
        fd = self.group.listen_fd
        if fd is None:
            super().server_bind()
        else:
            cast(socket.socket, self.socket).close()
            self.socket = socket.socket(fileno=fd)
            self.server_address = self.socket.getsockname()
        cast(socket.socket, self.socket).setblocking(False)

    def server_activate(self) -> None:
        """Listen, unless the socket came listening already."""
        if self.group.listen_fd is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        """Accept a waiting connection if it is this process's turn (``BlockingIOError`` if not, or if another
        process took it first), counting it on the board."""
        board = self.group.board
        if not board.take_turn():
            self._declined = True
            raise BlockingIOError("another listener process of the group serves fewer associations")
        client, address = super().get_request()
        board.add(1)
        return client, address

    def process_request(self, request: Any, client_address: Any) -> None:
        """Start the connection's thread (and count the connection off if it cannot start)."""
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.association_ended()
            raise

    def association_ended(self) -> None:
        """Count the association off the board."""
        self.group.board.add(-1)

    def service_actions(self) -> None:
        """pynetdicom's periodic collection, counted in turns of the accept loop: not in those that declined,
        which come every millisecond while a connection waits for another process."""
        if self._declined:
            self._declined = False
            return
        super().service_actions()

    def server_close(self) -> None:
        """Close this process's descriptor of the socket, which the group's other processes keep serving (a
        ``shutdown`` would stop it for all of them), and leave the board."""
        cast(socket.socket, self.socket).close()
        self.group.board.leave()


def serve(
    ae: AE,
    address: tuple[str, int],
    handlers: list[Any],
    *,
    reuse_port: bool = False,
    group: ListenerGroup | None = None,
    ssl_context: ssl.SSLContext | None = None,
    incoming_sinks: SinkFactory | None = None,
) -> ListenerServer:
    """Start serving ``ae`` on ``address`` with event-driven associations, in a background thread.

    What ``AE.start_server(block=False)`` does, with :class:`ListenerServer` and
    :class:`EventDrivenRequestHandler`. Stop it with ``server.shutdown()``. With ``ssl_context`` every
    connection is wrapped in TLS before its association starts; a peer that does not speak TLS is dropped.
    With ``incoming_sinks``, each plain C-STORE data set is also written to a sink as it arrives. With
    ``group``, this process serves the group's one socket by turns with its other processes (:mod:`balance`).
    """
    server_class: type[ListenerServer] = SharedPortListenerServer if reuse_port else ListenerServer
    if group is not None:
        server_class = type("GroupListenerServer", (GroupListenerServer,), {"group": group})
    server = cast(
        ListenerServer,
        ae.make_server(
            address,
            evt_handlers=handlers,
            ssl_context=ssl_context,
            server_class=server_class,
            request_handler=EventDrivenRequestHandler,
        ),
    )
    server.incoming_sinks = incoming_sinks
    # AssociationServer.shutdown() removes itself from this list, where start_server() registers it.
    ae._servers.append(server)
    threading.Thread(target=server.serve_forever, name=f"dicom-listener-{address[1]}", daemon=True).start()
    return server
