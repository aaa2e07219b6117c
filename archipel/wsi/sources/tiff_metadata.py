"""Slide metadata out of TIFF tags: Aperio's ImageDescription, OME-XML, resolution tags."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

import tifffile

_UNIT_TO_MICRON = {"µm": 1.0, "um": 1.0, "micrometer": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


@dataclass(frozen=True)
class SlideMetadata:
    """What a source knows about the optics, and the vendor's key/values."""

    mpp: tuple[float, float] | None = None
    objective_power: float | None = None
    properties: dict[str, str] = field(default_factory=dict)


def svs_properties(description: str) -> dict[str, str]:
    """Aperio ImageDescription key/values: ``Aperio Image Library vX\\r\\n<geometry>|Key = Value|...``."""
    parts = description.split("|")
    props = {"aperio.header": parts[0].strip()}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        if sep:
            props[f"aperio.{key.strip()}"] = value.strip()
    return props


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except ValueError:
        return None


def svs_metadata(description: str) -> SlideMetadata:
    """MPP and AppMag from an Aperio description."""
    props = svs_properties(description)
    mpp = _float(props.get("aperio.MPP"))
    return SlideMetadata(
        mpp=(mpp, mpp) if mpp and mpp > 0 else None,
        objective_power=_float(props.get("aperio.AppMag")),
        properties=props,
    )


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def ome_metadata(xml: str, image_index: int = 0) -> SlideMetadata:
    """PhysicalSizeX/Y (converted to microns) and the objective's nominal magnification from OME-XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return SlideMetadata()
    images = [el for el in root if _local(el.tag) == "Image"]
    if not images:
        return SlideMetadata()
    image = images[min(image_index, len(images) - 1)]
    pixels = next((el for el in image if _local(el.tag) == "Pixels"), None)
    mpp = None
    props: dict[str, str] = {"ome.Image.Name": image.get("Name", "")}
    if pixels is not None:
        sizes = []
        for axis in ("X", "Y"):
            value = _float(pixels.get(f"PhysicalSize{axis}"))
            factor = _UNIT_TO_MICRON.get(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
            sizes.append(value * factor if value is not None and factor else None)
            props[f"ome.PhysicalSize{axis}"] = pixels.get(f"PhysicalSize{axis}", "")
        if sizes[0] and sizes[1]:
            mpp = (sizes[0], sizes[1])
    objective = None
    for el in root.iter():
        if _local(el.tag) == "Objective":
            objective = _float(el.get("NominalMagnification"))
            if objective:
                break
    return SlideMetadata(mpp=mpp, objective_power=objective, properties=props)


def resolution_metadata(page: tifffile.TiffPage) -> SlideMetadata:
    """MPP from XResolution/YResolution when the unit is centimetre or inch."""
    props: dict[str, str] = {}
    if page.software:
        props["tiff.Software"] = str(page.software)
    unit = page.tags.get("ResolutionUnit")
    xres, yres = page.tags.get("XResolution"), page.tags.get("YResolution")
    if unit is None or xres is None or yres is None:
        return SlideMetadata(properties=props)
    per = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
    try:
        x = xres.value[0] / xres.value[1]
        y = yres.value[0] / yres.value[1]
    except (TypeError, ZeroDivisionError, IndexError):
        return SlideMetadata(properties=props)
    if per is None or x <= 0 or y <= 0:
        return SlideMetadata(properties=props)
    return SlideMetadata(mpp=(per / x, per / y), properties=props)
