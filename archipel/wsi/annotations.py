"""Slide annotations: points, lines and polygons with a text label, in level-0 pixels of the slide.

The index holds the annotations (the source of truth, so that a slide still being converted can be annotated
from its source); each change also writes the slide's whole annotation set as a new DICOM *Microscopy Bulk
Simple Annotations* instance (:mod:`archipel.wsi.annotation_dicom`) once the slide has its study and Frame of
Reference (decision 0024). Deleting an annotation marks it deleted; the earlier DICOM instances keep it.
"""

from __future__ import annotations

import json
import math
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from archipel.platform.db import Base, Database, UTCDateTime, utcnow

POINT, LINE, POLYGON = "Point", "LineString", "Polygon"
GEOMETRY_TYPES = (POINT, LINE, POLYGON)
#: A label is a DICOM LO (64 characters): it becomes the annotation group's label in the DICOM instance.
LABEL_MAX = 64
#: Vertices of one line or polygon; a freehand outline of a tumour fits well within it.
MAX_VERTICES = 5000


class SlideAnnotation(Base):
    """One annotation of a slide; ``deleted_at`` set means it was removed (kept for the record)."""

    __tablename__ = "slide_annotations"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    slide_id: Mapped[str] = mapped_column(ForeignKey("slides.id"), index=True)
    geometry_type: Mapped[str] = mapped_column(String(16))
    #: The GeoJSON coordinates (level-0 pixels), as JSON text.
    coordinates: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(String(LABEL_MAX))
    author: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    deleted_by: Mapped[str] = mapped_column(String(128), default="")

    def feature(self) -> dict[str, Any]:
        """The annotation as a GeoJSON Feature."""
        return {
            "type": "Feature",
            "id": self.id,
            "geometry": {"type": self.geometry_type, "coordinates": json.loads(self.coordinates)},
            "properties": {
                "id": self.id,
                "label": self.label,
                "author": self.author,
                "created_at": self.created_at.isoformat() if self.created_at else None,
            },
        }


class SlideAnnotationSet(Base):
    """The DICOM side of a slide's annotations: their series and the instance holding the current set.

    ``pending`` says the index changed since the last instance was written (or none could be yet: the slide
    has no study or Frame of Reference before its conversion ends).
    """

    __tablename__ = "slide_annotation_sets"

    slide_id: Mapped[str] = mapped_column(ForeignKey("slides.id"), primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    sop_uid: Mapped[str] = mapped_column(String(64), default="")
    #: The instance number of the current instance (0: none written yet).
    version: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InvalidAnnotation(ValueError):
    """The feature cannot be stored; the message says why, in the user's words."""


@dataclass(frozen=True)
class NewAnnotation:
    """A validated annotation, ready to store."""

    geometry_type: str
    coordinates: Any
    label: str


def _point(value: Any, width: int, height: int, where: str) -> list[float]:
    if not isinstance(value, list) or len(value) != 2:
        raise InvalidAnnotation(f"{where}: a position is [x, y]")
    x, y = value
    for v in (x, y):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InvalidAnnotation(f"{where}: coordinates must be finite numbers")
    if not (0 <= x <= width and 0 <= y <= height):
        raise InvalidAnnotation(f"{where}: ({x}, {y}) is outside the slide (0-{width} x 0-{height} pixels)")
    return [float(x), float(y)]


def _positions(value: Any, width: int, height: int, least: int, what: str) -> list[list[float]]:
    if not isinstance(value, list) or not least <= len(value) <= MAX_VERTICES:
        raise InvalidAnnotation(f"a {what} has {least} to {MAX_VERTICES} positions")
    return [_point(p, width, height, f"{what} position {i}") for i, p in enumerate(value)]


def _label(properties: Any) -> str:
    if not isinstance(properties, dict) or not isinstance(properties.get("label"), str):
        raise InvalidAnnotation("properties.label (text) is required")
    label = unicodedata.normalize("NFC", properties["label"]).strip()
    if not label:
        raise InvalidAnnotation("properties.label must not be empty")
    if len(label) > LABEL_MAX:
        raise InvalidAnnotation(f"properties.label is {len(label)} characters; at most {LABEL_MAX}")
    if any(unicodedata.category(c) == "Cc" or c == "\\" for c in label):
        raise InvalidAnnotation("properties.label must not contain control characters or backslashes")
    return label


def validate_feature(feature: Any, width: int, height: int) -> NewAnnotation:
    """Check a GeoJSON Feature against a slide of ``width`` x ``height`` level-0 pixels.

    Accepts a Point, a LineString (2+ positions) or a Polygon with one closed ring (4+ positions, the last equal
    to the first; no holes), every position inside the slide, and a label of 1 to 64 characters. Raises
    :class:`InvalidAnnotation` with the reason otherwise.
    """
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        raise InvalidAnnotation('the body must be a GeoJSON Feature ({"type": "Feature", ...})')
    geometry = feature.get("geometry")
    if not isinstance(geometry, dict) or geometry.get("type") not in GEOMETRY_TYPES:
        raise InvalidAnnotation("geometry.type must be Point, LineString or Polygon")
    kind, coords = geometry["type"], geometry.get("coordinates")
    label = _label(feature.get("properties"))
    if kind == POINT:
        return NewAnnotation(kind, _point(coords, width, height, "point"), label)
    if kind == LINE:
        return NewAnnotation(kind, _positions(coords, width, height, 2, "line"), label)
    if not isinstance(coords, list) or len(coords) != 1:
        raise InvalidAnnotation("a polygon has exactly one ring (holes are not supported)")
    ring = _positions(coords[0], width, height, 4, "polygon ring")
    if ring[0] != ring[-1]:
        raise InvalidAnnotation("a polygon ring is closed: its last position repeats the first")
    if len({tuple(p) for p in ring}) < 3:
        raise InvalidAnnotation("a polygon needs at least 3 distinct positions")
    return NewAnnotation(kind, [ring], label)


def add(db: Database, slide_id: str, new: NewAnnotation, author: str) -> SlideAnnotation:
    """Store ``new`` on ``slide_id`` and mark the slide's DICOM annotation set out of date."""
    _ensure_set(db, slide_id)
    row = SlideAnnotation(
        id=secrets.token_hex(8),
        slide_id=slide_id,
        geometry_type=new.geometry_type,
        coordinates=json.dumps(new.coordinates),
        label=new.label,
        author=author,
        created_at=utcnow(),
    )
    with db.write() as s:
        s.add(row)
        _mark_pending(s, slide_id)
    return row


def remove(db: Database, slide_id: str, annotation_id: str, who: str) -> bool:
    """Mark an annotation of ``slide_id`` deleted; False when there is no such live annotation."""
    with db.write() as s:
        row = s.get(SlideAnnotation, annotation_id)
        if row is None or row.slide_id != slide_id or row.deleted_at is not None:
            return False
        row.deleted_at, row.deleted_by = utcnow(), who
        _mark_pending(s, slide_id)
    return True


def is_live(db: Database, slide_id: str, annotation_id: str) -> bool:
    """Whether ``annotation_id`` is an annotation of ``slide_id`` that is not deleted."""
    with db.sessions() as s:
        row = s.get(SlideAnnotation, annotation_id)
        return row is not None and row.slide_id == slide_id and row.deleted_at is None


def _ensure_set(db: Database, slide_id: str) -> None:
    """Create the slide's annotation-set row once; two first annotations at the same moment both find it."""
    with db.sessions() as s:
        if s.get(SlideAnnotationSet, slide_id) is not None:
            return
    try:
        with db.write() as s:
            s.add(SlideAnnotationSet(slide_id=slide_id, pending=False, updated_at=utcnow()))
    except IntegrityError:
        pass  # made meanwhile by another request


def _mark_pending(s: Any, slide_id: str) -> None:
    s.execute(
        update(SlideAnnotationSet)
        .where(SlideAnnotationSet.slide_id == slide_id)
        .values(pending=True, updated_at=utcnow())
    )


def live(db: Database, slide_id: str) -> list[SlideAnnotation]:
    """The slide's annotations that are not deleted, oldest first."""
    with db.sessions() as s:
        rows = s.execute(
            select(SlideAnnotation)
            .where(SlideAnnotation.slide_id == slide_id, SlideAnnotation.deleted_at.is_(None))
            .order_by(SlideAnnotation.created_at, SlideAnnotation.id)
        ).scalars()
        return list(rows)


def collection(db: Database, slide_id: str) -> dict[str, Any]:
    """The slide's annotations as a GeoJSON FeatureCollection."""
    return {"type": "FeatureCollection", "features": [row.feature() for row in live(db, slide_id)]}


def annotation_set(db: Database, slide_id: str) -> SlideAnnotationSet | None:
    """The slide's DICOM annotation state, if any annotation was ever made."""
    with db.sessions() as s:
        return s.get(SlideAnnotationSet, slide_id)
