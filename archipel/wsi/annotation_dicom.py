"""A slide's annotation set as a DICOM Microscopy Bulk Simple Annotations instance, stored through the archive.

Every change writes the whole current set as a new instance (instance number + 1) of the slide's annotation
series, in the slide's study and Frame of Reference (copied by highdicom from the slide's level-0 image); the
archive keeps the earlier instances. Coordinates are 2D, in the total pixel matrix of level 0 (pixel origin
``VOLUME``). Each annotation is its own annotation group, so that its label is the group's label. A slide not
converted yet has no study nor Frame of Reference: its set stays ``pending`` and is written once it is ready.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime
from io import BytesIO
from typing import Any, cast

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from sqlalchemy import select, update
from sqlalchemy.engine import CursorResult

from archipel import __version__
from archipel.platform.runtime import Runtime
from archipel.radiology.archive import Archive
from archipel.radiology.models import Instance, Series
from archipel.wsi import annotations as store
from archipel.wsi.annotations import LINE, POINT, SlideAnnotation, SlideAnnotationSet
from archipel.wsi.models import READY, Slide

log = logging.getLogger("archipel.wsi")

#: One writer at a time per process (fewer wasted claims); across processes, instance numbers are claimed in the
#: index (``_claim``).
_writing = threading.Lock()
_GRAPHIC = {POINT: hd.ann.GraphicTypeValues.POINT, LINE: hd.ann.GraphicTypeValues.POLYLINE}


def level0_image(rt: Runtime, series_uid: str) -> Dataset | None:
    """The header of the slide's full-resolution VOLUME instance (the largest total pixel matrix)."""
    with rt.db.sessions() as s:
        keys = list(
            s.execute(
                select(Instance.blob_key)
                .join(Series, Series.id == Instance.series_pk)
                .where(Series.series_uid == series_uid)
            ).scalars()
        )
    best: Dataset | None = None
    for key in keys:
        with rt.blobs.open(key) as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        if "VOLUME" not in list(ds.get("ImageType", [])):
            continue
        if best is None or int(ds.TotalPixelMatrixColumns) > int(best.TotalPixelMatrixColumns):
            best = ds
    return best


def _group(number: int, row: SlideAnnotation) -> hd.ann.AnnotationGroup:
    feature = row.feature()
    coords = feature["geometry"]["coordinates"]
    if row.geometry_type == POINT:
        data = [np.array([coords], dtype=np.float32)]
    elif row.geometry_type == LINE:
        data = [np.array(coords, dtype=np.float32)]
    else:  # highdicom's polygons are implicitly closed: the GeoJSON ring's repeated last position goes
        data = [np.array(coords[0][:-1], dtype=np.float32)]
    return hd.ann.AnnotationGroup(
        number=number,
        # Stable across versions of the set: derived from the annotation's id.
        uid=hd.UID(f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'archipel-annotation/' + row.id).int}"),
        label=row.label,
        annotated_property_category=codes.SCT.Tissue,
        annotated_property_type=codes.SCT.Tissue,
        graphic_type=_GRAPHIC.get(row.geometry_type, hd.ann.GraphicTypeValues.POLYGON),
        graphic_data=data,
        algorithm_type=hd.ann.AnnotationGroupGenerationTypeValues.MANUAL,
        description=f"by {row.author}",
    )


def build(
    source: Dataset, rows: list[SlideAnnotation], series_uid: str, sop_uid: str, number: int
) -> hd.ann.MicroscopyBulkSimpleAnnotations:
    """The annotation instance of ``rows`` on the slide whose level-0 header is ``source``."""
    return hd.ann.MicroscopyBulkSimpleAnnotations(
        source_images=[source],
        annotation_coordinate_type=hd.ann.AnnotationCoordinateTypeValues.SCOORD,
        annotation_groups=[_group(i + 1, row) for i, row in enumerate(rows)],
        series_instance_uid=series_uid,
        series_number=9000,
        sop_instance_uid=sop_uid,
        instance_number=number,
        manufacturer="Archipel",
        manufacturer_model_name="Archipel slide viewer",
        software_versions=__version__,
        device_serial_number="archipel",
        content_description="Slide annotations",
        content_label="ANNOTATIONS",
    )


def series_uid_of(slide_id: str) -> str:
    """The UID of the slide's annotation series: derived from the slide, so every writer names the same one."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, 'archipel-annotation-series/' + slide_id).int}"


def _claim(rt: Runtime, slide_id: str) -> tuple[int, datetime] | None:
    """Reserve the next instance number of a pending set (compare-and-swap on ``version``, so that writers in
    other processes never take the same number); returns it and the set's change time, or ``None``."""
    with rt.db.write() as s:
        state = s.get(SlideAnnotationSet, slide_id)
        if state is None or not state.pending:
            return None
        number, changed = state.version + 1, state.updated_at
        result = s.execute(
            update(SlideAnnotationSet)
            .where(SlideAnnotationSet.slide_id == slide_id, SlideAnnotationSet.version == state.version)
            .values(version=number)
        )
        claimed = cast(CursorResult[Any], result).rowcount
    return (number, changed) if claimed == 1 else None


def _finish(rt: Runtime, slide_id: str, number: int, changed: datetime, sop_uid: str) -> bool:
    """Make instance ``number`` the current one, unless a later number was claimed; it stays pending when the
    set changed after it was read. Returns whether it is still pending."""
    with rt.db.write() as s:
        state = s.get(SlideAnnotationSet, slide_id)
        if state is None or state.version != number:
            return False  # a later writer took over; it read the set after this one
        state.series_uid, state.sop_uid = series_uid_of(slide_id), sop_uid
        state.pending = state.updated_at != changed
        return state.pending


def write_pending(rt: Runtime, slide_id: str) -> str | None:
    """Write the slide's current annotation set as a new instance when it changed and the slide is ready.

    Returns the new SOP Instance UID, or ``None`` when nothing was written (up to date, slide not converted,
    or no live annotation left: the earlier instances stay, and the set has no current instance). Safe across
    processes: each instance number is claimed once, and a set changed while it was written is written again.
    """
    written: str | None = None
    with _writing:
        with rt.db.sessions() as s:
            slide = s.get(Slide, slide_id)
        if slide is None or slide.status != READY or not slide.series_uid:
            return None
        source: Dataset | None = None
        while (claim := _claim(rt, slide_id)) is not None:
            number, changed = claim
            rows = store.live(rt.db, slide_id)  # read after the claim: includes every change before it
            sop_uid = ""
            if rows:
                source = source or level0_image(rt, slide.series_uid)
                if source is None:
                    log.warning("event=annotations_not_written slide=%s reason=no_level0_instance", slide_id)
                    return None
                sop_uid = str(hd.UID())
                buffer = BytesIO()
                build(source, rows, series_uid_of(slide_id), sop_uid, number).save_as(
                    buffer, enforce_file_format=True
                )
                Archive(rt.db, rt.blobs, rt.settings.duplicate_policy).store(
                    buffer.getvalue(), default_issuer=slide.issuer
                )
                written = sop_uid
            again = _finish(rt, slide_id, number, changed, sop_uid)
            log.info(
                "event=annotations_written slide=%s instance=%d annotations=%d again=%s",
                slide_id,
                number,
                len(rows),
                again,
            )
            if not again:
                break
    return written


def current_instance(rt: Runtime, slide_id: str) -> bytes | None:
    """The Part-10 bytes of the slide's current annotation instance, or ``None`` when there is none."""
    state = store.annotation_set(rt.db, slide_id)
    if state is None or not state.sop_uid:
        return None
    with rt.db.sessions() as s:
        key = s.execute(select(Instance.blob_key).where(Instance.sop_uid == state.sop_uid)).scalar()
    return rt.blobs.get(key) if key else None
