"""Mammography views normalised from the image header: laterality (R/L), view (CC, MLO, ...), its modifier (spot
compression, magnification...) and whether the image is a tomosynthesis stack.

The view comes from the View Code Sequence (SNOMED CT or the older SNOMED RT codes of DICOM CID 4014) when
present, else from ViewPosition; its modifier from the View Modifier Code Sequence (CID 4015); the laterality from
ImageLaterality, else Laterality, else, for the enhanced and tomosynthesis images, the Frame Laterality of the
shared (or first per-frame) functional groups. An image for which either is missing is reported, so that its
episode is flagged rather than read silently. A tomosynthesis instance (Breast Tomosynthesis Image Storage) has a
view and a laterality like any other, its View Code Sequence at the top level or, as some modalities write it, in
the functional groups; a plain (unmodified) tomosynthesis stack gives its view to an exam as a 2D image does, so a
tomosynthesis-only exam is complete with its four stacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

#: View codes (CID 4014) to view names: SNOMED CT, then SNOMED RT.
VIEW_CODES = {
    "399162004": "CC",
    "R-10242": "CC",
    "399368009": "MLO",
    "R-10226": "MLO",
    "399260004": "ML",
    "R-10224": "ML",
    "399352003": "LM",
    "R-10228": "LM",
    "399099002": "LMO",
    "R-10230": "LMO",
    "399196006": "FB",
    "R-10244": "FB",
    "399188001": "SIO",
    "R-102D0": "SIO",
    "441555000": "ISO",
    "R-40AAA": "ISO",
    "399192008": "XCCL",
    "R-1024A": "XCCL",
    "399101009": "XCCM",
    "R-1024B": "XCCM",
}
#: View modifier codes (CID 4015) to short names.
MODIFIER_CODES = {
    "399055006": "spot",
    "R-102D7": "spot",
    "399163009": "magnification",
    "R-102D6": "magnification",
    "399161006": "cleavage",
    "R-102D2": "cleavage",
    "399011000": "axillary tail",
    "R-102D1": "axillary tail",
    "399197002": "rolled lateral",
    "R-102D3": "rolled lateral",
    "399226006": "rolled medial",
    "R-102D4": "rolled medial",
    "399209000": "implant displaced",
    "R-102D5": "implant displaced",
    "399110001": "tangential",
    "R-102C2": "tangential",
}
#: Breast Tomosynthesis Image Storage.
TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
VIEW_POSITIONS = frozenset({"CC", "MLO", "ML", "LM", "XCCL", "XCCM", "FB", "SIO", "ISO", "LMO", "AT"})
#: The views a screening exam needs for each breast.
SCREENING_VIEWS = ("CC", "MLO")
#: The four standard views of a screening exam (a programme may ask for others, :func:`parse_required`).
STANDARD_VIEWS = ("R-CC", "R-MLO", "L-CC", "L-MLO")


@dataclass(frozen=True)
class ImageView:
    """One image's laterality and view (empty when the header does not say), its view modifier, its number of
    frames and whether it is a tomosynthesis stack; and why it is unusable."""

    sop_uid: str
    laterality: str
    view: str
    modifier: str = ""
    frames: int = 1
    tomo: bool = False

    @property
    def problem(self) -> str:
        """Empty when the image has both a laterality and a view, else what is missing."""
        missing = [
            name for name, value in (("laterality", self.laterality), ("view", self.view)) if not value
        ]
        return f"image {self.sop_uid} has no {' or '.join(missing)}" if missing else ""

    @property
    def screening(self) -> bool:
        """Whether the image may hang as one of the four screening views: a plain CC or MLO, 2D or (when the
        view has no 2D image) a tomosynthesis stack."""
        return not self.modifier and self.view in SCREENING_VIEWS

    def as_dict(self) -> dict[str, str | int | bool]:
        """JSON form."""
        return {
            "sop": self.sop_uid,
            "laterality": self.laterality,
            "view": self.view,
            "modifier": self.modifier,
            "frames": self.frames,
            "tomo": self.tomo,
        }


def _view_codes(ds: Dataset) -> list[Dataset]:
    """The View Code Sequence's items: the image's own, else those of the shared (or first per-frame) functional
    groups, directly in the group item or in one of its macros (enhanced and tomosynthesis images)."""
    if ds.get("ViewCodeSequence"):
        return list(ds.ViewCodeSequence)
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in (ds.get(groups) or [])[:1]:
            if item.get("ViewCodeSequence"):
                return list(item.ViewCodeSequence)
            for element in item:
                if element.VR == "SQ":
                    for macro in element.value[:1]:
                        if macro.get("ViewCodeSequence"):
                            return list(macro.ViewCodeSequence)
    return []


def _code_view(ds: Dataset) -> tuple[str, str]:
    for item in _view_codes(ds):
        name = VIEW_CODES.get(str(item.get("CodeValue", "")).strip())
        if name:
            modifiers = [
                MODIFIER_CODES.get(str(m.get("CodeValue", "")).strip(), "")
                for m in item.get("ViewModifierCodeSequence") or []
            ]
            return name, ", ".join(m for m in modifiers if m)
    return "", ""


def _frame_laterality(ds: Dataset) -> str:
    """FrameLaterality of the shared functional groups, else of the first frame's (enhanced images)."""
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for item in (ds.get(groups) or [])[:1]:
            for anatomy in item.get("FrameAnatomySequence") or []:
                value = str(anatomy.get("FrameLaterality", "") or "").strip().upper()
                if value:
                    return value
    return ""


def image_view(ds: Dataset) -> ImageView:
    """The normalised laterality, view, modifier and kind of one image."""
    view, modifier = _code_view(ds)
    if not view:
        position = str(ds.get("ViewPosition", "") or "").strip().upper()
        view = position if position in VIEW_POSITIONS else ""
    laterality = (
        str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or _frame_laterality(ds) or "")
        .strip()
        .upper()
    )
    try:
        frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        frames = 1
    return ImageView(
        str(ds.get("SOPInstanceUID", "")),
        laterality if laterality in ("R", "L") else "",
        view,
        modifier,
        frames,
        str(ds.get("SOPClassUID", "")) == TOMOSYNTHESIS,
    )


def parse_required(text: str) -> tuple[str, ...]:
    """The views a programme requires, from their comma-separated form (``R-CC,L-CC,R-MLO,L-MLO``); raises
    ``ValueError`` naming the first entry that is not a laterality and a view."""
    out: list[str] = []
    for item in (part.strip().upper() for part in text.split(",")):
        lat, _, view = item.partition("-")
        if lat not in ("R", "L") or view not in VIEW_POSITIONS:
            raise ValueError(f"required view {item!r} is not a laterality and a view such as R-CC or L-MLO")
        if item not in out:
            out.append(item)
    return tuple(out)


def missing_screening_views(
    views: list[dict[str, Any]], required: tuple[str, ...] = STANDARD_VIEWS
) -> list[str]:
    """The ``required`` views (``R-CC``, ``L-MLO``...) that no plain image of ``views`` provides, 2D or
    tomosynthesis (a spot compression or a magnification gives no view)."""
    have = {f"{v['laterality']}-{v['view']}" for v in views if not v.get("modifier")}
    return [view for view in required if view not in have]


def image_problems(views: list[dict[str, Any]]) -> list[str]:
    """What is wrong with each image of ``views`` that lacks a view or a laterality (one line per image)."""
    problems = [ImageView(v["sop"], v["laterality"], v["view"]).problem for v in views]
    return [p for p in problems if p]


def flag_of(views: list[dict[str, Any]]) -> str:
    """Why a study must not be read as it is (an image without view or laterality), or empty."""
    return clip("; ".join(image_problems(views)))


def clip(text: str, size: int = 255) -> str:
    """``text`` cut to ``size`` characters (a flag column), marked with an ellipsis when cut."""
    return text if len(text) <= size else text[: size - 3] + "..."
