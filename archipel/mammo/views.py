"""Mammography views normalised from the image header: laterality (R/L) and view (CC, MLO, ...).

The view comes from the View Code Sequence (SNOMED CT or the older SNOMED RT codes of DICOM CID 4014) when
present, else from ViewPosition; the laterality from ImageLaterality, else Laterality. An image for which
either is missing is reported, so that its episode is flagged rather than read silently.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "399099002": "XCCL",
    "R-1024A": "XCCL",
    "399192003": "XCCM",
    "R-1024B": "XCCM",
}
VIEW_POSITIONS = frozenset({"CC", "MLO", "ML", "LM", "XCCL", "XCCM", "FB", "SIO", "LMO", "AT"})
#: The views a screening exam needs for each breast.
SCREENING_VIEWS = ("CC", "MLO")


@dataclass(frozen=True)
class ImageView:
    """One image's laterality and view (empty when the header does not say), and why it is unusable."""

    sop_uid: str
    laterality: str
    view: str

    @property
    def problem(self) -> str:
        """Empty when the image has both a laterality and a view, else what is missing."""
        missing = [
            name for name, value in (("laterality", self.laterality), ("view", self.view)) if not value
        ]
        return f"image {self.sop_uid} has no {' or '.join(missing)}" if missing else ""

    def as_dict(self) -> dict[str, str]:
        """JSON form."""
        return {"sop": self.sop_uid, "laterality": self.laterality, "view": self.view}


def _code_view(ds: Dataset) -> str:
    for item in ds.get("ViewCodeSequence") or []:
        name = VIEW_CODES.get(str(item.get("CodeValue", "")).strip())
        if name:
            return name
    return ""


def image_view(ds: Dataset) -> ImageView:
    """The normalised laterality and view of one image."""
    view = _code_view(ds)
    if not view:
        position = str(ds.get("ViewPosition", "") or "").strip().upper()
        view = position if position in VIEW_POSITIONS else ""
    laterality = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "").strip().upper()
    return ImageView(str(ds.get("SOPInstanceUID", "")), laterality if laterality in ("R", "L") else "", view)


def missing_screening_views(views: list[dict[str, str]]) -> list[str]:
    """The standard views (``R-CC``, ``L-MLO``...) that none of ``views`` provides."""
    have = {f"{v['laterality']}-{v['view']}" for v in views}
    return [f"{lat}-{view}" for lat in ("R", "L") for view in SCREENING_VIEWS if f"{lat}-{view}" not in have]


def flag_of(views: list[dict[str, str]]) -> str:
    """Why a study must not be read as it is (an image without view or laterality), or empty."""
    problems = [ImageView(v["sop"], v["laterality"], v["view"]).problem for v in views]
    problems = [p for p in problems if p]
    if not problems:
        return ""
    text = "; ".join(problems)
    return text if len(text) <= 255 else text[:252] + "..."
