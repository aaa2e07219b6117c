"""Synthetic mammography beyond the four screening views, for the screening tests: a Breast Tomosynthesis
Image Storage instance (multi-frame, laterality in the functional groups, view in the View Code Sequence) and
an extra 2D view (exaggerated CC, or a spot compression) coded as a modality would code them."""

from __future__ import annotations

import copy

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from archipel.radiology.samples import uid

TOMOSYNTHESIS = "1.2.840.10008.5.1.4.1.1.13.1.3"
VIEW_CODE = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
    "XCCL": ("399192008", "cranio-caudal exaggerated laterally"),
}
SPOT = ("399055006", "Spot Compression")


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return item


def tomosynthesis(
    like: Dataset,
    laterality: str,
    view: str,
    *,
    frames: int = 8,
    size: int = 256,
    levels: list[int] | None = None,
    chest_wall: int = 0,
    view_in_groups: bool = False,
) -> Dataset:
    """A tomosynthesis stack of ``like``'s study (same woman, new series): ``frames`` frames of ``size`` x
    ``size``, frame ``n`` a flat grey of ``levels[n]`` (default 100 + 100 n), the laterality in the shared
    functional groups' Frame Anatomy and the view in the View Code Sequence (no ImageLaterality, no
    ViewPosition, as the IOD has them). With ``chest_wall``, a band of that level along the chest wall (the
    posterior edge, as PatientOrientation says: the right edge of a left view, the left edge of a right one);
    with ``view_in_groups``, the View Code Sequence in the shared functional groups instead of the top level."""
    levels = levels or [100 + 100 * n for n in range(frames)]
    ds = Dataset()
    for keyword in (
        "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
        "StudyDate", "StudyTime", "AccessionNumber", "StudyDescription", "StudyID", "ReferringPhysicianName",
    ):  # fmt: skip
        if keyword in like:
            setattr(ds, keyword, getattr(like, keyword))
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    ds.file_meta.MediaStorageSOPClassUID = TOMOSYNTHESIS
    ds.SOPClassUID = TOMOSYNTHESIS
    ds.SOPInstanceUID = uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesInstanceUID = uid()
    ds.Modality = "MG"
    ds.SeriesNumber, ds.InstanceNumber = 90, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
    ds.ContentDate, ds.ContentTime = like.StudyDate, "101500"
    ds.FrameOfReferenceUID = uid()
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    if not view_in_groups:
        ds.ViewCodeSequence = Sequence([_code(*VIEW_CODE[view])])
    anatomy = Dataset()
    anatomy.FrameLaterality = laterality
    anatomy.AnatomicRegionSequence = Sequence([_code("76752008", "Breast")])
    shared = Dataset()
    shared.FrameAnatomySequence = Sequence([anatomy])
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = "600", "1200"
    shared.FrameVOILUTSequence = Sequence([voi])
    if view_in_groups:
        shared.ViewCodeSequence = Sequence([_code(*VIEW_CODE[view])])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for n in range(frames):
        content = Dataset()
        content.DimensionIndexValues = [n + 1]
        item = Dataset()
        item.FrameContentSequence = Sequence([content])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = "600", "1200"
    ds.PatientOrientation = ["P", "F"] if laterality == "L" else ["A", "F"]
    pixels = np.stack([np.full((size, size), level, dtype=np.uint16) for level in levels])
    if chest_wall:
        band = max(size // 8, 1)
        if laterality == "L":
            pixels[:, :, size - band :] = chest_wall
        else:
            pixels[:, :, :band] = chest_wall
    ds.PixelData = pixels.tobytes()
    return ds


def extra_view(like: Dataset, view: str, *, spot: bool = False, level: int = 400) -> Dataset:
    """A copy of the 2D image ``like`` as another view of the same breast (new SOP Instance UID), coded by the
    View Code Sequence (with a spot-compression modifier when ``spot``), its pixels a flat grey of ``level``."""
    ds = copy.deepcopy(like)
    ds.SOPInstanceUID = uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = 50 + int(like.InstanceNumber)
    code = _code(*VIEW_CODE[view])
    if spot:
        code.ViewModifierCodeSequence = Sequence([_code(*SPOT)])
    ds.ViewCodeSequence = Sequence([code])
    ds.ViewPosition = view
    ds.PixelData = np.full((int(like.Rows), int(like.Columns)), level, dtype=np.uint16).tobytes()
    return ds


def tomosynthesis_exam(
    like: Dataset, levels: dict[str, list[int]], *, size: int = 256, chest_wall: int = 0
) -> list[Dataset]:
    """A tomosynthesis-only screening exam of ``like``'s study: one stack per view of ``levels`` (``"R-CC"`` ->
    the level of each of its frames), R-CC, L-CC, R-MLO, L-MLO as given, no 2D image."""
    out = []
    for number, (name, frames) in enumerate(levels.items()):
        laterality, view = name.split("-")
        ds = tomosynthesis(
            like, laterality, view, frames=len(frames), size=size, levels=frames, chest_wall=chest_wall
        )
        ds.SeriesNumber = 90 + number
        out.append(ds)
    return out
