"""The tile route's fast paths: cached tiles answered from memory ahead of the framework (same bytes, same access
rules), and signed tile URLs that nginx checks itself (secure_link) in front of a slide's exported tiles."""

from __future__ import annotations

import gc
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from archipel.cli.services import http_app
from archipel.platform.audit import AuditEvent
from archipel.platform.runtime import Runtime
from archipel.tiles import api as tiles_api
from archipel.tiles import signed
from archipel.tiles.cache import GrantCache, RecentPrincipals
from archipel.tiles.export import ExportRefused, export_slide
from archipel.wsi import tile_source
from archipel.wsi.intake import SlideMetadata
from archipel.wsi.slides import hash_file, register_slide
from archipel.wsi.synthetic import write_svs
from archipel.wsi.tasks import convert_job
from tests.access_support import ensure_master
from tests.auth_helpers import Account, bearer, login, make_account
from tests.support import ArchipelServer, archipel_cmd, free_port, port_answers, wait_until

sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)

SITE, OTHER = "SITE-A", "SITE-B"
KEY = "test-signing-key-0123456789"


@dataclass
class Slide:
    runtime: Runtime
    slide_id: str
    level: int  # the full-resolution Deep Zoom level

    def tile(self, col: int = 1, row: int = 1) -> str:
        return f"/tiles/{self.slide_id}_files/{self.level}/{col}_{row}.jpeg"


def _token(http: TestClient, account: Account) -> dict[str, str]:
    r = login(http, account, datetime.now(UTC))
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


@pytest.fixture
def slide(runtime: Runtime, tmp_path: Path) -> Iterator[Slide]:
    """A converted 1100 x 800 slide of SITE-A with 256 px JPEG tiles (its level-0 tiles pass through)."""
    ensure_master(runtime.db, SITE, "FAST0001", "FASTPATH", "19700101")
    path = write_svs(tmp_path / "fast.svs", 1100, 800, tile=256, seed=4)
    spool = tmp_path / "fast.spool"
    spool.write_bytes(path.read_bytes())
    sha, size = hash_file(spool)
    meta = SlideMetadata(patient_id="FAST0001", issuer=SITE, accession="FACC1", stain="HE")
    reg = register_slide(
        runtime,
        spool,
        sha,
        size,
        meta,
        filename="fast.svs",
        origin="upload",
        created_by="p",
        role="pathologist",
    )
    convert_job(reg.job_id)
    yield Slide(runtime, reg.slide_id, (1100 - 1).bit_length())
    tiles_api.service(runtime).views.clear()


def _opens(rt: Runtime, slide_id: str) -> int:
    with rt.db.sessions() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.event_type == "110103", AuditEvent.object.contains(slide_id))
            )
            or 0
        )


@sqlite_only
def test_a_cached_tile_is_answered_from_memory_with_the_route_s_bytes_and_only_to_a_live_granted_session(
    runtime: Runtime, http: TestClient, slide: Slide, monkeypatch: pytest.MonkeyPatch
) -> None:
    patho = _token(http, make_account(runtime, "patho", "pathologist", SITE))
    first = http.get(slide.tile(), headers=patho)
    assert first.status_code == 200 and first.headers["x-tile-source"] == "stored"

    # From now on the route itself would fail: what still answers is the in-memory path, with the same tile.
    def route_not_reached(*args: object) -> None:
        raise AssertionError("the cached tile went through the route")

    monkeypatch.setattr(tiles_api, "_tile", route_not_reached)
    again = http.get(slide.tile(), headers=patho)
    assert again.status_code == 200 and again.content == first.content
    assert again.headers["etag"] == first.headers["etag"] and again.headers["x-tile-cache"] == "hit"
    assert (
        http.get(slide.tile(), headers={**patho, "If-None-Match": first.headers["etag"]}).status_code == 304
    )
    monkeypatch.undo()

    # Another site's pathologist is refused although the tile is cached; so is a forged token.
    other = _token(http, make_account(runtime, "patho-b", "pathologist", OTHER))
    assert http.get(slide.tile(), headers=other).status_code == 403
    assert http.get(slide.tile(), headers=bearer("not-a-token")).status_code == 401

    # A logout reaches the tile route once the credential's short memory ends (made immediate here).
    tiles_api.service(runtime).principals.ttl = 0
    assert http.post("/api/auth/logout", headers=patho).status_code in (200, 204)
    assert http.get(slide.tile(), headers=patho).status_code == 401


@sqlite_only
def test_the_raw_answer_ahead_of_the_framework_has_the_route_s_status_headers_and_body(
    runtime: Runtime, http: TestClient, slide: Slide
) -> None:
    patho = _token(http, make_account(runtime, "patho", "pathologist", SITE))
    by_route = http.get(slide.tile(2, 1), headers=patho)  # a first request: the route's full path
    assert by_route.status_code == 200 and by_route.headers["x-tile-cache"] == "miss"
    ahead = http.get(slide.tile(2, 1), headers=patho)  # the credential is remembered now: the raw answer
    assert ahead.status_code == 200 and ahead.content == by_route.content
    assert ahead.headers["x-tile-cache"] == "hit"
    same = ("etag", "cache-control", "content-type", "content-length", "x-tile-source")
    assert {k: ahead.headers[k] for k in same} == {k: by_route.headers[k] for k in same}
    assert ahead.headers["content-type"] == "image/jpeg" and "immutable" in ahead.headers["cache-control"]
    assert int(ahead.headers["content-length"]) == len(ahead.content)

    # A tile read from its stored bytes ahead of the framework (not cached yet) is the route's too.
    fresh = http.get(slide.tile(3, 2), headers=patho)
    assert fresh.headers["x-tile-cache"] == "miss" and fresh.headers["x-tile-source"] == "stored"
    assert fresh.content.startswith(b"\xff\xd8")

    # 304 to a matching If-None-Match (also in a list, or weak), with the ETag and Cache-Control and no body.
    for sent in (ahead.headers["etag"], f'"other", W/{ahead.headers["etag"]}', "*"):
        r = http.get(slide.tile(2, 1), headers={**patho, "If-None-Match": sent})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == ahead.headers["etag"]
        assert r.headers["cache-control"] == ahead.headers["cache-control"]
    assert http.get(slide.tile(2, 1), headers={**patho, "If-None-Match": '"other"'}).status_code == 200


@sqlite_only
def test_a_credential_in_use_is_checked_again_in_the_background_so_a_logout_ends_its_tiles_early(
    runtime: Runtime, http: TestClient, slide: Slide
) -> None:
    patho = _token(http, make_account(runtime, "patho", "pathologist", SITE))
    assert http.get(slide.tile(), headers=patho).status_code == 200
    svc = tiles_api.service(runtime)
    key = ("bearer", patho["Authorization"].removeprefix("Bearer "))
    assert svc.principals.get(key) is not None
    # A long memory, past its half: the next tile starts a check of the credential.
    svc.principals.ttl = 3600.0
    svc.principals._clock = lambda: time.monotonic() + 1800.5
    assert http.post("/api/auth/logout", headers=patho).status_code in (200, 204)
    # This tile is still answered from memory (no tile waits for the check) ...
    assert http.get(slide.tile(), headers=patho).status_code == 200
    # ... and the check, in the background, finds the session ended: the credential is forgotten long before
    # its memory would have ended, and the next tile goes through the route, which refuses it.
    wait_until(lambda: svc.principals.get(key) is None, 30, "the credential to be checked again")
    assert http.get(slide.tile(), headers=patho).status_code == 401


def test_a_fresh_value_is_due_for_one_refresh_after_half_its_time_and_ends_at_its_time() -> None:
    now = [0.0]
    grants = GrantCache(ttl=10.0, clock=lambda: now[0])
    grants.put("k", True)
    assert grants.decision("k") == ((True, ""), False)
    now[0] = 5.0
    assert grants.decision("k") == ((True, ""), True)  # one caller refreshes ...
    assert grants.decision("k") == ((True, ""), False)  # ... the others go on with the value
    now[0] = 9.9
    assert grants.decision("k") == ((True, ""), False)
    grants.put("k", True)  # the refresh's result: fresh again
    now[0] = 14.0
    assert grants.decision("k") == ((True, ""), False)
    now[0] = 19.9
    assert grants.decision("k") == ((True, ""), True)
    now[0] = 20.0  # the refresh never came back: the decision ends in its time
    assert grants.decision("k") == (None, False) and grants.get("k") is None
    grants.put("k", False, "not in the care team")
    assert grants.get("k") == (False, "not in the care team")
    grants.drop("k")
    assert grants.decision("k") == (None, False)


def test_the_http_process_freezes_its_start_up_heap_out_of_the_garbage_collector(runtime: Runtime) -> None:
    gc.unfreeze()
    try:
        app = http_app()
        assert gc.get_freeze_count() > 10_000
        assert app.routes  # the whole application, built before the freeze
    finally:
        gc.unfreeze()


@sqlite_only
def test_signed_urls_are_refused_without_a_key_or_an_export_and_are_an_audited_open(
    runtime: Runtime, http: TestClient, slide: Slide
) -> None:
    patho = _token(http, make_account(runtime, "patho", "pathologist", SITE))
    url = f"/tiles/{slide.slide_id}/signed-url"
    r = http.get(url, headers=patho)
    assert r.status_code == 501 and "ARCHIPEL_TILES_SIGNING_KEY" in r.json()["detail"]
    runtime.settings.tiles_signing_key = KEY
    before = _opens(runtime, slide.slide_id)
    r = http.get(url, headers=patho)
    assert r.status_code == 409 and "no static export" in r.json()["detail"]
    assert _opens(runtime, slide.slide_id) == before + 1
    other = _token(http, make_account(runtime, "patho-b", "pathologist", OTHER))
    assert http.get(url, headers=other).status_code == 403
    assert http.get("/tiles/nosuchslide/signed-url", headers=patho).status_code == 404


def _start_nginx(folder: Path, locations: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    (folder / "logs").mkdir(parents=True)
    conf = folder / "nginx.conf"
    # Started by root, nginx's workers would run as nobody, who cannot enter pytest's private folders.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    conf.write_text(
        user + f"daemon off; worker_processes 1; pid {folder}/nginx.pid; error_log {folder}/logs/error.log;\n"
        "events { worker_connections 64; }\n"
        f"http {{ access_log off; client_body_temp_path {folder}/body; proxy_temp_path {folder}/proxy;\n"
        f"fastcgi_temp_path {folder}/fcgi; uwsgi_temp_path {folder}/uwsgi; scgi_temp_path {folder}/scgi;\n"
        f"server {{ listen 127.0.0.1:{port};\n{locations}\n}} }}\n"
    )
    proc = subprocess.Popen(["nginx", "-p", str(folder), "-c", str(conf)], stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "nginx exited"
        try:
            httpx.get(url + "/", timeout=1)
            return True
        except httpx.HTTPError:
            return False

    wait_until(answers, 20, "nginx to answer")
    return proc, url


@sqlite_only
@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx (Debian) is installed by make bench only")
def test_nginx_serves_the_exported_tiles_to_a_signed_url_only_and_refuses_forged_or_expired_ones(
    runtime: Runtime, http: TestClient, slide: Slide, tmp_path: Path
) -> None:
    runtime.settings.tiles_signing_key = KEY
    env = {"ARCHIPEL_TILES_SIGNING_KEY": KEY, "ARCHIPEL_DATABASE_URL": runtime.settings.database_url}
    data = runtime.settings.data_dir
    done = archipel_cmd("tiles", "export", slide.slide_id, data=data, env=env)
    assert "stored tiles unchanged" in done.stdout
    with runtime.db.sessions() as s:
        exports = s.scalars(select(AuditEvent).where(AuditEvent.event_type == "110106")).all()
    assert [e.object for e in exports] == [f"slide:{slide.slide_id}"] and exports[
        0
    ].patient == f"{SITE}/FAST0001"
    # What ``archipel tiles nginx-config`` prints (it only adds the settings to this call).
    locations = signed.nginx_location("/static-tiles", KEY, data / "tile-exports")

    patho = _token(http, make_account(runtime, "patho", "pathologist", SITE))
    urls = http.get(f"/tiles/{slide.slide_id}/signed-url", headers=patho).json()
    assert urls["expires"] > time.time() and urls["dzi"].startswith("/static-tiles/")
    proc, nginx = _start_nginx(tmp_path / "nginx", locations)
    try:
        for col, row in ((0, 0), (1, 1), (4, 3)):  # interior, and an edge tile (cropped, re-encoded)
            ours = http.get(slide.tile(col, row), headers=patho)
            theirs = httpx.get(f"{nginx}{urls['tiles']}{slide.level}/{col}_{row}.jpeg")
            assert theirs.status_code == 200 and theirs.content == ours.content
            assert (
                theirs.headers["content-type"] == "image/jpeg"
                and "private" in theirs.headers["cache-control"]
            )
        assert (
            httpx.get(nginx + urls["dzi"]).text
            == http.get(f"/tiles/{slide.slide_id}.dzi", headers=patho).text
        )

        tile = f"{slide.level}/1_1.jpeg"
        forged = urls["tiles"].replace(urls["tiles"].split("/")[2], "A" * 22)
        assert httpx.get(f"{nginx}{forged}{tile}").status_code == 403
        assert (
            httpx.get(f"{nginx}/static-tiles/x/{urls['expires']}/{slide.slide_id}_files/{tile}").status_code
            == 403
        )
        # The same token on another slide's path is refused: it signs the slide id.
        other = urls["tiles"].replace(slide.slide_id, "0" * 32)
        assert httpx.get(f"{nginx}{other}{tile}").status_code == 403
        expired = signed.sign("/static-tiles", KEY, slide.slide_id, int(time.time()) - 5)
        assert httpx.get(f"{nginx}{expired.tiles}{tile}").status_code == 410
        assert httpx.get(f"{nginx}/{slide.slide_id}_files/{tile}").status_code == 404  # nothing unsigned
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    # An export of another pyramid than the one serving the slide now is not signed.
    (data / "tile-exports" / f"{slide.slide_id}.version").write_text("d-an-older-conversion\n")
    stale = http.get(f"/tiles/{slide.slide_id}/signed-url", headers=patho)
    assert stale.status_code == 409 and "d-an-older-conversion" in stale.json()["detail"]


@sqlite_only
def test_a_slide_still_converting_is_not_exported(runtime: Runtime, tmp_path: Path) -> None:
    ensure_master(runtime.db, SITE, "FAST0002", "FASTPATH", "19700101")
    path = write_svs(tmp_path / "busy.svs", 600, 500, tile=256, seed=5)
    sha, size = hash_file(path)
    meta = SlideMetadata(patient_id="FAST0002", issuer=SITE, accession="FACC2", stain="HE")
    reg = register_slide(
        runtime,
        path,
        sha,
        size,
        meta,
        filename="busy.svs",
        origin="upload",
        created_by="p",
        role="pathologist",
    )
    tile_source.install()
    with pytest.raises(ExportRefused, match="still being converted"):
        export_slide(runtime, reg.slide_id)
    with pytest.raises(ExportRefused, match="no slide"):
        export_slide(runtime, "0" * 32)
    assert not (runtime.settings.data_dir / "tile-exports" / f"{reg.slide_id}.dzi").exists()


def test_the_nginx_block_refuses_a_key_or_prefix_that_would_break_its_syntax(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="signing key"):
        signed.nginx_location("/static-tiles", 'k"; return 200; #', tmp_path)
    with pytest.raises(ValueError, match="prefix"):
        signed.nginx_location("/static tiles", KEY, tmp_path)
    with pytest.raises(ValueError, match="cannot be signed"):
        signed.sign("/static-tiles", KEY, "../etc", 1)
    assert os.fspath(tmp_path) in signed.nginx_location("/static-tiles", KEY, tmp_path)


def _workers(pid: int) -> list[int]:
    """The PIDs of uvicorn's HTTP worker processes (spawned children) under the serve process ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
            except OSError:
                continue
    return found


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _fetch_all(urls: list[str], headers: dict[str, str]) -> list[tuple[int, bytes]]:
    """GET each URL on a connection of its own (as many browsers do), 16 at a time."""

    def one(url: str) -> tuple[int, bytes]:
        with httpx.Client(timeout=30) as client:
            r = client.get(url, headers=headers)
            return r.status_code, r.content

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(one, urls))


@pytest.mark.e2e
def test_two_http_workers_serve_tiles_on_one_port_and_both_end_them_soon_after_a_logout(
    tmp_path: Path,
) -> None:
    """Each HTTP worker process keeps its own memory of credentials and tiles (docs/tiles.md): tiles come from
    both over one port, and once the session is logged out neither answers one more than the credential memory's
    time later."""
    srv = ArchipelServer(tmp_path / "data", env={"ARCHIPEL_HTTP_WORKERS": "2"})
    srv.data.mkdir(parents=True)
    srv.cli("identity", "issuers", "add", SITE)
    srv.add_user("pathologist", "pathologist", SITE)
    srv.start()
    try:
        assert srv.proc is not None
        assert httpx.get(srv.url + "/healthz").status_code == 200
        wait_until(lambda: len(_workers(srv.proc.pid)) == 2, 60, "two HTTP workers")  # type: ignore[union-attr]
        workers = _workers(srv.proc.pid)
        assert httpx.get(srv.url + "/tiles/nosuchslide.dzi").status_code == 401
        meta = {"patient_id": "TWO0001", "issuer": SITE, "accession": "TWOACC1", "stain": "HE"}
        slide_id = srv.upload_slide(write_svs(tmp_path / "two.svs", 1100, 800, tile=256, seed=5), meta)
        srv.wait_converted(slide_id)
        level = (1100 - 1).bit_length()
        urls = [
            f"{srv.url}/tiles/{slide_id}_files/{level}/{col}_{row}.jpeg"
            for col in range(5)
            for row in range(4)
        ]
        signed_in = {"Authorization": f"Bearer {srv.token('pathologist', fresh=True)}"}
        before = {pid: _cpu_ticks(pid) for pid in workers}

        def both_served() -> bool:
            answers = _fetch_all(urls * 4, signed_in)
            assert all(status == 200 and body[:2] == b"\xff\xd8" for status, body in answers)
            # 30 ms of CPU or more in each: an idle worker spends next to nothing in the seconds this takes.
            return all(_cpu_ticks(pid) - before[pid] >= 3 for pid in workers)

        wait_until(both_served, 60, "tiles from both HTTP workers")
        # Both workers answer each tile with the same bytes (from memory or from the pyramid).
        answers = _fetch_all(urls * 4, signed_in)
        assert all(len({body for _, body in answers[k :: len(urls)]}) == 1 for k in range(len(urls)))
        assert httpx.post(srv.url + "/api/auth/logout", headers=signed_in).status_code in (200, 204)
        time.sleep(RecentPrincipals().ttl + 0.5)
        after = _fetch_all(urls * 4, signed_in)
        assert {status for status, _ in after} == {401}
        assert all(_cpu_ticks(pid) > 0 for pid in _workers(srv.proc.pid))  # neither worker died meanwhile
    finally:
        srv.stop()


@pytest.mark.e2e
def test_archipel_api_with_two_workers_answers_from_both_processes_on_one_port(tmp_path: Path) -> None:
    """``archipel api --workers 2`` (the deployments' API, decision 0050's transport): both processes answer."""
    data = tmp_path / "data"
    data.mkdir()
    port = free_port()
    log = (tmp_path / "api.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archipel.cli",
            "api",
            "--workers",
            "2",
            "--http-port",
            str(port),
            "--data",
            str(data),
        ],
        env={**os.environ, "ARCHIPEL_DATA": str(data)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: len(_workers(proc.pid)) == 2, 90, "two HTTP workers")
        workers = _workers(proc.pid)
        wait_until(lambda: port_answers("127.0.0.1", port), 60, "the API")
        before = {pid: _cpu_ticks(pid) for pid in workers}

        def both_answered() -> bool:
            # Each request on a connection of its own; unauthenticated tiles are refused by the fast path.
            answers = [httpx.get(url + "/healthz").status_code for _ in range(20)]
            answers += [httpx.get(url + "/tiles/nosuchslide.dzi").status_code for _ in range(20)]
            assert answers == [200] * 20 + [401] * 20
            return all(_cpu_ticks(pid) - before[pid] >= 2 for pid in workers)

        wait_until(both_answered, 90, "answers from both HTTP workers")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
