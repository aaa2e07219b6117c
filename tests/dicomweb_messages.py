"""Building STOW-RS requests and reading multipart responses in the DICOMweb tests.

Responses are parsed with python-multipart, independently of the writer under test.
"""

from __future__ import annotations

import hashlib
import uuid

import httpx
from pydicom.dataset import Dataset
from python_multipart.multipart import MultipartParser, parse_options_header

from archipel.radiology.samples import to_bytes
from tests.support import ArchipelServer


def sha256(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def stow_body(parts: list[bytes], boundary: str, part_type: str = "application/dicom") -> bytes:
    """A multipart/related body whose parts are ``parts``."""
    out = bytearray()
    for part in parts:
        out += f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode()
        out += part + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def stow(
    server: ArchipelServer,
    items: list[Dataset | bytes],
    *,
    study: str | None = None,
    user: str = "radiologist",
) -> httpx.Response:
    """POST ``items`` (datasets or raw part bytes) to STOW-RS."""
    boundary = f"test-{uuid.uuid4().hex}"
    parts = [item if isinstance(item, bytes) else to_bytes(item) for item in items]
    url = server.url + "/dicom-web/studies" + (f"/{study}" if study else "")
    headers = {
        **server.headers(user),
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
    }
    return httpx.post(url, content=stow_body(parts, boundary), headers=headers, timeout=60)


def read_multipart(response: httpx.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response: (lower-cased headers, content)."""
    media, params = parse_options_header(response.headers["content-type"])
    assert media == b"multipart/related", response.headers["content-type"]
    parts: list[tuple[dict[str, str], bytes]] = []
    state: dict[str, object] = {}

    def begin() -> None:
        state.update(headers={}, data=bytearray(), name=b"", value=b"")

    def field(data: bytes, start: int, end: int) -> None:
        state["name"] = bytes(state["name"]) + data[start:end]  # type: ignore[arg-type]

    def value(data: bytes, start: int, end: int) -> None:
        state["value"] = bytes(state["value"]) + data[start:end]  # type: ignore[arg-type]

    def header_end() -> None:
        headers = state["headers"]
        assert isinstance(headers, dict)
        headers[bytes(state["name"]).decode().lower()] = bytes(state["value"]).decode()  # type: ignore[arg-type]
        state.update(name=b"", value=b"")

    def data(chunk: bytes, start: int, end: int) -> None:
        buffer = state["data"]
        assert isinstance(buffer, bytearray)
        buffer += chunk[start:end]

    def end() -> None:
        parts.append((state["headers"], bytes(state["data"])))  # type: ignore[arg-type]

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": begin,
            "on_header_field": field,
            "on_header_value": value,
            "on_header_end": header_end,
            "on_part_data": data,
            "on_part_end": end,
        },
    )
    parser.write(response.content)
    parser.finalize()
    return parts


def sop_items(body: dict[str, object], tag: str) -> list[dict[str, object]]:
    """Items of a sequence (``00081199`` referenced, ``00081198`` failed) in a STOW-RS response."""
    element = body.get(tag)
    if not isinstance(element, dict):
        return []
    return list(element.get("Value", []))


def first_value(item: dict[str, object], tag: str) -> object:
    """The first value of ``tag`` in a DICOM JSON object (``None`` when empty)."""
    element = item.get(tag)
    if not isinstance(element, dict) or not element.get("Value"):
        return None
    return element["Value"][0]
