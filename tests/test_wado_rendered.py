"""WADO-RS rendered images and thumbnails against a running server: media types, windows, viewports, frames."""

from __future__ import annotations

import numpy as np
import pytest

from tests.dicomweb_study import StoredStudy, get, image, store_study, url
from tests.support import ArchipelServer


@pytest.fixture(scope="module")
def study(server: ArchipelServer) -> StoredStudy:
    return store_study(server)


def test_rendered_is_jpeg_by_default_and_png_on_request(server: ArchipelServer, study: StoredStudy) -> None:
    ct = study.ct[0]
    jpeg = image(get(server, url(server, ct, "/rendered")))
    assert (jpeg.format, jpeg.size) == ("JPEG", (64, 64))
    png = image(get(server, url(server, ct, "/rendered"), "image/png"))
    assert png.format == "PNG"
    assert get(server, url(server, ct, "/rendered"), "application/dicom").status_code == 406


def test_the_window_parameter_controls_the_grey_levels(server: ArchipelServer, study: StoredStudy) -> None:
    ct = study.ct[0]
    below = np.asarray(image(get(server, url(server, ct, "/rendered?window=-5000,10,linear"), "image/png")))
    above = np.asarray(image(get(server, url(server, ct, "/rendered?window=5000,10"), "image/png")))
    assert below.min() == 255 and above.max() == 0
    own = np.asarray(image(get(server, url(server, ct, "/rendered"), "image/png")))
    assert 0 < own.mean() < 255  # WindowCenter 40 / Width 400 from the data set
    assert get(server, url(server, ct, "/rendered?window=40"), "image/png").status_code == 400


def test_viewport_and_frame_rendering(server: ArchipelServer, study: StoredStudy) -> None:
    small = image(get(server, url(server, study.ct[0], "/rendered?viewport=32,16")))
    assert small.size == (16, 16)
    frame2 = np.asarray(image(get(server, url(server, study.jpeg, "/frames/2/rendered"), "image/png")))
    bottom_right = frame2[40:, 40:].reshape(-1, 3).mean(axis=0)
    assert bottom_right[1] > 150 and bottom_right[0] < 60 and bottom_right[2] < 60  # frame 2 is green
    assert get(server, url(server, study.jpeg, "/frames/9/rendered")).status_code == 400


def test_thumbnails_at_study_series_and_instance_level(server: ArchipelServer, study: StoredStudy) -> None:
    ct = study.ct[0]
    base = f"{server.url}/dicom-web/studies/{study.study_uid}"
    for target in (
        f"{base}/thumbnail",
        f"{base}/series/{ct.SeriesInstanceUID}/thumbnail",
        url(server, ct, "/thumbnail"),
    ):
        thumb = image(get(server, target, "image/jpeg"))
        assert thumb.format == "JPEG" and max(thumb.size) <= 128
