"""Storing instances: validate, write the blob durably, then commit the index row.

The order is the durability contract: a sender is acknowledged only after :meth:`Archive.store` returns, by
which time the blob is fsynced and the row committed. The row's statements may run while the blob is being
flushed, but its transaction commits only after the flush. A crash between the two leaves an orphan blob that
:meth:`Archive.sweep_orphans` removes at start-up, never a row without its bytes.

Every object also creates or updates its patient's local identity in the master patient index, before its row
is committed (see :mod:`archipel.radiology.patient_links`): an acknowledged object is always linked.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from concurrent.futures import CancelledError, Future
from contextlib import nullcontext
from dataclasses import dataclass
from queue import SimpleQueue
from typing import Literal, cast

from sqlalchemy import Connection, Table, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from archipel.platform.db import Database, utcnow
from archipel.platform.settings import DuplicatePolicy
from archipel.platform.storage import BlobDraft, BlobStore, LazyPool, drafts
from archipel.radiology.dicomfile import InvalidInstance, ParsedInstance, parse_part10
from archipel.radiology.documents_models import Document
from archipel.radiology.models import Instance, InstanceVersion, Patient, Series, Study
from archipel.radiology.patient_links import link_object, link_unlinked_patients
from archipel.radiology.rejection import (
    KOS_SOP_CLASS,
    RejectionNote,
    apply_rejection,
    read_rejection_note,
    refuse_if_rejected,
)
from archipel.radiology.retention_models import RejectedInstance
from archipel.radiology.stored import StoredObject, announce

log = logging.getLogger("archipel.archive")

# The ingest path writes with SQLAlchemy Core: an ORM session and objects per instance cost more than the
# index writes themselves.
_PATIENTS: Table = Patient.__table__  # type: ignore[assignment]
_STUDIES: Table = Study.__table__  # type: ignore[assignment]
_SERIES: Table = Series.__table__  # type: ignore[assignment]
_INSTANCES: Table = Instance.__table__  # type: ignore[assignment]
_VERSIONS: Table = InstanceVersion.__table__  # type: ignore[assignment]
# Built once, so that SQLAlchemy reuses their compiled form for every instance.
_CURRENT_INSTANCE = select(
    _INSTANCES.c.id, _INSTANCES.c.sha256, _INSTANCES.c.blob_key, _INSTANCES.c.size, _INSTANCES.c.received_at
).where(_INSTANCES.c.sop_uid == bindparam("sop_uid"))
_INSERT_INSTANCE = insert(_INSTANCES)

StoreStatus = Literal["stored", "already-stored", "replaced"]


class DuplicateConflict(InvalidInstance):
    """The SOP Instance UID is stored already with other bytes, and the policy keeps the first."""

    def __init__(self, sop_uid: str) -> None:
        super().__init__(
            f"SOP Instance {sop_uid} is already stored with different content; the first copy is kept",
            code=0x0111,
            http_status=409,
        )
        self.sop_uid = sop_uid


@dataclass(frozen=True)
class StoreResult:
    """What happened to one stored object."""

    sop_uid: str
    sop_class_uid: str
    study_uid: str
    series_uid: str
    status: StoreStatus
    sha256: str
    #: The patient as ``issuer/PatientID``, the form the access policy and the audit trail use.
    patient: str = ""


#: The pool that hashes and writes blobs while the calling thread parses and checks.
_blob_writers = LazyPool(8, "archipel-blob")

#: What tells an incoming blob's writer that the object will not be stored.
_DROPPED = object()

#: Threads that write incoming blobs, one per object being received: a slow sender holds only its own.
_incoming_pool = LazyPool(512, "archipel-incoming")


class IncomingBlob:
    """An object's blob written while the object is still arriving (a C-STORE data set, PDU by PDU).

    Each piece is hashed by the receiving thread (without the GIL, 0.3 ms per 0.5 MB) and handed to a writer
    thread of its own, which writes it while the receiving thread reads the next one from the network: the
    digest is known as soon as the last piece is, and the writer, whose direct writes wait for the disk, does
    not fall behind by the hashing too. At :meth:`finish` that thread flushes the blob and
    moves it under its digest, beside the hand-off, the parse and the index statements that
    :meth:`Archive.store` runs next. Hand it to :meth:`Archive.store` with the same bytes, or to
    :meth:`Archive.drop` when the object is not stored.
    """

    def __init__(self, draft: BlobDraft, header: bytes) -> None:
        self.draft = draft
        #: What is written before the data set (the receiver joins it with the data set: reactor.IncomingSink).
        self.prefix = header
        #: Bytes handed over so far.
        self.size = 0
        #: The digest, once every piece is hashed.
        self.hashed: Future[str] = Future()
        #: (digest, whether this created the blob), once :meth:`finish` has been called.
        self.placing: Future[tuple[str, bool]] | None = None
        #: Handed to :meth:`Archive.store`, which removes the blob if the object is not stored.
        self.taken = False
        self._pieces: SimpleQueue[bytes | memoryview | object | None] = SimpleQueue()
        self._done = _incoming_pool().submit(self._write)
        self.write(header)

    def write(self, piece: bytes | memoryview) -> None:
        """Hash the next piece and hand it over (a view stays valid: the receiver does not reuse its buffers)."""
        self.size += len(piece)
        self.draft.hasher.update(piece)
        self._pieces.put(piece)

    def finish(self) -> None:
        """The last piece is handed over: flush and place the blob once it is written."""
        self.hashed.set_result(self.draft.hasher.hexdigest())
        self._pieces.put(None)
        self.placing = self._done

    def discard(self) -> None:
        """Drop a blob that was not finished."""
        if self.placing is None:
            self._pieces.put(_DROPPED)

    def _write(self) -> tuple[str, bool]:
        draft = self.draft
        try:
            while True:
                piece = self._pieces.get()
                if piece is None:
                    break
                if piece is _DROPPED:
                    raise CancelledError("the object is not stored")
                draft.write_hashed(cast(bytes | memoryview, piece))
            key = draft.close()
        except BaseException:
            draft.discard()
            raise
        return key, draft.place()


def _instance_values(p: ParsedInstance, digest: str, size: int, source_ae: str) -> dict[str, object]:
    return {
        "sop_class_uid": p.sop_class_uid,
        "instance_number": p.instance_number,
        "transfer_syntax": p.transfer_syntax,
        "size": size,
        "sha256": digest,
        "blob_key": digest,
        "rows": p.rows,
        "columns": p.columns,
        "number_of_frames": p.number_of_frames,
        "pixel_data_offset": p.pixel_data_offset,
        "pixel_data_length": p.pixel_data_length,
        "frame_index": p.frame_index_json(),
        "source_ae": source_ae,
        "received_at": utcnow(),
    }


class _KnownSeries:
    """Series already in the index: Series Instance UID -> (series row id, Study Instance UID).

    It spares a SELECT per instance, since a series arrives as a stream of instances. Entries are published
    only after the transaction that found or created them commits (a rolled-back row must not be cached),
    and the whole map is dropped if an insert trips over a stale entry (a series deleted meanwhile).
    """

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._map: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, series_uid: str) -> tuple[int, str] | None:
        with self._lock:
            hit = self._map.get(series_uid)
            if hit is not None:
                self._map.move_to_end(series_uid)
            return hit

    def add(self, series_uid: str, entry: tuple[int, str]) -> None:
        with self._lock:
            self._map[series_uid] = entry
            self._map.move_to_end(series_uid)
            while len(self._map) > self.limit:
                self._map.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._map.clear()


class Archive:
    """The archive's write side over an index database and a blob store."""

    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        duplicate_policy: DuplicatePolicy = "keep-first",
        *,
        link_identities: bool = True,
        refuse_rejected: bool = True,
    ):
        self.db = db
        self.blobs = blobs
        self.duplicate_policy = duplicate_policy
        #: Feed every object's patient to the MPI (off only to build an archive as an older version left it).
        self.link_identities = link_identities
        #: Refuse a store of an instance an IOCM rejection note rejected (off: store it again, still hidden).
        self.refuse_rejected = refuse_rejected
        self._known = _KnownSeries()
        self._lock = threading.Lock()
        self._running = 0

    def receiving(self, header: bytes) -> IncomingBlob | None:
        """A blob to write an arriving object into, starting with ``header`` (its first bytes), or ``None``
        when the blob store takes whole blobs only."""
        maker = drafts(self.blobs)
        return IncomingBlob(maker(), header) if maker is not None else None

    def drop(self, incoming: IncomingBlob, sop_uid: str | None) -> None:
        """Remove what ``incoming`` wrote for an object that is not stored (see :meth:`_discard`)."""
        if incoming.placing is None:
            incoming.discard()
        else:
            self._discard(incoming.placing, sop_uid)

    def store(
        self,
        data: bytes,
        *,
        source_ae: str = "",
        default_issuer: str = "",
        incoming: IncomingBlob | None = None,
    ) -> StoreResult:
        """Store one Part-10 object and return once it is durable.

        ``incoming``: its blob, written already as it arrived and finished (:class:`IncomingBlob`).

        Raises :class:`InvalidInstance` (or :class:`DuplicateConflict`) with a reason; nothing stored before
        is changed in that case.
        """
        if incoming is not None:
            incoming.taken = True
            return self._store_incoming(data, source_ae, default_issuer, incoming)
        # Hashing and the durable blob write release the GIL. With no other store running they go to a
        # helper thread and overlap the parse, which is what a lone association waits on; with other stores
        # running, those already keep the cores busy and the hand-off would only add work, so they run here.
        # Duplicates are found inside the index transaction; a blob written for an object that is then
        # refused is removed again (an orphan the start-up sweep would remove anyway).
        with self._lock:
            self._running += 1
            alone = self._running == 1
        try:
            return self._store(data, source_ae, default_issuer, alone)
        finally:
            with self._lock:
                self._running -= 1

    def _store_incoming(
        self, data: bytes, source_ae: str, default_issuer: str, incoming: IncomingBlob
    ) -> StoreResult:
        placing = incoming.placing
        if placing is None or incoming.size != len(data):
            # A caller's bug, not the sender's: the blob would not hold these bytes.
            self.drop(incoming, None)
            raise RuntimeError("the incoming blob is unfinished or holds other bytes than the object")
        hashed = incoming.hashed
        with self._lock:
            self._running += 1
        try:
            return self._store(data, source_ae, default_issuer, False, (placing, hashed))
        finally:
            with self._lock:
                self._running -= 1

    def _store(
        self,
        data: bytes,
        source_ae: str,
        default_issuer: str,
        overlap: bool,
        written: tuple[Future[tuple[str, bool]], Future[str]] | None = None,
    ) -> StoreResult:
        writing: Future[tuple[str, bool]]
        hashed: Future[str] = Future()
        if written is not None:
            writing, hashed = written
        elif overlap:
            writing = _blob_writers().submit(self._put, data, hashed)
        else:
            writing = Future()
            try:
                writing.set_result(self._put(data, hashed))
            except Exception as exc:
                writing.set_exception(exc)
                if not hashed.done():
                    hashed.set_exception(exc)
        try:
            parsed = parse_part10(data, default_issuer=default_issuer)
            note = read_rejection_note(data) if parsed.sop_class_uid == KOS_SOP_CLASS else None
        except BaseException:
            self._discard(writing, None)
            raise
        try:
            # The MPI update runs outside the index transaction (no write lock held for other stores while
            # linking) and before it (so that a crash never leaves an acknowledged object unlinked). It
            # writes only for a new patient or changed demographics, and not for an object that the index
            # transaction is bound to refuse. It does not wait for the blob's flush.
            if self.link_identities:
                link_object(self.db, parsed, lambda: self._refused(parsed, hashed.result()))
            digest = hashed.result()
        except BaseException:
            self._discard(writing, parsed.sop_uid)
            raise
        learned: dict[str, tuple[int, str]] = {}

        def index(conn: Connection) -> StoreStatus:
            learned.clear()
            try:
                # SQLite undoes a failed statement alone; elsewhere a savepoint keeps the transaction usable.
                with nullcontext() if self.db.is_sqlite else conn.begin_nested():
                    status = self._index(conn, parsed, digest, len(data), source_ae, learned, note)
            except IntegrityError:
                # A cached series that is gone, or a row another process inserted first: look again.
                self._known.clear()
                learned.clear()
                status = self._index(conn, parsed, digest, len(data), source_ae, learned, note)
            # The row's statements ran while the blob was being flushed; it is committed only once the blob
            # is durable (this raises, and the row is undone, if the write failed).
            writing.result()
            return status

        # Instances from concurrent associations share one commit: the blob is durable already, and this
        # returns only once the row is committed.
        try:
            status = self.db.group_commit.run(index)
        except BaseException as exc:
            if isinstance(exc, DuplicateConflict):
                log.warning("event=duplicate_refused sop_uid=%s source_ae=%s", parsed.sop_uid, source_ae)
            self._discard(writing, parsed.sop_uid)
            raise
        if note is not None:
            # The note may have emptied and deleted series that the cache knows.
            self._known.clear()
        for series_uid, entry in learned.items():
            self._known.add(series_uid, entry)
        # DEBUG: one line per instance formatted at INFO cost a twentieth of a store; each association and each
        # STOW request logs its counts (event=store_association_end) and audits the stored studies.
        log.debug(
            "event=instance_stored sop_uid=%s status=%s size=%d source_ae=%s",
            parsed.sop_uid,
            status,
            len(data),
            source_ae,
        )
        if status != "already-stored":
            announce(self.db, StoredObject(parsed, data, status))
        return self._result(parsed, status, digest)

    def _refused(self, p: ParsedInstance, digest: str) -> bool:
        """Whether the index would refuse ``p`` as things stand: a conflicting duplicate under keep-first, a
        study stored for another patient, a series under another study (what :meth:`_index` checks)."""
        i, se, st, pa = _INSTANCES.c, _SERIES.c, _STUDIES.c, _PATIENTS.c
        with self.db.engine.connect() as c:
            sha = c.execute(select(i.sha256).where(i.sop_uid == p.sop_uid)).scalar_one_or_none()
            if sha is not None and sha != digest and self.duplicate_policy == "keep-first":
                return True
            owner = c.execute(
                select(pa.issuer, pa.patient_id)
                .join(_STUDIES, st.patient_pk == pa.id)
                .where(st.study_uid == p.study_uid)
            ).first()
            if owner is not None and (owner.issuer, owner.patient_id) != (p.issuer, p.patient_id):
                return True
            study = c.execute(
                select(st.study_uid).join(_SERIES, se.study_pk == st.id).where(se.series_uid == p.series_uid)
            ).scalar_one_or_none()
            return study is not None and study != p.study_uid

    def _put(self, data: bytes, hashed: Future[str]) -> tuple[str, bool]:
        """Hash ``data`` (its key goes to ``hashed`` at once) and write it durably; return its key and whether
        this call created the blob."""
        try:
            digest = hashlib.sha256(data).hexdigest()
        except BaseException as exc:
            hashed.set_exception(exc)
            raise
        hashed.set_result(digest)
        fresh = not self.blobs.exists(digest)
        self.blobs.put(digest, data)
        return digest, fresh

    def _discard(self, writing: Future[tuple[str, bool]], sop_uid: str | None) -> None:
        """Remove the blob of a refused object if this store created it and no index row names it.

        A blob this call created was named by no committed row before; only a concurrent store of the same
        bytes, so of the same ``sop_uid``, could have committed one since. Bytes that do not parse
        (``sop_uid`` None) can never be named.
        """
        try:
            digest, fresh = writing.result()
        except Exception:
            return
        if not fresh:
            return
        if sop_uid is not None:
            i, v = _INSTANCES.c, _VERSIONS.c
            with self.db.engine.connect() as c:
                named = (
                    c.execute(select(i.id).where(i.sop_uid == sop_uid, i.blob_key == digest)).first()
                    or c.execute(select(v.id).where(v.sop_uid == sop_uid, v.blob_key == digest)).first()
                )
            if named is not None:
                return
        self.blobs.delete(digest)

    @staticmethod
    def _result(parsed: ParsedInstance, status: StoreStatus, digest: str) -> StoreResult:
        return StoreResult(
            sop_uid=parsed.sop_uid,
            sop_class_uid=parsed.sop_class_uid,
            study_uid=parsed.study_uid,
            series_uid=parsed.series_uid,
            status=status,
            sha256=digest,
            patient=f"{parsed.issuer}/{parsed.patient_id}",
        )

    def _index(
        self,
        c: Connection,
        p: ParsedInstance,
        digest: str,
        size: int,
        source_ae: str,
        learned: dict[str, tuple[int, str]],
        note: RejectionNote | None = None,
    ) -> StoreStatus:
        """Write the instance row (and its series, study and patient when new) inside the caller's transaction;
        a rejection ``note`` hides the instances it names in the same transaction."""
        current = c.execute(_CURRENT_INSTANCE, {"sop_uid": p.sop_uid}).first()
        if current is None and self.refuse_rejected:
            refuse_if_rejected(c, p.sop_uid)
        if current is not None:
            if current.sha256 == digest:
                return "already-stored"
            if self.duplicate_policy == "keep-first":
                raise DuplicateConflict(p.sop_uid)
            c.execute(
                insert(_VERSIONS).values(
                    sop_uid=p.sop_uid,
                    sha256=current.sha256,
                    blob_key=current.blob_key,
                    size=current.size,
                    received_at=current.received_at,
                    superseded_at=utcnow(),
                )
            )
        series_pk = self._series_pk(c, p, learned)
        values = _instance_values(p, digest, size, source_ae)
        if current is None:
            c.execute(_INSERT_INSTANCE, {"sop_uid": p.sop_uid, "series_pk": series_pk, **values})
            if note is not None:
                apply_rejection(c, note)
            return "stored"
        c.execute(
            update(_INSTANCES).where(_INSTANCES.c.id == current.id).values(series_pk=series_pk, **values)
        )
        return "replaced"

    def _series_pk(self, c: Connection, p: ParsedInstance, learned: dict[str, tuple[int, str]]) -> int:
        known = self._known.get(p.series_uid)
        if known is None:
            se, st = _SERIES.c, _STUDIES.c
            row = c.execute(
                select(se.id, st.study_uid)
                .join(_STUDIES, st.id == se.study_pk)
                .where(se.series_uid == p.series_uid)
            ).first()
            if row is not None:
                known = (int(row.id), str(row.study_uid))
                learned[p.series_uid] = known
        if known is not None:
            if known[1] != p.study_uid:
                raise InvalidInstance(
                    f"SeriesInstanceUID {p.series_uid} belongs to another study than {p.study_uid}",
                    code=0xA900,
                )
            return known[0]
        study_pk, modalities = self._study(c, p)
        now = utcnow()
        series_pk = c.execute(
            insert(_SERIES)
            .values(
                series_uid=p.series_uid,
                study_pk=study_pk,
                modality=p.modality,
                series_number=p.series_number,
                description=p.series_description,
                body_part=p.body_part,
                performed_start_date=p.performed_start_date,
                performed_start_time=p.performed_start_time,
                created_at=now,
            )
            .returning(_SERIES.c.id)
        ).scalar_one()
        present = [m for m in modalities.split("\\") if m]
        changes: dict[str, object] = {"updated_at": now}
        if p.modality and p.modality not in present:
            changes["modalities"] = "\\".join(sorted([*present, p.modality]))
        c.execute(update(_STUDIES).where(_STUDIES.c.id == study_pk).values(**changes))
        learned[p.series_uid] = (int(series_pk), p.study_uid)
        return int(series_pk)

    def _study(self, c: Connection, p: ParsedInstance) -> tuple[int, str]:
        """The study row id and its ModalitiesInStudy, created (with its patient) when new."""
        st, pa = _STUDIES.c, _PATIENTS.c
        row = c.execute(
            select(st.id, st.modalities, pa.issuer, pa.patient_id)
            .join(_PATIENTS, pa.id == st.patient_pk)
            .where(st.study_uid == p.study_uid)
        ).first()
        if row is not None:
            if row.patient_id != p.patient_id or row.issuer != p.issuer:
                raise InvalidInstance(
                    f"StudyInstanceUID {p.study_uid} is stored for another patient", code=0xA900
                )
            return int(row.id), str(row.modalities)
        now = utcnow()
        patient_pk = c.execute(
            select(pa.id).where(pa.issuer == p.issuer, pa.patient_id == p.patient_id)
        ).scalar_one_or_none()
        if patient_pk is None:
            patient_pk = c.execute(
                insert(_PATIENTS)
                .values(
                    issuer=p.issuer,
                    patient_id=p.patient_id,
                    patient_name=p.patient_name,
                    birth_date=p.birth_date,
                    sex=p.sex,
                    created_at=now,
                )
                .returning(pa.id)
            ).scalar_one()
        study_pk = c.execute(
            insert(_STUDIES)
            .values(
                study_uid=p.study_uid,
                patient_pk=patient_pk,
                study_date=p.study_date,
                study_time=p.study_time,
                accession_number=p.accession_number,
                study_id=p.study_id,
                referring_physician=p.referring_physician,
                description=p.study_description,
                modalities="",
                site=p.issuer,
                created_at=now,
                updated_at=now,
            )
            .returning(st.id)
        ).scalar_one()
        return int(study_pk), ""

    def sweep_orphans(self, grace_seconds: float = 0) -> int:
        """The start-up recovery sweep: remove blobs that no index row names (left by a crash before commit)
        and return how many; then register in the MPI every stored patient that has no local identity."""
        import time

        cutoff = time.time() - grace_seconds
        # A draft being received by another process is written to as it arrives: the grace spares it too.
        removed = self.blobs.sweep_temporary(cutoff if grace_seconds else None)
        with self.db.sessions() as s:
            known = set(s.execute(select(Instance.blob_key)).scalars())
            known.update(s.execute(select(InstanceVersion.blob_key)).scalars())
            # Document contents share the blob store (radiology/documents.py).
            known.update(s.execute(select(Document.blob_key)).scalars())
            # Rejected instances keep their bytes until the retention run deletes them (radiology/rejection.py).
            known.update(k for k in s.execute(select(RejectedInstance.blob_key)).scalars() if k is not None)
        for key in self.blobs.keys(older_than=cutoff):
            if key not in known:
                self.blobs.delete(key)
                removed += 1
        if removed:
            log.info("event=orphans_swept count=%d", removed)
        if self.link_identities:
            linked = link_unlinked_patients(self.db, self.blobs)
            if linked:
                log.info("event=identities_recovered count=%d", linked)
        return removed
