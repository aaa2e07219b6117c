"""The event-driven association reactors (archipel.radiology.dimse.reactor) against real pynetdicom peers.

They replace pynetdicom's polling loops, so these tests pin down what those loops did: answer requests, notice
a release, a peer abort, a dropped connection and the idle timeout, serve several associations at once, and let
several processes share one port.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from archipel.radiology.dimse import wire
from archipel.radiology.dimse.balance import TURN_WAIT, ListenerGroup, LoadBoard
from archipel.radiology.dimse.reactor import ListenerServer, ReceivedDataSet, serve
from tests.support import free_port, wait_until

VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"


class Recorder:
    """What the server saw: stored SOP Instance UIDs and how associations ended."""

    def __init__(self) -> None:
        self.stored: list[str] = []
        self.ended: list[str] = []
        self.lock = threading.Lock()

    def on_store(self, event: evt.Event) -> int:
        with self.lock:
            self.stored.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def on_end(self, event: evt.Event) -> None:
        with self.lock:
            self.ended.append(event.event.name)


def scp_ae(network_timeout: float = 60) -> AE:
    ae = AE(ae_title="REACTOR")
    ae.network_timeout = network_timeout
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(CT_IMAGE, [ExplicitVRLittleEndian])
    return ae


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def start(ae: AE, recorder: Recorder, port: int | None = None, reuse_port: bool = False) -> ListenerServer:
    handlers = [
        (evt.EVT_C_STORE, recorder.on_store),
        (evt.EVT_RELEASED, recorder.on_end),
        (evt.EVT_ABORTED, recorder.on_end),
    ]
    return serve(ae, ("127.0.0.1", port or free_port()), handlers, reuse_port=reuse_port)


@pytest.fixture
def server(recorder: Recorder) -> Iterator[ListenerServer]:
    srv = start(scp_ae(), recorder)
    yield srv
    srv.shutdown()


def connect(port: int) -> object:
    ae = AE(ae_title="REACTORSCU")
    ae.add_requested_context(VERIFICATION)
    ae.add_requested_context(CT_IMAGE, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="REACTOR")
    assert assoc.is_established
    return assoc


def ct_instance() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "REACTOR1"
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_sequential_requests_on_one_association_are_all_answered(
    server: ListenerServer, recorder: Recorder
) -> None:
    assoc = connect(server.server_address[1])
    sent = [ct_instance() for _ in range(30)]
    statuses = [assoc.send_c_store(ds).Status for ds in sent]  # type: ignore[attr-defined]
    echo = assoc.send_c_echo().Status  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
    assert statuses == [0] * 30 and echo == 0
    assert recorder.stored == [ds.SOPInstanceUID for ds in sent]
    wait_until(lambda: recorder.ended == ["EVT_RELEASED"], 5, "the release to reach the server")


def test_a_release_is_answered_without_waiting_for_a_timer_tick(server: ListenerServer) -> None:
    assoc = connect(server.server_address[1])
    started = time.monotonic()
    assoc.release()  # type: ignore[attr-defined]
    # The association thread wakes on the release request itself; its timer tick is 50 ms.
    assert time.monotonic() - started < 2
    assert assoc.is_released  # type: ignore[attr-defined]


def test_a_peer_abort_ends_the_association_on_the_server(server: ListenerServer, recorder: Recorder) -> None:
    assoc = connect(server.server_address[1])
    assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]
    assoc.abort()  # type: ignore[attr-defined]
    wait_until(lambda: recorder.ended == ["EVT_ABORTED"], 5, "the abort to reach the server")
    wait_until(lambda: not server.active_associations, 5, "the server's association thread to end")


def test_a_dropped_connection_ends_the_association_on_the_server(server: ListenerServer) -> None:
    assoc = connect(server.server_address[1])
    assoc.dul.socket.socket.close()  # type: ignore[attr-defined]
    wait_until(lambda: not server.active_associations, 5, "the server to notice the closed connection")


def test_an_idle_association_is_aborted_after_the_network_timeout(recorder: Recorder) -> None:
    srv = start(scp_ae(network_timeout=0.5), recorder)
    try:
        assoc = connect(srv.server_address[1])
        wait_until(lambda: recorder.ended == ["EVT_ABORTED"], 10, "the idle timeout")
        wait_until(lambda: not assoc.is_established, 5, "the requestor to see the abort")  # type: ignore[attr-defined]
    finally:
        srv.shutdown()


def test_several_associations_are_served_at_once(server: ListenerServer, recorder: Recorder) -> None:
    port = server.server_address[1]
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            assoc = connect(port)
            for _ in range(10):
                assert assoc.send_c_store(ct_instance()).Status == 0  # type: ignore[attr-defined]
            assoc.release()  # type: ignore[attr-defined]
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(recorder.stored) == 40


def test_two_listeners_share_one_port_when_asked(recorder: Recorder) -> None:
    port = free_port()
    first = start(scp_ae(), recorder, port, reuse_port=True)
    second = start(scp_ae(), recorder, port, reuse_port=True)
    try:
        for _ in range(4):
            assoc = connect(port)
            assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]
            assoc.release()  # type: ignore[attr-defined]
    finally:
        first.shutdown()
        second.shutdown()


def test_a_port_is_not_shared_unless_asked(server: ListenerServer, recorder: Recorder) -> None:
    with pytest.raises(OSError):
        start(scp_ae(), recorder, server.server_address[1], reuse_port=True)
    probe = socket.create_connection(("127.0.0.1", server.server_address[1]), 2)
    probe.close()


def test_associations_share_the_servers_contexts_without_changing_them(recorder: Recorder) -> None:
    ae = AE(ae_title="REACTOR")
    ae.add_supported_context(CT_IMAGE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    srv = start(ae, recorder)
    before = [(cx.abstract_syntax, list(cx.transfer_syntax), cx.context_id) for cx in srv.contexts]
    try:
        for syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
            scu = AE(ae_title="REACTORSCU")
            scu.add_requested_context(CT_IMAGE, syntax)
            assoc = scu.associate("127.0.0.1", srv.server_address[1], ae_title="REACTOR")
            assert [cx.transfer_syntax[0] for cx in assoc.accepted_contexts] == [syntax]
            assoc.release()
    finally:
        srv.shutdown()
    assert [(cx.abstract_syntax, list(cx.transfer_syntax), cx.context_id) for cx in srv.contexts] == before


def test_c_store_requests_are_decoded_directly_unless_they_carry_more(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[object] = []

    def spy(command: bytes) -> object:
        request = original(command)
        decoded.append(request)
        return request

    original = wire.store_request
    monkeypatch.setattr(wire, "store_request", spy)
    srv = start(scp_ae(), recorder)
    try:
        assoc = connect(srv.server_address[1])
        plain, moved = ct_instance(), ct_instance()
        assert assoc.send_c_store(plain).Status == 0  # type: ignore[attr-defined]
        # A C-STORE sent on behalf of a C-MOVE names its originator: pynetdicom decodes that one.
        assert assoc.send_c_store(moved, originator_aet="MOVER", originator_id=9).Status == 0  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
    assert recorder.stored == [plain.SOPInstanceUID, moved.SOPInstanceUID]
    assert [type(r).__name__ for r in decoded] == ["StoreRequest", "NoneType"]
    assert isinstance(decoded[0], wire.StoreRequest) and decoded[0].sop_instance_uid == plain.SOPInstanceUID


@pytest.mark.parametrize("level", [logging.WARNING, logging.INFO])
def test_plain_stores_take_the_direct_path_only_when_no_logging_handler_reads_them(
    recorder: Recorder, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, level: int
) -> None:
    """At WARNING (how ``archipel`` runs pynetdicom) its logging handlers are not bound to an association, so a
    plain C-STORE request is decoded directly; at INFO they are bound and read the decoded command set, so
    pynetdicom decodes it. Either way no handler fails (one did, with a KeyError logged per instance)."""
    decoded: list[int] = []
    direct = wire.store_request

    def counting(data: bytes) -> object:
        decoded.append(1)
        return direct(data)

    monkeypatch.setattr(wire, "store_request", counting)
    caplog.set_level(logging.ERROR, logger="pynetdicom.events")
    pynetdicom_log = logging.getLogger("pynetdicom")
    before = pynetdicom_log.level
    pynetdicom_log.setLevel(level)  # setLevel, not the attribute: isEnabledFor caches its answers
    srv = start(scp_ae(), recorder)
    try:
        assoc = connect(srv.server_address[1])
        statuses = [assoc.send_c_store(ct_instance()).Status for _ in range(3)]  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
        pynetdicom_log.setLevel(before)
    assert statuses == [0, 0, 0] and len(recorder.stored) == 3
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert len(decoded) == (3 if level == logging.WARNING else 0)


class DataRecorder(Recorder):
    """Also keeps each received data set's bytes."""

    def __init__(self) -> None:
        super().__init__()
        self.data: list[bytes] = []

    def on_store(self, event: evt.Event) -> int:
        self.data.append(event.request.DataSet.getvalue())  # type: ignore[union-attr]
        return super().on_store(event)


def encoded(ds: Dataset) -> bytes:
    """``ds`` as pynetdicom sends it on an Explicit VR Little Endian context."""
    from pynetdicom.dsutils import encode

    data = encode(ds, False, True)
    assert data is not None
    return data


def test_a_data_set_spread_over_many_pdus_arrives_byte_for_byte() -> None:
    """A data set several times the largest PDU (pynetdicom sends PDUs of at most 16 KiB to this acceptor)."""
    recorder = DataRecorder()
    srv = start(scp_ae(), recorder)
    try:
        assoc = connect(srv.server_address[1])
        ds = ct_instance()
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 128, 128, 16, 16, 15
        ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
        ds.PixelData = bytes(range(256)) * 128  # 32 KiB, three PDUs and more
        assert assoc.send_c_store(ds).Status == 0  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
    assert recorder.data == [encoded(ds)]


def store_command(message_id: int, sop_instance: str) -> bytes:
    """A plain C-STORE-RQ command set, Implicit VR Little Endian (PS3.7 9.3.1.1)."""
    import struct

    def element(tag: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0, tag, len(value)) + value

    def uid(text: str) -> bytes:
        raw = text.encode()
        return raw + b"\0" * (len(raw) % 2)

    body = (
        element(0x0002, uid(CT_IMAGE))
        + element(0x0100, struct.pack("<H", 0x0001))
        + element(0x0110, struct.pack("<H", message_id))
        + element(0x0700, struct.pack("<H", 0))
        + element(0x0800, struct.pack("<H", 0x0000))
        + element(0x1000, uid(sop_instance))
    )
    return element(0x0000, struct.pack("<I", len(body))) + body


def pdata(*values: tuple[int, int, bytes]) -> bytes:
    """A P-DATA-TF PDU of (context ID, message control header, fragment) values."""
    import struct

    items = b"".join(struct.pack(">LBB", len(f) + 2, ctx, control) + f for ctx, control, f in values)
    return struct.pack(">BBL", 0x04, 0, len(items)) + items


def test_a_command_and_its_data_set_in_one_pdu_are_one_request_and_a_stray_command_aborts() -> None:
    recorder = DataRecorder()
    srv = start(scp_ae(), recorder)
    try:
        assoc = connect(srv.server_address[1])
        [ctx] = [c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == CT_IMAGE]  # type: ignore[attr-defined]
        ds = ct_instance()
        data = encoded(ds)
        half = len(data) // 2
        # Command (0x03: command, last) and the data set in two fragments (0x00, then 0x02: last), one PDU.
        raw = pdata(
            (ctx, 0x03, store_command(7, ds.SOPInstanceUID)),
            (ctx, 0x00, data[:half]),
            (ctx, 0x02, data[half:]),
        )
        # As pynetdicom's own send_c_store does: pause the requestor's reactor so the response waits for us.
        assoc._reactor_checkpoint.clear()  # type: ignore[attr-defined]
        wait_until(lambda: assoc._is_paused, 5, "the requestor's reactor to pause")  # type: ignore[attr-defined]
        assoc.dul.socket.send(raw)  # type: ignore[attr-defined]
        _ctx, response = assoc.dimse.get_msg(block=True)  # type: ignore[attr-defined]
        assoc._reactor_checkpoint.set()  # type: ignore[attr-defined]
        assert (response.MessageIDBeingRespondedTo, response.Status) == (7, 0)
        assert recorder.data == [data]
        # A command fragment in the middle of a data set breaks PS3.8 9.3.1: the association is aborted.
        other = ct_instance()
        stray = pdata(
            (ctx, 0x03, store_command(8, other.SOPInstanceUID)), (ctx, 0x00, b"\0" * 8), (ctx, 0x03, b"x")
        )
        assoc.dul.socket.send(stray)  # type: ignore[attr-defined]
        wait_until(lambda: not assoc.is_established, 10, "the abort")  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
    assert recorder.stored == [ds.SOPInstanceUID]


class Sink:
    """An incoming sink (reactor.IncomingSink) that keeps what it is given."""

    prefix = b""

    def __init__(self, request: wire.StoreRequest, transfer_syntax: str) -> None:
        self.request, self.transfer_syntax = request, transfer_syntax
        self.pieces: list[bytes] = []
        self.finished = self.discarded = False

    def write(self, piece: memoryview) -> None:
        self.pieces.append(bytes(piece))

    def finish(self) -> None:
        self.finished = True

    def discard(self) -> None:
        self.discarded = True


class SinkRecorder(DataRecorder):
    """Offers a :class:`Sink` for every plain C-STORE, and notes which one each handled request carries."""

    def __init__(self) -> None:
        super().__init__()
        self.sinks: list[Sink] = []
        self.handed: list[object] = []

    prefix = b""

    def sink(self, request: wire.StoreRequest, transfer_syntax: str) -> Sink:
        made = Sink(request, transfer_syntax)
        made.prefix = self.prefix
        self.sinks.append(made)
        return made

    def on_store(self, event: evt.Event) -> int:
        self.handed.append(getattr(event.request, "incoming", None))
        self.part10 = getattr(event.request.DataSet, "part10", None)
        return super().on_store(event)


def start_with_sinks(recorder: SinkRecorder) -> ListenerServer:
    handlers = [(evt.EVT_C_STORE, recorder.on_store), (evt.EVT_ABORTED, recorder.on_end)]
    return serve(scp_ae(), ("127.0.0.1", free_port()), handlers, incoming_sinks=recorder.sink)


@pytest.mark.parametrize("prefix", [b"", b"META" * 33], ids=["no-prefix", "prefix"])
def test_a_sink_is_given_the_data_set_piece_by_piece_as_it_arrives_and_the_handler_gets_it(
    prefix: bytes,
) -> None:
    recorder = SinkRecorder()
    recorder.prefix = prefix
    srv = start_with_sinks(recorder)
    try:
        assoc = connect(srv.server_address[1])
        ds = ct_instance()
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 128, 128, 16, 16, 15
        ds.SamplesPerPixel, ds.PixelRepresentation, ds.PhotometricInterpretation = 1, 0, "MONOCHROME2"
        ds.PixelData = bytes(range(256)) * 128  # several PDUs
        # The response is sent by the association thread itself (StoreResponseDIMSE._send_now).
        assert assoc.send_c_store(ds).Status == 0  # type: ignore[attr-defined]
        assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
    [sink] = recorder.sinks
    assert len(sink.pieces) > 1 and b"".join(sink.pieces) == encoded(ds) == recorder.data[0]
    assert sink.finished and not sink.discarded
    assert (sink.request.sop_instance_uid, sink.transfer_syntax) == (
        ds.SOPInstanceUID,
        ExplicitVRLittleEndian,
    )
    assert recorder.handed == [sink]
    # With a prefix, the data set is joined with it once (reactor.ReceivedDataSet) and still reads as itself.
    assert recorder.part10 == (prefix + encoded(ds) if prefix else None)


def test_a_received_data_set_reads_as_the_data_set_alone() -> None:
    from pydicom import dcmread

    ds = ct_instance()
    data = encoded(ds)
    received = ReceivedDataSet(b"PREFIX" + data, 6)
    assert received.part10[received.start :] == data
    assert received.read(4) == data[:4] and received.tell() == 4
    received.seek(0)
    assert received.getvalue() == data and bytes(received.getbuffer()) == data
    received.seek(0)
    assert dcmread(received, force=True).SOPInstanceUID == ds.SOPInstanceUID


@pytest.mark.parametrize("ending", ["abort", "stray command"])
def test_a_data_set_cut_off_discards_its_sink_and_reaches_no_handler(ending: str) -> None:
    recorder = SinkRecorder()
    srv = start_with_sinks(recorder)
    try:
        assoc = connect(srv.server_address[1])
        [ctx] = [c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == CT_IMAGE]  # type: ignore[attr-defined]
        ds = ct_instance()
        data = encoded(ds)
        # The command and the first half of the data set; the last fragment never comes.
        sock = assoc.dul.socket  # type: ignore[attr-defined]
        sock.send(
            pdata((ctx, 0x03, store_command(3, ds.SOPInstanceUID)), (ctx, 0x00, data[: len(data) // 2]))
        )
        wait_until(lambda: recorder.sinks and recorder.sinks[0].pieces, 10, "the first piece")
        if ending == "abort":
            assoc.abort()  # type: ignore[attr-defined]
        else:
            sock.send(pdata((ctx, 0x03, b"x")))
        wait_until(lambda: recorder.sinks[0].discarded, 10, "the sink to be discarded")
        wait_until(lambda: not assoc.is_established, 10, "the association to end")  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
    assert not recorder.sinks[0].finished
    assert recorder.stored == [] and recorder.handed == []


class Awkward(SinkRecorder):
    """A C-STORE handler that answers with a status data set, then raises, then answers plainly."""

    def on_store(self, event: evt.Event) -> object:
        self.handed.append(getattr(event.request, "incoming", None))
        calls = len(self.handed)
        if calls == 1:
            status = Dataset()
            status.Status = 0xA700
            status.ErrorComment = "disk full, for a test"
            return status
        if calls == 2:
            raise RuntimeError("a handler's bug")
        return 0x0000


def test_direct_c_store_dispatch_keeps_status_data_sets_handler_failures_and_the_association(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Plain C-STOREs go straight to the handler (EventDrivenAssociation._serve_store); what pynetdicom's
    Storage SCP does with a status data set, or with a handler that raises (0xC211), is kept."""
    from pynetdicom.service_class import StorageServiceClass

    def not_here(*args: object) -> None:
        raise AssertionError("pynetdicom's Storage SCP was used")

    monkeypatch.setattr(StorageServiceClass, "SCP", not_here)
    recorder = Awkward()
    srv = serve(
        scp_ae(),
        ("127.0.0.1", free_port()),
        [(evt.EVT_C_STORE, recorder.on_store)],
        incoming_sinks=recorder.sink,
    )
    try:
        assoc = connect(srv.server_address[1])
        first = assoc.send_c_store(ct_instance())  # type: ignore[attr-defined]
        assert (first.Status, first.ErrorComment) == (0xA700, "disk full, for a test")
        assert assoc.send_c_store(ct_instance()).Status == 0xC211  # type: ignore[attr-defined]
        assert assoc.send_c_store(ct_instance()).Status == 0x0000  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
    finally:
        srv.shutdown()
    assert len(recorder.handed) == 3 and all(h is not None for h in recorder.handed)


def start_group(recorder: Recorder, processes: int = 2) -> list[ListenerServer]:
    """A listener group's servers in this process: the first binds, the others serve a copy of its socket."""
    handlers = [(evt.EVT_C_STORE, recorder.on_store), (evt.EVT_RELEASED, recorder.on_end)]
    first_group = ListenerGroup.create(processes)
    first = serve(scp_ae(), ("127.0.0.1", free_port()), handlers, group=first_group)
    servers = [first]
    for slot in range(1, processes):
        spec = first_group.board.spec(slot, os.dup(first.socket.fileno()))
        servers.append(serve(scp_ae(), ("127.0.0.1", 0), handlers, group=ListenerGroup.parse(spec)))
    return servers


def serving(servers: list[ListenerServer]) -> list[int]:
    return [len(srv.active_associations) for srv in servers]


def test_a_listener_group_gives_each_new_association_to_its_least_busy_server(recorder: Recorder) -> None:
    servers = start_group(recorder)
    port = servers[0].server_address[1]
    held: list[object] = []
    try:
        for opened in range(1, 5):
            held.append(connect(port))
            wait_until(lambda n=opened: sum(serving(servers)) == n, 5, "the association's thread")
            # The association opened after an even number lands where it makes the two level again.
            assert max(serving(servers)) - min(serving(servers)) <= 1
        assert serving(servers) == [2, 2]
        assert [srv.group.board.serving() for srv in servers] == [2, 2]  # type: ignore[attr-defined]
        for assoc in held[:2]:
            assoc.release()  # type: ignore[attr-defined]
        wait_until(lambda: sum(srv.group.board.serving() for srv in servers) == 2, 5, "the counts")  # type: ignore[attr-defined]
        held = held[2:]
        for _ in range(2):
            held.append(connect(port))
        wait_until(lambda: sum(serving(servers)) == 4, 5, "the new associations")
        assert serving(servers) == [2, 2]
        for assoc in held:
            assert assoc.send_c_store(ct_instance()).Status == 0  # type: ignore[attr-defined]
            assoc.release()  # type: ignore[attr-defined]
        assert len(recorder.stored) == 4
    finally:
        for srv in servers:
            srv.shutdown()


def test_a_listener_group_member_that_stops_leaves_the_socket_to_the_others(recorder: Recorder) -> None:
    first, second = start_group(recorder)
    port = first.server_address[1]
    busy = connect(port)  # the first server, or the second: either is then one ahead
    try:
        second.shutdown()  # closes its copy of the socket, frees its slot: the first takes everything now
        for _ in range(3):
            assoc = connect(port)
            assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]
            assoc.release()  # type: ignore[attr-defined]
    finally:
        busy.release()  # type: ignore[attr-defined]
        first.shutdown()


def test_a_listener_group_does_not_wait_on_a_member_that_is_gone_or_stuck() -> None:
    # Three slots of one board: a process that died serving nothing, a live one that serves nothing and never
    # accepts (stopped, say), and the one that looks, serving one association. Neither of the first two may hold
    # a connection back from it for long.
    fd = os.memfd_create("test-board")
    os.ftruncate(fd, 3 * 8)
    dead, stuck, seen = (LoadBoard(fd, 3, slot) for slot in range(3))
    try:
        dead._cells[0] = 2**22 + 12345  # no such pid (above the kernel's largest)
        stuck.join()
        seen.join()
        seen.add(1)
        assert not seen.my_turn()  # the live, idle one comes first...
        stuck.leave()
        assert seen.my_turn()  # ...and a dead one never does
        stuck.join()
        started = time.monotonic()
        while not seen.take_turn():
            pass
        assert TURN_WAIT <= time.monotonic() - started < 1  # declined for TURN_WAIT, then took it
        seen.add(-1)
        assert seen.serving() == 0 and seen.my_turn()
    finally:
        for board in (dead, stuck, seen):
            board.close()
        os.close(fd)


def test_a_connection_closed_before_its_association_request_ends_at_once(server: ListenerServer) -> None:
    # A TCP health check or port probe: pynetdicom's acceptor would wait out the ACSE timeout (60 s here).
    probe = socket.create_connection(("127.0.0.1", server.server_address[1]), 2)
    wait_until(lambda: len(server.active_associations) == 1, 5, "the connection's association thread")
    probe.close()
    wait_until(lambda: not server.active_associations, 5, "the association thread to end")
    assoc = connect(server.server_address[1])  # and the listener goes on as before
    assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]
    assoc.release()  # type: ignore[attr-defined]
