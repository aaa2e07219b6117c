"""The DICOM WSI writer: passthrough, offset tables, concatenation, associated images, and three readers.

Every instance written here goes through dciodvfy; wsidicom, OpenSlide 4 and Orthanc's WSI plugin read them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import imagecodecs
import numpy as np
import openslide
import pydicom
import pytest
from pydicom.encaps import get_frame
from wsidicom import WsiDicom

from archipel.tiles.codestream import inspect_codestream
from archipel.tiles.jpeg import merge_tables
from archipel.tiles.pyramid import Codec, RawTile, Size
from archipel.wsi.dicom import (
    AssociatedImage,
    ImageFlavor,
    OpticalPath,
    Patient,
    Series,
    Slide,
    SlideMetadata,
    Specimen,
    Study,
    TablePolicy,
    WriteOptions,
    write_dicom_wsi,
)
from tests.support import free_port, wait_until
from tests.wsi_dicom_pyramids import ArrayPyramid, j2k, jpeg_rgb, slide_image

#: dciodvfy warnings accepted, each with its reason. Any "Error" line fails.
ACCEPTED_WARNINGS: dict[str, str] = {
    # None today: the metadata below fills Study Date/Time/ID. With a case study that has none, dciodvfy warns
    # "Missing attribute or value that would be needed to build DICOMDIR"; those Type 2 values may be empty.
}


def slide_meta(series_uid: str = "1.2.826.0.1.3680043.10.1082.1.1") -> SlideMetadata:
    """Metadata of an invented case."""
    return SlideMetadata(
        patient=Patient(
            "PAT-0001", issuer="SITE-A", name="TEST^SLIDE", birth_date=dt.date(1970, 1, 2), sex="F"
        ),
        study=Study(
            "1.2.826.0.1.3680043.10.1082.1",
            accession="ACC-42",
            study_id="CASE-7",
            date=dt.datetime(2024, 5, 1, 9),
        ),
        series=Series(series_uid, number=3),
        specimen=Specimen("SLIDE-BC-9", stains=("HE", "saffron")),
        slide=Slide(barcode="SLIDE-BC-9", label_text="CONFIDENTIAL LABEL"),
        optical_path=OpticalPath(objective_power=20),
        acquired=dt.datetime(2024, 5, 1, 10, 30),
        pyramid_label="H&E block A1",
    )


#: The one dciodvfy error accepted, and only on the parts of a concatenation: dciodvfy checks a TILED_FULL
#: instance's Number of Frames against the whole tile grid and does not allow for a concatenation, whose parts
#: share the grid's frames (PS3.3 C.7.6.16.2.2.4); wsidicom reads the parts as one image.
CONCATENATION_PART_ERROR = "NumberOfFrames does not match expected value for tiled total pixel matrix"


def dciodvfy_problems(path: Path, concatenation_part: bool = False) -> list[str]:
    """dciodvfy's errors and unaccepted warnings for one file."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    lines = (out.stdout + out.stderr).splitlines()
    problems = [
        line
        for line in lines
        if line.startswith("Error")
        or (line.startswith("Warning") and not any(w in line for w in ACCEPTED_WARNINGS))
    ]
    if concatenation_part:
        problems = [line for line in problems if CONCATENATION_PART_ERROR not in line]
    return problems


def assert_valid(paths: list[Path]) -> None:
    """Every file passes dciodvfy (a concatenation's parts up to :data:`CONCATENATION_PART_ERROR`)."""
    problems = {p.name: dciodvfy_problems(p, concatenation_part="-p" in p.name) for p in paths}
    assert not any(problems.values()), problems


def frames_of(path: Path) -> list[bytes]:
    """Every frame of an instance, read one at a time through its offset table."""
    ds = pydicom.dcmread(path, defer_size=1024)
    count = int(ds.NumberOfFrames)
    eot = None
    if "ExtendedOffsetTable" in ds:
        offsets = np.frombuffer(ds.ExtendedOffsetTable, "<u8").tolist()
        lengths = np.frombuffer(ds.ExtendedOffsetTableLengths, "<u8").tolist()
        eot = (offsets, lengths)
    with path.open("rb") as f:
        f.seek(_pixel_data_value_offset(path))
        return [get_frame(f, k, number_of_frames=count, extended_offsets=eot) for k in range(count)]


def _pixel_data_value_offset(path: Path) -> int:
    data = path.read_bytes()
    # (7FE0,0010) OB with undefined length; the value starts after the 12-byte element header.
    return data.rindex(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff") + 12


def unpadded(frame: bytes, tile: bytes) -> bytes:
    """A frame without the NUL byte that pads an odd-length tile to an even fragment."""
    return frame[: len(tile)] if len(frame) == len(tile) + 1 and frame[-1] == 0 else frame


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return slide_image(600, 420)


@pytest.fixture(scope="module")
def jpeg_pyramid(image: np.ndarray) -> ArrayPyramid:
    return ArrayPyramid(image)


@pytest.fixture(scope="module")
def written(jpeg_pyramid: ArrayPyramid, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The JPEG pyramid with label, overview and thumbnail, written once for the read-only tests."""
    out = tmp_path_factory.mktemp("wsi-dicom")
    associated = [
        AssociatedImage(ImageFlavor.LABEL, pixels=slide_image(160, 120, seed=1)),
        AssociatedImage(ImageFlavor.OVERVIEW, pixels=slide_image(300, 100, seed=2)),
        AssociatedImage(ImageFlavor.THUMBNAIL, pixels=jpeg_pyramid.levels_pixels[-1]),
    ]
    report = write_dicom_wsi(jpeg_pyramid, slide_meta(), out, associated)
    assert [p.name for p in report.files] == [
        "level-0.dcm",
        "level-1.dcm",
        "level-2.dcm",
        "label.dcm",
        "overview.dcm",
        "thumbnail.dcm",
    ]
    return out


def test_every_instance_of_a_slide_passes_dciodvfy_without_errors(written: Path) -> None:
    assert_valid(sorted(written.glob("*.dcm")))


def test_levels_share_pyramid_frame_of_reference_and_tiled_full_geometry(
    written: Path, jpeg_pyramid: ArrayPyramid
) -> None:
    datasets = [pydicom.dcmread(written / f"level-{n}.dcm", stop_before_pixels=True) for n in range(3)]
    assert len({ds.PyramidUID for ds in datasets}) == 1
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    for ds, level in zip(datasets, jpeg_pyramid.levels, strict=True):
        assert ds.DimensionOrganizationType == "TILED_FULL"
        assert (ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows) == (level.size.width, level.size.height)
        assert int(ds.NumberOfFrames) == level.tile_count
        spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
        assert float(spacing[0]) == pytest.approx(0.25e-3 * level.downsample)
        assert ds.AccessionNumber == "ACC-42" and ds.ContainerIdentifier == "SLIDE-BC-9"
        assert ds.BarcodeValue == "SLIDE-BC-9" and ds.LabelText == ""
    assert list(datasets[0].ImageType) == ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    assert list(datasets[1].ImageType) == ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    label = pydicom.dcmread(written / "label.dcm", stop_before_pixels=True)
    assert label.ImageType[2] == "LABEL" and label.SpecimenLabelInImage == "YES"
    assert label.LabelText == "CONFIDENTIAL LABEL"


def test_passthrough_frames_are_the_source_tiles_byte_for_byte(
    written: Path, jpeg_pyramid: ArrayPyramid
) -> None:
    for level in jpeg_pyramid.levels:
        frames = frames_of(written / f"level-{level.index}.dcm")
        for k, frame in enumerate(frames):
            tile = jpeg_pyramid.stored(level.index, k % level.grid.width, k // level.grid.width).data
            assert sha(unpadded(frame, tile)) == sha(tile), (level.index, k)


def test_frame_k_is_read_at_random_through_the_basic_offset_table(
    written: Path, jpeg_pyramid: ArrayPyramid
) -> None:
    path = written / "level-0.dcm"
    level = jpeg_pyramid.levels[0]
    with path.open("rb") as f:
        f.seek(_pixel_data_value_offset(path))
        frame = get_frame(f, 13, number_of_frames=level.tile_count)
    tile = jpeg_pyramid.stored(0, 13 % level.grid.width, 13 // level.grid.width).data
    assert unpadded(frame, tile) == tile


def test_wsidicom_reads_every_level_and_a_region_matches_the_source(
    written: Path, jpeg_pyramid: ArrayPyramid
) -> None:
    with WsiDicom.open(written) as slide:
        assert [(lv.size.width, lv.size.height) for lv in slide.levels] == [
            (lv.size.width, lv.size.height) for lv in jpeg_pyramid.levels
        ]
        assert slide.labels is not None and slide.overviews is not None
        for index, level in enumerate(jpeg_pyramid.levels):
            width, height = min(200, level.size.width - 50), min(100, level.size.height - 20)
            region = np.asarray(slide.read_region((50, 20), index, (width, height)).convert("RGB"))
            expected = decoded_region(jpeg_pyramid, index, 50, 20, width, height)
            assert np.abs(region.astype(int) - expected.astype(int)).mean() < 1.0


def decoded_region(pyramid: ArrayPyramid, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The region as the source's own tiles decode (so passthrough should match up to decoder rounding)."""
    lv = pyramid.levels[level]
    full = np.concatenate(
        [
            np.concatenate([pyramid.read_tile(level, c, r) for c in range(lv.grid.width)], axis=1)
            for r in range(lv.grid.height)
        ],
        axis=0,
    )
    return full[y : y + height, x : x + width]


def test_openslide_4_opens_the_series_and_reads_a_region(written: Path, jpeg_pyramid: ArrayPyramid) -> None:
    slide = openslide.OpenSlide(str(written / "level-0.dcm"))
    try:
        assert slide.level_dimensions == tuple((lv.size.width, lv.size.height) for lv in jpeg_pyramid.levels)
        assert {"label", "macro", "thumbnail"} & set(slide.associated_images)
        region = np.asarray(slide.read_region((100, 60), 0, (256, 128)).convert("RGB"))
    finally:
        slide.close()
    expected = decoded_region(jpeg_pyramid, 0, 100, 60, 256, 128)
    assert np.abs(region.astype(int) - expected.astype(int)).mean() < 1.0


def test_writing_the_same_slide_twice_gives_the_same_instances(
    jpeg_pyramid: ArrayPyramid, written: Path, tmp_path: Path
) -> None:
    again = write_dicom_wsi(jpeg_pyramid, slide_meta(), tmp_path).files
    for path in again:
        first = pydicom.dcmread(written / path.name, stop_before_pixels=True)
        assert pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID == first.SOPInstanceUID


def test_rgb_jpeg_tiles_keep_their_app14_marker_and_say_photometric_rgb(
    image: np.ndarray, tmp_path: Path
) -> None:
    pyramid = ArrayPyramid(image, encoder=jpeg_rgb, downsamples=(1, 2))
    files = write_dicom_wsi(pyramid, slide_meta(), tmp_path).files
    assert_valid(files)
    ds = pydicom.dcmread(files[0])
    assert ds.PhotometricInterpretation == "RGB"
    frame = frames_of(files[0])[0]
    tile = pyramid.stored(0, 0, 0).data
    assert b"Adobe" in frame[:64] and unpadded(frame, tile) == tile
    decoded = ds.pixel_array[0]
    assert np.abs(decoded.astype(int) - pyramid.read_tile(0, 0, 0).astype(int)).mean() < 1.0


@pytest.mark.parametrize(
    ("mct", "reversible", "photometric"),
    [(True, False, "YBR_ICT"), (True, True, "YBR_RCT"), (False, True, "RGB")],
)
def test_jpeg2000_photometric_follows_the_colour_transform(
    image: np.ndarray, tmp_path: Path, mct: bool, reversible: bool, photometric: str
) -> None:
    pyramid = ArrayPyramid(
        image[:256, :384], encoder=j2k(mct, reversible), codec=Codec.JPEG2000, downsamples=(1,)
    )
    report = write_dicom_wsi(pyramid, slide_meta(), tmp_path)
    assert_valid(report.files)
    assert report.levels[0].passed == pyramid.levels[0].tile_count
    ds = pydicom.dcmread(report.files[0], stop_before_pixels=True)
    assert ds.PhotometricInterpretation == photometric
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.91"
    with WsiDicom.open(tmp_path) as slide:
        region = np.asarray(slide.read_region((0, 0), 0, (256, 256)).convert("RGB"))
    assert np.abs(region.astype(int) - decoded_region(pyramid, 0, 0, 0, 256, 256).astype(int)).mean() < 1.5


def split_tables(jpeg: bytes) -> tuple[bytes, bytes]:
    """An abbreviated tile and its tables (as TIFF's JPEGTables), from a complete JPEG."""
    pos, tables, rest = 2, b"", b""
    while True:
        marker, length = jpeg[pos + 1], int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        segment = jpeg[pos : pos + 2 + length]
        if marker == 0xDA:
            rest += jpeg[pos:]
            break
        if marker in (0xDB, 0xC4):
            tables += segment
        else:
            rest += segment
        pos += 2 + length
    return b"\xff\xd8" + rest, b"\xff\xd8" + tables + b"\xff\xd9"


def test_abbreviated_jpeg_tiles_pass_through_once_their_tables_are_reinjected(
    image: np.ndarray, tmp_path: Path
) -> None:
    pyramid = ArrayPyramid(image[:256, :256], downsamples=(1,))
    completed: dict[tuple[int, int], bytes] = {}
    for col in range(2):
        for row in range(2):
            abbreviated, tables = split_tables(pyramid.stored(0, col, row).data)
            assert not inspect_codestream(abbreviated, Codec.JPEG).complete
            completed[col, row] = merge_tables(abbreviated, tables)
            pyramid.overrides[0, col, row] = RawTile(completed[col, row], Codec.JPEG, "YBR_FULL_422")
    report = write_dicom_wsi(pyramid, slide_meta(), tmp_path)
    assert report.levels[0].passed == 4
    frames = frames_of(report.files[0])
    assert [unpadded(f, completed[k % 2, k // 2]) for k, f in enumerate(frames)] == [
        completed[c] for c in [(0, 0), (1, 0), (0, 1), (1, 1)]
    ]
    decoded = pydicom.dcmread(report.files[0]).pixel_array
    assert np.abs(decoded[3].astype(int) - pyramid.read_tile(0, 1, 1).astype(int)).mean() < 1.0


def test_abbreviated_jpeg_tile_without_tables_is_reencoded_never_written_undecodable(
    image: np.ndarray, tmp_path: Path
) -> None:
    pyramid = ArrayPyramid(image[:256, :256], downsamples=(1,))
    abbreviated, _ = split_tables(pyramid.stored(0, 1, 0).data)
    pyramid.overrides[0, 1, 0] = RawTile(abbreviated, Codec.JPEG, "YBR_FULL_422")
    report = write_dicom_wsi(pyramid, slide_meta(), tmp_path)
    assert report.levels[0].passed == 3 and report.levels[0].encoded == {"abbreviated": 1}
    decoded = pydicom.dcmread(report.files[0]).pixel_array
    assert np.abs(decoded[1].astype(int) - pyramid.read_tile(0, 1, 0).astype(int)).mean() < 3.0


def test_zero_length_tile_becomes_a_blank_white_frame(image: np.ndarray, tmp_path: Path) -> None:
    pyramid = ArrayPyramid(image[:256, :384], downsamples=(1,))
    pyramid.overrides[0, 2, 1] = RawTile(b"", Codec.JPEG, "YBR_FULL_422")
    report = write_dicom_wsi(pyramid, slide_meta(), tmp_path)
    assert_valid(report.files)
    assert report.levels[0].encoded == {"blank": 1}
    frames = pydicom.dcmread(report.files[0]).pixel_array
    assert frames[5].min() >= 250
    assert (
        pydicom.dcmread(report.files[0], stop_before_pixels=True).PhotometricInterpretation == "YBR_FULL_422"
    )


def test_a_level_mixing_rgb_and_ycbcr_tiles_reencodes_the_odd_ones_to_one_photometric(
    image: np.ndarray, tmp_path: Path
) -> None:
    pyramid = ArrayPyramid(image[:256, :384], downsamples=(1,))
    rgb, _ = jpeg_rgb(pyramid.read_tile(0, 1, 1))
    pyramid.overrides[0, 1, 1] = RawTile(rgb, Codec.JPEG, "RGB")
    pyramid.overrides[0, 2, 0] = None  # no stored tile at all: decoded and encoded
    report = write_dicom_wsi(pyramid, slide_meta(), tmp_path)
    assert report.levels[0].passed == 4
    assert report.levels[0].encoded == {"photometric": 1, "no-raw": 1}
    frames = frames_of(report.files[0])
    assert all(inspect_codestream(f, Codec.JPEG).photometric == "YBR_FULL_422" for f in frames)


def test_a_level_over_the_instance_size_limit_becomes_a_concatenation_wsidicom_reads(
    jpeg_pyramid: ArrayPyramid, tmp_path: Path
) -> None:
    report = write_dicom_wsi(
        jpeg_pyramid, slide_meta(), tmp_path, options=WriteOptions(max_instance_bytes=20_000)
    )
    parts = sorted(tmp_path.glob("level-0-p*.dcm"), key=lambda p: int(p.stem.rsplit("p", 1)[1]))
    assert len(parts) >= 2
    assert_valid(report.files)
    offset = 0
    for number, part in enumerate(parts, 1):
        ds = pydicom.dcmread(part, stop_before_pixels=True)
        assert ds.InConcatenationNumber == number and ds.ConcatenationFrameOffsetNumber == offset
        assert part.stat().st_size < 20_000 + 16_000  # pixel data under the limit, plus the header
        offset += int(ds.NumberOfFrames)
    assert offset == jpeg_pyramid.levels[0].tile_count
    with WsiDicom.open(tmp_path) as slide:
        region = np.asarray(slide.read_region((0, 0), 0, (600, 420)).convert("RGB"))
    assert (
        np.abs(region.astype(int) - decoded_region(jpeg_pyramid, 0, 0, 0, 600, 420).astype(int)).mean() < 1.0
    )


def test_extended_offset_table_locates_every_frame_for_pydicom_and_wsidicom(
    jpeg_pyramid: ArrayPyramid, tmp_path: Path
) -> None:
    report = write_dicom_wsi(
        jpeg_pyramid, slide_meta(), tmp_path, options=WriteOptions(table=TablePolicy.EXTENDED)
    )
    assert_valid(report.files)
    ds = pydicom.dcmread(report.files[0], stop_before_pixels=True)
    assert "ExtendedOffsetTable" in ds
    level = jpeg_pyramid.levels[0]
    for k, frame in enumerate(frames_of(report.files[0])):
        tile = jpeg_pyramid.stored(0, k % level.grid.width, k // level.grid.width).data
        assert unpadded(frame, tile) == tile
    with WsiDicom.open(tmp_path) as slide:
        region = np.asarray(slide.read_region((300, 200), 0, (200, 200)).convert("RGB"))
    assert (
        np.abs(region.astype(int) - decoded_region(jpeg_pyramid, 0, 300, 200, 200, 200).astype(int)).mean()
        < 1
    )


def test_a_basic_offset_table_that_would_overflow_is_replaced_by_the_extended_one(
    jpeg_pyramid: ArrayPyramid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 GiB of tiles would not fit a lean test: the Basic table's limit is lowered instead, so that its
    # offsets "overflow" after a few frames, as they would past 4 GiB.
    monkeypatch.setattr("archipel.wsi.dicom.encapsulated.BOT_LIMIT", 30_000)
    seen: list[tuple[int, int]] = []
    (tmp_path / "level-0.dcm.partial").write_bytes(b"left by a killed run")
    report = write_dicom_wsi(
        jpeg_pyramid, slide_meta(), tmp_path, progress=lambda done, total: seen.append((done, total))
    )
    assert not list(tmp_path.glob("*.partial"))
    assert "ExtendedOffsetTable" in pydicom.dcmread(report.files[0], stop_before_pixels=True)
    assert "ExtendedOffsetTable" not in pydicom.dcmread(report.files[2], stop_before_pixels=True)
    assert_valid(report.files)
    total = sum(level.tile_count for level in jpeg_pyramid.levels)
    assert seen[-1] == (total, total) and all(t == total for _, t in seen)


def test_excluding_the_label_omits_the_label_and_overview_and_its_text(
    jpeg_pyramid: ArrayPyramid, tmp_path: Path
) -> None:
    associated = [
        AssociatedImage(ImageFlavor.LABEL, pixels=slide_image(160, 120, seed=1)),
        AssociatedImage(ImageFlavor.OVERVIEW, pixels=slide_image(300, 100, seed=2)),
        AssociatedImage(ImageFlavor.THUMBNAIL, pixels=jpeg_pyramid.levels_pixels[-1]),
    ]
    report = write_dicom_wsi(
        jpeg_pyramid, slide_meta(), tmp_path, associated, options=WriteOptions(include_label=False)
    )
    names = {p.name for p in report.files}
    assert "label.dcm" not in names and "overview.dcm" not in names and "thumbnail.dcm" in names
    for path in report.files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.SpecimenLabelInImage == "NO"
        assert "CONFIDENTIAL" not in str(ds)


def test_a_pyramid_without_pixel_size_is_refused_with_the_reason(image: np.ndarray, tmp_path: Path) -> None:
    pyramid = ArrayPyramid(image[:128, :128], downsamples=(1,), mpp_xy=None)
    with pytest.raises(ValueError, match="mpp"):
        write_dicom_wsi(pyramid, slide_meta(), tmp_path / "out")
    assert not any((tmp_path / "out").glob("*.dcm")) if (tmp_path / "out").exists() else True


def test_stored_associated_jpeg_passes_through_unchanged(jpeg_pyramid: ArrayPyramid, tmp_path: Path) -> None:
    stored = bytes(imagecodecs.jpeg8_encode(slide_image(300, 100, seed=2), level=80))
    overview = AssociatedImage(ImageFlavor.OVERVIEW, raw=RawTile(stored, Codec.JPEG, "YBR_FULL_422"))
    report = write_dicom_wsi(jpeg_pyramid, slide_meta(), tmp_path, [overview])
    path = tmp_path / "overview.dcm"
    assert_valid([path])
    assert unpadded(frames_of(path)[0], stored) == stored
    assert pydicom.dcmread(path, stop_before_pixels=True).TotalPixelMatrixColumns == 300
    assert path in report.files


class OrthancWsi:
    """Orthanc with its WSI plugin (Debian orthanc-wsi) on free loopback ports."""

    PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancWSI.so")

    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = free_port()
        config = {
            "Name": "archipel-wsi-test",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "DicomPort": free_port(),
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [str(self.PLUGIN)],
            "HttpDescribeErrors": True,
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = (root / "orthanc.log").open("ab")
        binary = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
        self.proc = subprocess.Popen(
            [binary, str(root / "orthanc.json")], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_until(self._ready, 60, "Orthanc to answer")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"Orthanc exited; see {self.root / 'orthanc.log'}")
        try:
            return httpx.get(self.url("/system"), timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancWsi]:
    if not OrthancWsi.PLUGIN.exists():
        pytest.fail("Orthanc's WSI plugin is missing: install the Debian package orthanc-wsi")
    server = OrthancWsi(tmp_path_factory.mktemp("orthanc-wsi"))
    yield server
    server.stop()


@pytest.mark.e2e
def test_orthanc_wsi_plugin_serves_a_tile_of_every_level(
    orthanc: OrthancWsi, written: Path, jpeg_pyramid: ArrayPyramid
) -> None:
    series = ""
    for path in sorted(written.glob("level-*.dcm")):
        r = httpx.post(orthanc.url("/instances"), content=path.read_bytes(), timeout=30)
        r.raise_for_status()
        series = r.json()["ParentSeries"]
    pyramid = httpx.get(orthanc.url(f"/wsi/pyramids/{series}"), timeout=30).json()
    assert [tuple(s) for s in pyramid["Sizes"]] == [
        (lv.size.width, lv.size.height) for lv in jpeg_pyramid.levels
    ]
    for index, level in enumerate(jpeg_pyramid.levels):
        col, row = level.grid.width - 1, level.grid.height - 1
        r = httpx.get(orthanc.url(f"/wsi/tiles/{series}/{index}/{col}/{row}"), timeout=30)
        assert r.status_code == 200, r.text
        tile = np.asarray(imagecodecs.imread(r.content))[..., :3]
        expected = jpeg_pyramid.read_tile(index, col, row)
        assert tile.shape == expected.shape
        assert np.abs(tile.astype(int) - expected.astype(int)).mean() < 2.0


def test_thumbnail_pixel_spacing_scales_level_zero(written: Path, jpeg_pyramid: ArrayPyramid) -> None:
    ds = pydicom.dcmread(written / "thumbnail.dcm", stop_before_pixels=True)
    thumb = Size(ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows)
    spacing = float(ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing[1])
    assert spacing == pytest.approx(0.25e-3 * jpeg_pyramid.levels[0].size.width / thumb.width)


@pytest.mark.e2e
def test_a_synthetic_svs_converts_with_every_jpeg_tile_passed_through(tmp_path: Path) -> None:
    from archipel.wsi.convert import associated_images
    from archipel.wsi.sources.detect import open_slide
    from archipel.wsi.synthetic import write_svs

    svs = write_svs(tmp_path / "slide.svs", 1800, 1300, tile=240, zero_length_tiles=[(2, 1)])
    with open_slide(svs) as source:
        report = write_dicom_wsi(source, slide_meta(), tmp_path / "dicom", associated_images(source))
        assert_valid(report.files)
        assert {p.name for p in report.files} >= {"label.dcm", "overview.dcm", "thumbnail.dcm"}
        for level in source.levels:
            frames = frames_of(tmp_path / "dicom" / f"level-{level.index}.dcm")
            for k, frame in enumerate(frames):
                raw = source.read_raw_tile(level.index, k % level.grid.width, k // level.grid.width)
                assert raw is not None and unpadded(frame, raw.data) == raw.data, (level.index, k)
        sizes = [(lv.size.width, lv.size.height) for lv in source.levels]
        width, height = sizes[0]
    svs_slide, dicom_slide = openslide.OpenSlide(str(svs)), openslide.OpenSlide(str(report.files[0]))
    try:
        assert list(dicom_slide.level_dimensions) == sizes
        a = np.asarray(svs_slide.read_region((0, 0), 0, (width, height))).astype(int)
        b = np.asarray(dicom_slide.read_region((0, 0), 0, (width, height))).astype(int)
    finally:
        svs_slide.close()
        dicom_slide.close()
    # OpenSlide leaves Aperio's zero-length tile transparent; the DICOM frame there is white. Elsewhere the
    # passed-through tiles decode to the same pixels.
    opaque = a[..., 3] == 255
    assert np.array_equal(a[opaque][:, :3], b[opaque][:, :3])
    assert (b[~opaque][:, :3] >= 250).all()


def test_aperio_ycbcr_jpeg2000_tiles_are_re_encoded_since_the_wsi_iod_has_no_ybr_full_jpeg_2000(
    tmp_path: Path,
) -> None:
    from archipel.wsi.sources.detect import open_slide
    from archipel.wsi.synthetic import SvsCompression, write_svs

    svs = write_svs(
        tmp_path / "slide.svs", 720, 480, tile=240, downsamples=(1,), compression=SvsCompression.J2K_YCBCR
    )
    with open_slide(svs) as source:
        assert source.read_raw_tile(0, 0, 0).photometric == "YBR_FULL"  # type: ignore[union-attr]
        report = write_dicom_wsi(source, slide_meta(), tmp_path / "dicom")
        assert_valid(report.files)
        expected = source.read_tile(0, 1, 1)
    ds = pydicom.dcmread(report.files[0])
    assert ds.PhotometricInterpretation != "YBR_FULL"
    wsi = WsiDicom.open(tmp_path / "dicom")
    try:
        got = np.asarray(wsi.read_tile(0, (1, 1))).astype(int)[..., :3]
    finally:
        wsi.close()
    assert np.abs(got - expected.astype(int)).mean() < 4  # colours kept (re-encoded, lossy)
